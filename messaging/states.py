"""The states of a blast and of each ledger row, and how ledger states are counted.

Ledger row state machine (the full picture is in ``docs/architecture.md``)::

    pending ──claim──▶ sending ──provider accepted──▶ sent ──callback──▶ delivered
       │                  │                             └──callback──▶ failed
       │                  ├──permanent error / render error──▶ failed
       │                  ├──suppressed at send time──▶ suppressed
       │                  ├──transient error, retries spent──▶ pending (re-queued)
       │                  └──quiet hours──▶ deferred ──released──▶ pending
       ├──blast canceled──▶ canceled
       └──send_by passed──▶ expired
    duplicate, suppressed: decided at expansion, terminal from the start.
"""

from __future__ import annotations

from typing import Final

# --- ledger row states -------------------------------------------------------------------
PENDING: Final = "pending"
#: Claimed by a sender, provider call in flight. Counted as pending until it lands.
SENDING: Final = "sending"
SENT: Final = "sent"
#: A refinement of sent: the carrier or mailbox confirmed delivery.
DELIVERED: Final = "delivered"
FAILED: Final = "failed"
SUPPRESSED: Final = "suppressed"
DUPLICATE: Final = "duplicate"
DEFERRED: Final = "deferred"
EXPIRED: Final = "expired"
CANCELED: Final = "canceled"

#: States a row never leaves (except sent → delivered/failed, which only refines the outcome).
TERMINAL: Final = frozenset({SENT, DELIVERED, FAILED, SUPPRESSED, DUPLICATE, EXPIRED, CANCELED})
#: States that still owe work.
OPEN: Final = frozenset({PENDING, SENDING, DEFERRED})

#: The keys of every channel's counts in ``rapid blast show --json`` (contract §6).
COUNT_KEYS: Final = (
    "targeted",
    "sent",
    "delivered",
    "failed",
    "suppressed",
    "duplicate",
    "deferred",
    "expired",
    "canceled",
    "pending",
)

# --- blast statuses ----------------------------------------------------------------------
EXPANDING: Final = "expanding"
SENDING_BLAST: Final = "sending"
PAUSED: Final = "paused"
CANCELED_BLAST: Final = "canceled"
COMPLETED: Final = "completed"
EXPIRED_BLAST: Final = "expired"
BLAST_STATUSES: Final = (EXPANDING, SENDING_BLAST, PAUSED, CANCELED_BLAST, COMPLETED, EXPIRED_BLAST)
#: A blast in one of these has ended: nothing more will be sent for it.
ENDED_STATUSES: Final = frozenset({CANCELED_BLAST, COMPLETED, EXPIRED_BLAST})


def counts_from_states(by_state: dict[str, int]) -> dict[str, int]:
    """The contract's counts of one channel from row counts per ledger state."""
    counts = dict.fromkeys(COUNT_KEYS, 0)
    for state, n in by_state.items():
        if state in (SENT, DELIVERED):
            counts["sent"] += n
            if state == DELIVERED:
                counts["delivered"] += n
        elif state in (PENDING, SENDING):
            counts["pending"] += n
        elif state in counts:
            counts[state] += n
        else:  # an unknown state must not vanish from the totals
            counts["pending"] += n
        counts["targeted"] += n
    return counts
