"""The model checks its own values: each type refuses a bad one with a ModelError naming
the field, before any store sees it; the store only translates (one translator)."""
import pytest

from controller.model import (MAX_METER_ID, MAX_VNI, VLAN_MAX, VNI_MIN, Binding, ModelError,
                              PortOwned, RateLimit, Tenant, Topology, check_bindable_port,
                              user_tenant)
from controller.opflows import MAX_TABLE_ID, OperatorFlow
from controller.store.errors import Conflict, Invalid, model_values


@pytest.mark.parametrize("build, field", [
    (lambda: Tenant("a", 5, subnet="10.0.0.1/24"), "subnet"),       # host bits set
    (lambda: Tenant("a", 5, subnet="not a net"), "subnet"),
    (lambda: Tenant("a", 5, subnet=24), "subnet"),
    (lambda: Tenant("a", 5, subnet="10.0.0.0/8" + " " * 60), "subnet"),
    (lambda: Tenant("a", 5, vlan=VLAN_MAX + 1), "vlan"),
    (lambda: Tenant("a", 5, vlan=0), "vlan"),
    (lambda: Tenant("a", MAX_VNI + 1), "vni"),
    (lambda: user_tenant("a", VNI_MIN - 1), "vni"),
    (lambda: RateLimit(MAX_METER_ID + 1, "h1", 100, port="p1"), "id"),
    (lambda: RateLimit(1, "h1\n", 100, port="p1"), "host"),
    (lambda: Binding("h", "p", "t", mac="02:00:00:00:00:01", ips=("10.0.0.1", "10.0.0.1")),
     "ips"),
    (lambda: Binding("h", "p", "t", mac="02:00:00:00:00:01",
                     allowed_address_pairs=(("10.0.0.9", "01:00:00:00:00:01"),)),
     "allowed_address_pairs"),
    (lambda: OperatorFlow(1, 1, MAX_TABLE_ID + 1, 10), "table_id"),
    (lambda: OperatorFlow(0, 1, 100, 10), "id"),
])
def test_each_type_refuses_its_bad_values_naming_the_field(build, field):
    with pytest.raises(ModelError) as e:
        build()
    assert e.value.field == field, e.value.message


def test_a_tenant_normalises_its_subnet():
    assert Tenant("a", 5, subnet="10.1.0.0/24").subnet == "10.1.0.0/24"
    assert Tenant("a", 5, subnet="").subnet is None
    assert user_tenant("a", VNI_MIN, subnet="10.2.0.0/16") == Tenant("a", VNI_MIN, None,
                                                                   "10.2.0.0/16")


def test_the_one_translator():
    with pytest.raises(Invalid) as e, model_values("x", prefix="3."):
        Tenant("a", 5, subnet="bad")
    assert (e.value.field, e.value.status) == ("3.subnet", 422)
    with pytest.raises(Conflict) as c, model_values("port"):
        check_bindable_port("h1", "vx-h2")
    assert c.value.field == "port" and c.value.status == 409
    with pytest.raises(PortOwned):
        check_bindable_port("h1", "br0")
    with pytest.raises(Invalid) as w, model_values("ips"):
        raise TypeError("not iterable")
    assert w.value.field == "ips"


def test_a_port_is_never_bound_with_its_network_s_gateway_address():
    net = Tenant("red", 1000, subnet="10.1.0.0/24", gateway="10.1.0.1")
    with pytest.raises(ValueError, match="is the gateway of network 'red'"):
        Topology((net,), (Binding("h1", "p1", "red", mac="02:00:00:00:00:01", ips=("10.1.0.1",)),))
    Topology((net,), (Binding("h1", "p1", "red", mac="02:00:00:00:00:01", ips=("10.1.0.2",)),))
