"""The election's pure decision logic: leases, campaigns, expiry, split brain."""
from __future__ import annotations

import pytest

from controller.election import MASTER, SLAVE, ElectionCore, Role, endpoints

# run in the main session, not beside the lab tests (tests/conftest.py): its timers bound time
pytestmark = pytest.mark.foreground


def test_lease_then_campaign_won_is_master_with_the_key_revision():
    c = ElectionCore("a", ttl=3)
    assert c.current(0) == Role(SLAVE, 0)           # nobody is master before it has won
    assert c.needs_lease(0)
    c.lease_granted(7, 3, sent=0)
    c.observed("a", 7, 42, sent=0.01)
    assert c.current(0.02) == Role(MASTER, 42)


def test_key_held_by_another_is_slave_with_that_generation():
    c = ElectionCore("b", ttl=3)
    c.lease_granted(8, 3, sent=0)
    c.observed("a", 7, 42, sent=0)
    assert c.current(0) == Role(SLAVE, 42)          # a slave role request must not be stale


def test_same_name_but_an_old_lease_is_not_ours():
    """A restarted instance finds its previous incarnation's key (old lease): not master."""
    c = ElectionCore("a", ttl=3)
    c.lease_granted(9, 3, sent=0)
    c.observed("a", 7, 42, sent=0)
    assert c.current(0).role == SLAVE


def test_lease_expires_locally_before_etcd_could_expire_it():
    """Split brain: a master that cannot reach etcd steps down before ``sent + ttl``, the
    earliest moment etcd can expire its lease and another instance can win."""
    c = ElectionCore("a", ttl=3, guard=0.5)
    c.lease_granted(7, 3, sent=10.0)
    c.observed("a", 7, 42, sent=10.0)
    c.keepalive_answered(3, sent=11.0)              # last acknowledged keepalive
    assert c.current(13.4).role == MASTER
    assert c.current(13.5) == Role(SLAVE, 42)      # 11 + 3 - 0.5: stepped down
    assert c.needs_lease(13.5)
    assert 13.5 < 11.0 + 3                          # before etcd could have expired it


def test_guard_scales_with_the_ttl():
    c = ElectionCore("a", ttl=3)
    c.lease_granted(7, 3, sent=0)
    c.observed("a", 7, 1, sent=0)
    assert c.current(2.0).role == MASTER
    assert c.current(3.0 - c.guard).role == SLAVE
    assert 0 < c.guard < 3


def test_keepalive_ttl_zero_means_the_lease_is_gone():
    c = ElectionCore("a", ttl=3)
    c.lease_granted(7, 3, sent=0)
    c.observed("a", 7, 5, sent=0)
    c.keepalive_answered(0, sent=1)
    assert c.current(1) == Role(SLAVE, 5)
    assert c.lease is None


def test_a_late_keepalive_answer_never_shortens_the_lease():
    c = ElectionCore("a", ttl=3, guard=0.5)
    c.lease_granted(7, 3, sent=5)
    c.keepalive_answered(3, sent=4)                 # answer to an older request
    assert c.valid_until == 5 + 3 - 0.5


def test_observation_after_local_expiry_does_not_promote():
    """A campaign answer that arrives after our lease presumably expired proves nothing."""
    c = ElectionCore("a", ttl=3, guard=0.5)
    c.lease_granted(7, 3, sent=0)
    c.observed("a", 7, 3, sent=2.6)
    assert c.current(2.6).role == SLAVE


def test_no_key_means_no_master_yet():
    c = ElectionCore("a", ttl=3)
    c.lease_granted(7, 3, sent=0)
    c.observed("b", 6, 10, sent=0)
    c.observed(None, None, 0, sent=1)
    assert c.current(1) == Role(SLAVE, 10)          # the generation never goes back


def test_generation_is_monotonic_across_masters():
    a, b = ElectionCore("a", ttl=3), ElectionCore("b", ttl=3)
    a.lease_granted(1, 3, sent=0)
    b.lease_granted(2, 3, sent=0)
    a.observed("a", 1, 10, sent=0)
    b.observed("a", 1, 10, sent=0)
    assert a.current(0) == Role(MASTER, 10) and b.current(0) == Role(SLAVE, 10)
    # a dies; its key expires; b creates a new key at a later revision
    b.keepalive_answered(3, sent=2)
    b.observed("b", 2, 15, sent=4)
    assert b.current(4) == Role(MASTER, 15)


def test_ttl_must_be_sane():
    with pytest.raises(ValueError):
        ElectionCore("a", ttl=0.5)


def test_endpoints():
    assert endpoints("etcd://10.0.0.1:2379,10.0.0.2:2379") == [
        "http://10.0.0.1:2379", "http://10.0.0.2:2379"]
    with pytest.raises(ValueError):
        endpoints("sqlite:///x.db")
