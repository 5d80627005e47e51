"""CNI_ARGS parsing: upstream's pair rules, case-sensitive keys and IgnoreUnknown."""

import pytest

from libcni.protocol.cniargs import parse
from libcni.protocol.errors import CNIError


def test_empty_gives_nothing():
    assert parse("", ("IP",)) == {}


def test_known_keys_are_returned():
    assert parse("IP=10.0.0.5;MAC=aa:bb:cc:dd:ee:ff", ("IP", "MAC")) == {
        "IP": "10.0.0.5",
        "MAC": "aa:bb:cc:dd:ee:ff",
    }


def test_unknown_key_without_ignore_unknown_is_an_error_with_a_hint():
    with pytest.raises(CNIError) as err:
        parse("K8S_POD_NAME=x", ("IP",))
    assert err.value.code == 999
    assert err.value.msg == 'ARGS: unknown args ["K8S_POD_NAME=x"]'
    assert "IgnoreUnknown=1" in err.value.details


@pytest.mark.parametrize("value", ["1", "true", "TRUE", "True"])
def test_ignore_unknown_anywhere(value):
    assert parse(f"K8S_POD_NAME=x;IP=1.2.3.4;IgnoreUnknown={value}", ("IP",)) == {"IP": "1.2.3.4"}


def test_ignore_unknown_false_still_rejects():
    with pytest.raises(CNIError, match="unknown args"):
        parse("IgnoreUnknown=0;FOO=1", ())


def test_bad_ignore_unknown_value():
    with pytest.raises(CNIError) as err:
        parse("IgnoreUnknown=yes", ())
    assert err.value.msg == (
        'ARGS: error parsing value of pair "IgnoreUnknown=yes": '
        "boolean unmarshal error: invalid input yes"
    )


@pytest.mark.parametrize("raw", ["IP", "IP=a=b", "IP=1.2.3.4;", ";IP=1"])
def test_invalid_pairs(raw):
    with pytest.raises(CNIError, match="ARGS: invalid pair"):
        parse(raw, ("IP",))


def test_keys_are_case_sensitive():
    with pytest.raises(CNIError, match="unknown args"):
        parse("ip=1.2.3.4", ("IP",))
