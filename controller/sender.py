"""The per-switch senders: what the sync engine (`controller.sync`) returns goes out here.

Each connected switch has its own sender thread with an unbounded queue: os-ken's
`Datapath.send_msg` blocks on a 16-message queue while the switch reads slowly, so
one switch's large plan would otherwise hold the event loop (and every other switch).
The sender writes runs of mods in ~64 KiB writes (`ofmsg.send_batched`), not one
queue slot, TLS record and syscall per message; requests go one by one with their xids.
"""
from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from typing import Any

from controller import ofmsg
from cluster.hostsfile import dpid_str

LOG = logging.getLogger("weft.controller")


class Sender:
    """One switch's sender thread.  ``failed(dpid, error)``: a message could not be
    encoded or sent (re-read the switch); ``sent(dpid)``: a batch of several messages
    is out and nothing else is queued (the switch's answers are due from now on)."""

    def __init__(self, dpid: int, dp: Any, failed: Callable[[int, str], object],
                 sent: Callable[[int], object]) -> None:
        self.dpid, self.dp = dpid, dp
        self._failed_cb, self._sent_cb = failed, sent
        self.queue: queue.SimpleQueue = queue.SimpleQueue()
        # a daemon thread (os-ken's native hub.spawn is not): never holds up an exit
        self.thread = threading.Thread(target=self._run, name=f"weft-send-{dpid:x}",
                                       daemon=True)
        self.thread.start()

    def send(self, msgs: list) -> None:
        if msgs:
            self.queue.put(msgs)

    def close(self) -> None:
        self.queue.put(None)

    def _failed(self, msg: Any, exc: Exception) -> None:
        LOG.error("switch %s: cannot send %s: %s: %s", dpid_str(self.dpid),
                  str(msg)[:300], type(exc).__name__, exc)
        self._failed_cb(self.dpid, str(exc))

    def _run(self) -> None:
        while True:
            batch = self.queue.get()
            if batch is None:
                return
            try:
                ofmsg.send_batched(self.dp, batch, self._failed)
            except Exception as exc:  # noqa: BLE001  (log, re-read; never end the thread)
                self._failed(None, exc)
            if len(batch) > 1 and self.queue.empty():
                self._sent_cb(self.dpid)


class Senders:
    """The senders of the connected switches, by dpid (used by the OpenFlow thread)."""

    def __init__(self, failed: Callable[[int, str], object], sent: Callable[[int], object]) -> None:
        self._failed, self._sent = failed, sent
        self._by_dpid: dict[int, Sender] = {}

    def open(self, dpid: int, dp: Any) -> None:
        self._by_dpid[dpid] = Sender(dpid, dp, self._failed, self._sent)

    def close(self, dpid: int) -> None:
        sender = self._by_dpid.pop(dpid, None)
        if sender is not None:
            sender.close()

    def send_to(self, dpid: int, msgs: list) -> None:
        sender = self._by_dpid.get(dpid)
        if sender is not None:
            sender.send(msgs)

    def send(self, out: dict[int, list]) -> None:
        """What the sync engine returned: messages per switch, each list in order."""
        for dpid, msgs in out.items():
            self.send_to(dpid, msgs)
