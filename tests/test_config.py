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
