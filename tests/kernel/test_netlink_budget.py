"""Issue #21's budget: every link plugin's ADD, CHECK and DEL opens at most one netlink socket
per namespace it touches (bridge and ptp ADD: host and container, 2 in all), and no call looks
the same link up by name twice. Plugins run in-process in namespaces the test owns
(tests/netlink_budget.py). ipvlan, vlan and dummy need kernel modules this kernel lacks: the
VM suite runs them."""

import pytest
from conftest import NetnsFactory
from kit.netlink_budget import BudgetWorld

# plugin -> (config changes, namespaces its verbs touch at most: host, container, tempNS)
CASES = {
    "bridge": ({"ipMasq": False}, 2),
    "ptp": ({"ipMasq": False}, 2),
    "macvlan": ({}, 2),
    "host-device": ({}, 3),  # host, a temporary netns to rename in, container
    "tap": ({}, 1),
    "loopback": ({}, 1),
}


@pytest.fixture(scope="module")
def world(tmp_path_factory, source_bin):
    factory = NetnsFactory()
    try:
        with BudgetWorld(factory, str(tmp_path_factory.mktemp("budget")), source_bin) as made:
            yield made
    finally:
        factory.cleanup()


@pytest.mark.parametrize("name", sorted(CASES))
def test_one_socket_per_namespace_and_no_repeated_lookup(world, name):
    changes, namespaces = CASES[name]
    for command, counts in world.lifecycle(name, world.config(name, **changes)).items():
        print(command, counts)  # shown when the assertion below fails
        counts.assert_within(per_netns=1, total=namespaces)


def test_bridge_add_with_gateway_opens_two_sockets(world):
    conf = world.config("bridge", ipMasq=False, isGateway=True, bridge="nbbr0")
    counts = world.lifecycle("bridge", conf)
    add = counts["ADD"]
    assert len(add.sockets) == 2, add
    assert len(add.per_netns()) == 2  # the host's and the container's
    add.assert_within(per_netns=1, total=2)


def test_the_counter_sees_a_second_socket(world):
    from kit.netlink_budget import Counter

    from libcni.kernel.session import Session

    with Counter() as counts:
        with Session() as first, Session() as second:
            first.link("lo")
            second.link("lo")
    with pytest.raises(AssertionError):
        counts.assert_within(per_netns=1)
    assert counts.repeated_lookups() != []
