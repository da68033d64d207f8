"""The ``N/24h`` form of ``SMS_FREQUENCY_CAP`` and ``EMAIL_FREQUENCY_CAP`` (contract §2).

Here, not in ``messaging/compliance/frequency_caps.py``, because the settings parse it and
``config`` imports nothing of ours.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

#: ``3/24h``, ``5/7d``: a count, a slash, a window in hours or days.
_CAP_RE: Final = re.compile(r"^\s*(\d{1,4})\s*/\s*(\d{1,4})\s*([hd])\s*$", re.IGNORECASE)
#: Windows allowed, in seconds: from an hour to a month.
MIN_WINDOW_S: Final = 3_600
MAX_WINDOW_S: Final = 31 * 86_400


@dataclass(frozen=True, slots=True)
class FrequencyCap:
    """At most ``limit`` blasts per supporter and channel within ``window_s`` seconds."""

    limit: int
    window_s: int

    def __str__(self) -> str:
        if self.window_s % 86_400 == 0 and self.window_s >= 2 * 86_400:
            return f"{self.limit}/{self.window_s // 86_400}d"
        return f"{self.limit}/{self.window_s // 3_600}h"


def parse_frequency_cap(raw: str) -> FrequencyCap | None:
    """``"3/24h"`` → ``FrequencyCap(3, 86400)``; ``"off"`` → None; ValueError otherwise."""
    if raw.strip().lower() == "off":
        return None
    match = _CAP_RE.match(raw)
    if match is None:
        raise ValueError("must be N/<hours>h or N/<days>d (e.g. 3/24h), or off")
    limit, amount, unit = int(match[1]), int(match[2]), match[3].lower()
    window_s = amount * (3_600 if unit == "h" else 86_400)
    if limit < 1:
        raise ValueError("the count must be at least 1 (use off for no cap)")
    if not MIN_WINDOW_S <= window_s <= MAX_WINDOW_S:
        raise ValueError("the window must be from 1h to 31d")
    return FrequencyCap(limit, window_s)
