"""What the fuzz tests share: the case budget, hostile-text strategies, counters, an ASGI client.

The budget is a hypothesis profile chosen by ``FUZZ_PROFILE``: ``test`` (the default, for
``make test``: a few hundred cases per entry point) or ``fuzz`` (``make fuzz``: 10,000 per
entry point). Each fuzz test prints one line of counts, which ``make fuzz`` shows.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import structlog
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

#: Cases per entry point in each profile.
BUDGETS = {"test": 200, "fuzz": 10_000}

for _name, _examples in BUDGETS.items():
    settings.register_profile(
        f"rapid-{_name}",
        max_examples=_examples,
        deadline=None,
        # Every case goes through real services: slow by hypothesis' standards, on purpose.
        suppress_health_check=list(HealthCheck),
        database=None,
        derandomize=False,
        print_blob=True,
    )

PROFILE = os.environ.get("FUZZ_PROFILE", "test")
if PROFILE not in BUDGETS:
    raise ValueError(f"FUZZ_PROFILE must be one of {', '.join(BUDGETS)}")
#: The profile the fuzz tests run under: ``@settings(parent=FUZZ)``.
FUZZ = settings.get_profile(f"rapid-{PROFILE}")
#: Cases each fuzz test must at least have run.
BUDGET = BUDGETS[PROFILE]


# --- strategies -------------------------------------------------------------------------------

#: Text built to hurt: control characters, line breaks, bidi overrides, formula starts,
#: template syntax, surrogate-free astral characters, long runs.
HOSTILE_PIECES = [
    "\r\n",
    "\x00",
    "\u202e",
    "\u2028",
    '=HYPERLINK("https://evil.example")',
    "@SUM(1)",
    "+1",
    "-",
    "{{ 'x' * 99999999 }}",
    "{% for i in range(9999) %}",
    "{{",
    "}}",
    "{%",
    "%}",
    '"',
    "'",
    "\\",
    "<script>",
    "😀",
    "a@b.org",
    "+14155550100",
    "9" * 30,
    "STOP",
    ";",
    ",",
]
hostile_text = st.one_of(
    st.text(max_size=40),
    st.lists(st.one_of(st.sampled_from(HOSTILE_PIECES), st.text(max_size=8)), max_size=8).map(
        "".join
    ),
)

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    hostile_text,
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(hostile_text, inner, max_size=4)
    ),
    max_leaves=12,
)


def deeply_nested(depth: int) -> str:
    """``[[[…]]]`` ``depth`` deep: past the recursion limit of json and pydantic."""
    return "[" * depth + "]" * depth


# --- counting --------------------------------------------------------------------------------


@dataclass
class Tally:
    """Outcomes of one fuzz test, printed as one line at the end."""

    name: str
    outcomes: Counter[str] = field(default_factory=Counter)
    #: Things counted inside cases (rejected fields of an imported file), not cases.
    notes: Counter[str] = field(default_factory=Counter)
    #: The longest case, in seconds, when the test measures it.
    slowest_s: float = 0.0

    def add(self, outcome: str) -> None:
        """Count one case."""
        self.outcomes[outcome] += 1

    def note(self, what: str) -> None:
        """Count something inside a case."""
        self.notes[what] += 1

    @property
    def cases(self) -> int:
        """Cases run."""
        return sum(self.outcomes.values())

    def report(self, http: bool = False) -> str:
        """``fuzz <name>: N cases, 0 crashes (…)``; printed for ``make fuzz``."""
        counts = sorted(self.outcomes.items()) + sorted(self.notes.items())
        parts = ", ".join(f"{k} {v}" for k, v in counts)
        fives = ", 0 5xx" if http else ""
        slowest = f", slowest {self.slowest_s * 1000:.0f} ms" if self.slowest_s else ""
        line = f"fuzz {self.name}: {self.cases} cases, 0 crashes{fives}{slowest} ({parts})"
        print(f"\n{line}")
        return line


@contextmanager
def quiet_logs() -> Iterator[None]:
    """Errors only while fuzzing: thousands of cases log a line each."""
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))
    try:
        yield
    finally:
        structlog.reset_defaults()


# --- an in-process HTTP client -----------------------------------------------------------------


class AsgiClient:
    """A synchronous client of an ASGI app in this process; the URL's port is the port the
    app sees a request arrive on (``scope["server"]``)."""

    def __init__(
        self, app: Any, base_url: str = "http://testserver", client_host: str = "127.0.0.1"
    ) -> None:
        self._loop = asyncio.new_event_loop()
        transport = httpx.ASGITransport(app=app, client=(client_host, 123))
        self._client = httpx.AsyncClient(transport=transport, base_url=base_url)

    def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        """One request, run to completion."""
        return self._loop.run_until_complete(self._client.request(method, url, **kwargs))

    def get(self, url: str, **kwargs: Any) -> httpx.Response:
        """GET ``url``."""
        return self.request("GET", url, **kwargs)

    def post(self, url: str, **kwargs: Any) -> httpx.Response:
        """POST to ``url``."""
        return self.request("POST", url, **kwargs)

    def close(self) -> None:
        """Close the client and its loop."""
        self._loop.run_until_complete(self._client.aclose())
        self._loop.close()
