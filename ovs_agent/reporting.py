"""When the agent sends its attachment list to the controller (pure: no I/O, no clock).

The controller binds a host's containers from that list, and nothing else tells it
about them. So the agent must not trust that what it sent once is still known: a
controller restarted on a fresh (or restored, or different) store has forgotten it. The
controller says who it is on every answer (`instance`, new per process, and the store
`epoch`, new per store); the agent re-sends the whole list when either changes, after
any failed report, and every `FULL_REPORT_EVERY` seconds as a safety net.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

FULL_REPORT_EVERY = 60.0        # seconds; one small PUT per host per minute

Identity = tuple[str | None, str | None]    # (controller instance, store epoch)


@dataclass
class ReportState:
    """What the controller acknowledged last, and when (monotonic seconds)."""
    sent: list[dict[str, Any]] | None = None    # None: nothing acknowledged (or it failed)
    identity: Identity | None = None
    at: float = 0.0
    failures: int = 0                           # reports failed in a row

    def acknowledged(self, sent: list[dict[str, Any]], identity: Identity, now: float) -> None:
        self.sent, self.identity, self.at, self.failures = sent, identity, now, 0

    def failed(self) -> None:
        """Forget what was sent: the next chance re-sends the whole list."""
        self.sent, self.failures = None, self.failures + 1


def reason_to_send(state: ReportState, current: list[dict[str, Any]],
                   identity: Identity | None, now: float,
                   full_every: float = FULL_REPORT_EVERY) -> str | None:
    """Why the whole list must go to the controller now, or None to send nothing.

    `identity` is what the controller says it is now (None: not known, e.g. it did not
    answer; then only list changes and failures count, the report itself will tell).
    """
    if state.sent is None:
        return "first report" if state.failures == 0 else "retrying a failed report"
    if identity is not None and identity != state.identity:
        before = state.identity or (None, None)
        return ("the controller restarted" if identity[1] == before[1]
                else "the controller's store changed (new epoch)")
    if current != state.sent:
        return "attachments changed"
    if now - state.at >= full_every:
        return "periodic full report"
    return None
