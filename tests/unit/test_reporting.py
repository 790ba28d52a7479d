"""When the agent re-sends its attachments: list changes, a new controller or store, failures."""
from __future__ import annotations

from ovs_agent.reporting import FULL_REPORT_EVERY, ReportState, reason_to_send

A = [{"port": "wc1", "tenant": "red", "mac": "02:00:00:00:00:01", "container": "c1"}]
ME = ("inst-1", "epoch-1")


def acked(at: float = 0.0) -> ReportState:
    s = ReportState()
    s.acknowledged(A, ME, at)
    return s


def test_nothing_to_send_when_the_same_controller_and_store_have_the_same_list():
    assert reason_to_send(acked(), A, ME, 1.0) is None
    assert reason_to_send(acked(), A, None, 1.0) is None      # controller silent: no news


def test_a_controller_restarted_on_a_fresh_store_gets_the_whole_list_again():
    # the bug of issue 15: the agent cached what it sent and never sent it again
    assert reason_to_send(acked(), A, ("inst-2", "epoch-2"), 1.0) == \
        "the controller's store changed (new epoch)"
    assert reason_to_send(acked(), A, ("inst-2", "epoch-1"), 1.0) == "the controller restarted"
    assert reason_to_send(acked(), A, ("inst-1", "epoch-3"), 1.0) == \
        "the controller's store changed (new epoch)"   # e.g. `weftctl import` of another store


def test_changes_failures_and_the_periodic_safety_net():
    assert reason_to_send(ReportState(), [], ME, 0.0) == "first report"
    assert reason_to_send(acked(), [], ME, 1.0) == "attachments changed"
    s = acked()
    s.failed()
    assert s.failures == 1 and reason_to_send(s, A, ME, 1.0) == "retrying a failed report"
    assert reason_to_send(acked(), A, ME, FULL_REPORT_EVERY - 1) is None
    assert reason_to_send(acked(), A, ME, FULL_REPORT_EVERY) == "periodic full report"
    s.acknowledged(A, ME, 5.0)
    assert s.failures == 0 and reason_to_send(s, A, ME, 6.0) is None
