"""Spec version parsing and ordering."""

import pytest

from libcni.protocol import version
from libcni.protocol.errors import CNIError


@pytest.mark.parametrize(
    "text,parsed", [("", (0, 1, 0)), ("1", (1, 0, 0)), ("0.4", (0, 4, 0)), ("1.1.0", (1, 1, 0))]
)
def test_parse(text, parsed):
    assert version.parse(text) == parsed


@pytest.mark.parametrize("text", ["1.0.0.0", "a.b", "1.x"])
def test_parse_errors(text):
    with pytest.raises(ValueError):
        version.parse(text)


def test_at_least():
    assert version.at_least("1.0.0", "0.4.0")
    assert not version.at_least("0.3.1", "0.4.0")
    assert version.at_least("", "0.1.0")


def test_at_least_bad_version_is_code_6():
    with pytest.raises(CNIError) as err:
        version.at_least("x", "0.4.0")
    assert err.value.code == 6


def test_starting_from():
    assert version.starting_from("0.4.0") == ("0.4.0", "1.0.0", "1.1.0")
