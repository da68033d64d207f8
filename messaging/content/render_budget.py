"""The per-render CPU budget of a template (see :mod:`messaging.content.templates`).

Every loop iteration, call and operator of a sandboxed render calls :func:`tick`, which
raises :class:`TemplateLimitError` once the render has used :data:`RENDER_TIMEOUT_S` of its
thread's CPU time. Garbage collections that run inside a render are not the template's
CPU and do not count.
"""

from __future__ import annotations

import gc
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Final

from jinja2.exceptions import SecurityError

#: Most CPU one recipient's render may use, in seconds of the rendering thread's own CPU time
#: (``time.thread_time``, less any garbage collection that ran in it), not wall time: a
#: loaded host or a GC pause must never turn a real alert away. A real template renders in
#: microseconds; a hostile one costs a batch of 1,000 recipients under a minute of CPU.
RENDER_TIMEOUT_S: Final = 0.05


class TemplateLimitError(SecurityError):
    """A template went over a size or time limit (a SecurityError, as the sandbox's own)."""


_budget = threading.local()
_gc_hook_lock = threading.Lock()
_gc_hooked = False


def _on_gc(phase: str, _info: dict[str, Any]) -> None:
    """A collection runs in whichever thread allocates: one that lands inside a render is
    not the template's CPU, so the render's deadline moves by what it took (a full
    collection of a large heap took over 50 ms and failed a one-line template)."""
    if getattr(_budget, "deadline", None) is None:
        return
    if phase == "start":
        _budget.gc_started = time.thread_time()
    elif (started := getattr(_budget, "gc_started", None)) is not None:
        _budget.deadline += time.thread_time() - started
        _budget.gc_started = None


def _hook_gc() -> None:
    """Install :func:`_on_gc` once, on the first bounded render (not at import)."""
    global _gc_hooked
    with _gc_hook_lock:
        if not _gc_hooked:
            gc.callbacks.append(_on_gc)
            _gc_hooked = True


@contextmanager
def bounded() -> Iterator[None]:
    """Run a render on this thread under the budget."""
    if not _gc_hooked:
        _hook_gc()
    _budget.deadline = time.thread_time() + RENDER_TIMEOUT_S
    try:
        yield
    finally:
        _budget.deadline = None


def tick() -> None:
    """Raise :class:`TemplateLimitError` if this thread's render is over its budget."""
    deadline = getattr(_budget, "deadline", None)
    if deadline is not None and time.thread_time() > deadline:
        raise TemplateLimitError(f"render took longer than {RENDER_TIMEOUT_S * 1000:.0f} ms")
