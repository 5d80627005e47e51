"""Config decoding with Go's encoding/json rules."""

import pytest

from libcni.protocol import config
from libcni.protocol.errors import CNIError


class Sub(config.Struct):
    subnet: str = ""


class Conf(config.NetConf):
    bridge: str = "cni0"
    mtu: int = 0
    isGateway: bool = False
    ranges: list[list[Sub]] = []
    tags: list[str] = []
    rate: float = 0.0


def decode(obj):
    return config.decode(Conf, obj)


def test_defaults():
    conf = decode({"name": "n"})
    assert (conf.bridge, conf.mtu, conf.isGateway, conf.ranges) == ("cni0", 0, False, [])
    assert conf.ipam is None


def test_keys_match_case_insensitively():
    conf = decode({"ISGATEWAY": True, "Bridge": "br9"})
    assert conf.isGateway is True and conf.bridge == "br9"


def test_exact_case_wins():
    conf = decode({"bridge": "exact", "BRIDGE": "other"})
    assert conf.bridge == "exact"


def test_unknown_keys_ignored():
    assert decode({"whatever": [1, 2], "name": "n"}).name == "n"


def test_null_keeps_default():
    assert decode({"bridge": None}).bridge == "cni0"


@pytest.mark.parametrize(
    "obj,key",
    [
        ({"mtu": "1500"}, "mtu"),
        ({"mtu": 1500.5}, "mtu"),
        ({"mtu": True}, "mtu"),
        ({"isGateway": "true"}, "isGateway"),
        ({"bridge": 5}, "bridge"),
        ({"tags": "a"}, "tags"),
        ({"tags": [1]}, "tags[0]"),
        ({"ranges": [[{"subnet": 7}]]}, "ranges[0][0].subnet"),
    ],
)
def test_wrong_types_are_fatal_and_name_the_key(obj, key):
    with pytest.raises(CNIError) as err:
        decode(obj)
    assert err.value.code == 7
    assert f'"{key}"' in err.value.msg


def test_nested_structs():
    conf = decode({"ranges": [[{"subnet": "10.0.0.0/24"}]], "ipam": {"type": "host-local"}})
    assert conf.ranges[0][0].subnet == "10.0.0.0/24"
    assert conf.ipam.type == "host-local"


def test_int_accepted_for_float():
    assert decode({"rate": 3}).rate == 3.0


def test_defaults_are_not_shared():
    first, second = decode({}), decode({})
    first.tags.append("x")
    assert second.tags == []


class Ranged(config.NetConf):
    mtu: config.MTU = 0
    owner: config.ID | None = None
    table: config.Uint32 = 0
    hostIP: config.IP = ""
    dataDir: config.Path = ""
    entries: list[Sub] = []
    sysctl: dict[str, str] = {}


@pytest.mark.parametrize(
    "obj, words",
    [
        ({"mtu": 4294967296}, '"mtu" must be an integer from 0 to 2147483647, got 4294967296'),
        ({"mtu": -1}, '"mtu" must be an integer from 0'),
        ({"owner": 4294967295}, '"owner" must be an integer from 0 to 4294967294'),
        ({"table": 2**32}, '"table" must be an integer from 0 to 4294967295'),
        ({"hostIP": "1.2.3.4.5"}, '"hostIP" must be an IP address, got "1.2.3.4.5"'),
        ({"dataDir": "/a\x00b"}, '"dataDir" must be a path without NUL characters'),
        ({"mtu": "1500"}, '"mtu" must be an integer, got string "1500"'),
    ],
)
def test_kernel_ranges_and_string_rules_are_code_7_naming_the_key(obj, words):
    with pytest.raises(CNIError) as err:
        config.decode(Ranged, obj)
    assert err.value.code == 7 and words in err.value.msg


def test_ranged_values_inside_the_range_decode():
    conf = config.decode(Ranged, {"mtu": 9000, "owner": 2147483648, "hostIP": "::1"})
    assert (conf.mtu, conf.owner, conf.hostIP) == (9000, 2147483648, "::1")


def test_null_in_a_list_or_map_is_the_zero_value_as_in_go():
    conf = config.decode(Ranged, {"entries": [None], "sysctl": {"net.core.somaxconn": None}})
    assert conf.entries[0].subnet == "" and conf.sysctl == {"net.core.somaxconn": ""}
