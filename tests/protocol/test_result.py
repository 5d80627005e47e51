"""Result parsing, printing and conversion between the three result families (spec 0.1.0–1.1.0)."""

import json

import pytest

from libcni.protocol import version
from libcni.protocol.errors import CNIError
from libcni.protocol.result import Result, convert

FULL_C = {
    "cniVersion": "1.1.0",
    "interfaces": [
        {"name": "cni0", "mac": "0a:58:0a:01:00:01"},
        {"name": "veth1234", "mac": "aa:bb:cc:dd:ee:ff"},
        {
            "name": "eth0",
            "mac": "0a:58:0a:01:00:05",
            "sandbox": "/var/run/netns/x",
            "mtu": 1400,
            "socketPath": "/run/sock",
            "pciID": "0000:00:1f.0",
        },
    ],
    "ips": [
        {"interface": 2, "address": "10.1.0.5/16", "gateway": "10.1.0.1"},
        {"interface": 2, "address": "fd00:1::5/64", "gateway": "fd00:1::1"},
    ],
    "routes": [
        {"dst": "0.0.0.0/0"},
        {
            "dst": "10.9.0.0/16",
            "gw": "10.1.0.9",
            "mtu": 1300,
            "advmss": 1200,
            "priority": 10,
            "table": 0,
            "scope": 0,
        },
        {"dst": "::/0", "gw": "fd00:1::1"},
    ],
    "dns": {
        "nameservers": ["10.1.0.1"],
        "domain": "example.org",
        "search": ["a.example"],
        "options": ["ndots:2"],
    },
}


def full():
    return Result.from_json(FULL_C, "1.1.0")


def test_family_c_prints_keys_alphabetically():
    text = full().dumps("1.1.0")
    assert text == json.dumps(json.loads(text), indent=4, sort_keys=True)
    assert not text.endswith("\n")


def test_family_c_roundtrip_keeps_every_field():
    assert json.loads(full().dumps("1.1.0")) == FULL_C


def test_family_c_omits_empty_dns():
    result = Result("1.0.0")
    result.add_ip("10.0.0.2/24")
    assert "dns" not in json.loads(result.dumps())


@pytest.mark.parametrize("target", ["0.3.0", "0.3.1", "0.4.0"])
def test_c_to_b_adds_version_and_drops_new_interface_fields(target):
    out = full().to_version(target)
    assert out["cniVersion"] == target
    assert [ip["version"] for ip in out["ips"]] == ["4", "6"]
    assert out["interfaces"][2] == {
        "name": "eth0",
        "mac": "0a:58:0a:01:00:05",
        "sandbox": "/var/run/netns/x",
    }
    assert out["routes"][1] == FULL_C["routes"][1]
    assert list(out) == ["cniVersion", "interfaces", "ips", "routes", "dns"]


def test_family_b_keeps_go_struct_field_order():
    text = full().dumps("0.4.0")
    ip = json.loads(text)["ips"][0]
    assert list(ip) == ["version", "interface", "address", "gateway"]
    assert list(json.loads(text)["interfaces"][2]) == ["name", "mac", "sandbox"]


def test_family_b_always_prints_dns():
    result = Result("0.4.0")
    result.add_ip("10.0.0.2/24")
    assert json.loads(result.dumps())["dns"] == {}


@pytest.mark.parametrize("target", ["0.1.0", "0.2.0"])
def test_to_family_a_takes_first_ip_of_each_family_and_nests_routes(target):
    out = full().to_version(target)
    assert out == {
        "cniVersion": target,
        "ip4": {
            "ip": "10.1.0.5/16",
            "gateway": "10.1.0.1",
            "routes": [{"dst": "0.0.0.0/0"}, {"dst": "10.9.0.0/16", "gw": "10.1.0.9"}],
        },
        "ip6": {
            "ip": "fd00:1::5/64",
            "gateway": "fd00:1::1",
            "routes": [{"dst": "::/0", "gw": "fd00:1::1"}],
        },
        "dns": FULL_C["dns"],
    }


def test_to_family_a_drops_routes_of_a_family_without_ip():
    result = Result("1.0.0")
    result.add_ip("10.0.0.2/24")
    result.routes.append({"dst": "::/0"})
    assert "routes" not in result.to_version("0.2.0")["ip4"]
    assert "ip6" not in result.to_version("0.2.0")


def test_to_family_a_without_ips_fails():
    with pytest.raises(CNIError, match="cannot convert: no valid IP addresses"):
        Result("1.0.0").to_version("0.2.0")


def test_family_a_to_c():
    a = {
        "cniVersion": "0.2.0",
        "ip4": {"ip": "10.0.0.2/24", "gateway": "10.0.0.1", "routes": [{"dst": "0.0.0.0/0"}]},
        "ip6": {"ip": "fd00::2/64"},
        "dns": {"nameservers": ["1.1.1.1"]},
    }
    out = convert(a, "1.0.0")
    assert out == {
        "cniVersion": "1.0.0",
        "ips": [{"address": "10.0.0.2/24", "gateway": "10.0.0.1"}, {"address": "fd00::2/64"}],
        "routes": [{"dst": "0.0.0.0/0"}],
        "dns": {"nameservers": ["1.1.1.1"]},
    }


def test_family_a_to_b_has_versions_and_no_interfaces():
    a = {"cniVersion": "0.1.0", "ip4": {"ip": "10.0.0.2/24"}}
    out = convert(a, "0.3.1")
    assert out == {
        "cniVersion": "0.3.1",
        "ips": [{"version": "4", "address": "10.0.0.2/24"}],
        "dns": {},
    }


def test_b_to_c_drops_version_field():
    b = full().to_version("0.4.0")
    out = convert(b, "1.0.0")
    assert all("version" not in ip for ip in out["ips"])
    assert out["ips"][0]["interface"] == 2


@pytest.mark.parametrize("source", version.ALL)
@pytest.mark.parametrize("target", version.ALL)
def test_conversion_matrix_keeps_the_first_address_of_each_family(source, target):
    start = full().to_version(source)
    out = convert(start, target)
    assert out["cniVersion"] == target
    if target in version.FAMILY_A:
        assert out["ip4"]["ip"] == "10.1.0.5/16"
        assert out["ip6"]["ip"] == "fd00:1::5/64"
    else:
        assert [ip["address"] for ip in out["ips"]] == ["10.1.0.5/16", "fd00:1::5/64"]
        assert [ip.get("gateway") for ip in out["ips"]] == ["10.1.0.1", "fd00:1::1"]


def test_same_family_relabel_keeps_everything():
    out = convert(FULL_C, "1.0.0")
    assert out == dict(FULL_C, cniVersion="1.0.0")


def test_from_json_refuses_other_family():
    with pytest.raises(CNIError) as err:
        Result.from_json({"cniVersion": "0.2.0", "ip4": {"ip": "10.0.0.1/8"}}, "0.4.0")
    assert err.value.msg == (
        'result type supports [0.3.0 0.3.1 0.4.0] but unmarshalled CNIVersion is "0.2.0"'
    )


@pytest.mark.parametrize("bad", ["10.0.0.300/24", "10.0.0.1", "nonsense", 42])
def test_from_json_refuses_bad_addresses(bad):
    with pytest.raises(CNIError, match="address"):
        Result.from_json({"cniVersion": "1.0.0", "ips": [{"address": bad}]}, "1.0.0")


def test_address_keeps_host_bits_and_is_canonical():
    result = Result.from_json({"ips": [{"address": "FD00:0:0::05/64"}]}, "1.0.0")
    assert result.ips[0]["address"] == "fd00::5/64"


def test_go_html_escaping_in_strings():
    result = Result("1.0.0")
    result.add_ip("10.0.0.2/24")
    result.dns = {"domain": "a<b>&c"}
    assert '"a\\u003cb\\u003e\\u0026c"' in result.dumps()


def test_route_table_zero_is_kept_other_zero_fields_dropped():
    result = Result.from_json(
        {
            "routes": [{"dst": "10.0.0.0/8", "table": 0, "mtu": 0}],
            "ips": [{"address": "10.0.0.2/8"}],
        },
        "1.0.0",
    )
    assert result.to_version("1.0.0")["routes"] == [{"dst": "10.0.0.0/8", "table": 0}]


@pytest.mark.parametrize(
    "field, value",
    [("interfaces", 1), ("routes", 5), ("ips", 5), ("ips", [None]), ("interfaces", [{"mac": 5}])],
)
def test_wrongly_typed_result_fields_are_cni_errors(field, value):
    with pytest.raises(CNIError) as err:
        Result.from_json({"cniVersion": "1.0.0", field: value}, "1.0.0")
    assert err.value.code == 999 and "invalid" in err.value.msg
