"""CNI spec versions: parsing, ordering, and what a plugin supports."""

from libcni.protocol.errors import DECODING_FAILURE, CNIError

# The spec version this library implements; VERSION always answers with it.
CURRENT = "1.1.0"

ALL = ("0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0")

# The three result families (spec "Result" formats).
FAMILY_A = ("0.1.0", "0.2.0")
FAMILY_B = ("0.3.0", "0.3.1", "0.4.0")
FAMILY_C = ("1.0.0", "1.1.0")


def starting_from(minimum: str) -> tuple:
    """Every known version from `minimum` on (bandwidth: 0.3.0, firewall: 0.4.0, vrf: 0.3.1)."""
    return ALL[ALL.index(minimum) :]


def parse(version: str) -> tuple:
    """'1.0' -> (1, 0, 0); '' means 0.1.0. Raises ValueError with Go's wording."""
    if version == "":
        return (0, 1, 0)
    parts = version.split(".")
    if len(parts) >= 4:
        raise ValueError(f'invalid version "{version}": too many parts')
    numbers = []
    for label, part in zip(("major", "minor", "micro"), parts, strict=False):
        if not part.lstrip("+-").isdigit():
            raise ValueError(
                f'failed to convert {label} version part "{part}": '
                f'strconv.Atoi: parsing "{part}": invalid syntax'
            )
        numbers.append(int(part))
    while len(numbers) < 3:
        numbers.append(0)
    return tuple(numbers)


def at_least(version: str, other: str) -> bool:
    """version >= other; a bad version is a decoding failure (code 6)."""
    try:
        return parse(version) >= parse(other)
    except ValueError as err:
        raise CNIError(DECODING_FAILURE, str(err)) from None


def family(version: str) -> tuple:
    """The result family a version's results are printed in."""
    if version in FAMILY_A:
        return FAMILY_A
    if version in FAMILY_B:
        return FAMILY_B
    if version in FAMILY_C:
        return FAMILY_C
    raise ValueError(f'unsupported CNI result version "{version}"')


def config_version(conf: dict) -> str:
    """The cniVersion of a decoded config: empty or absent means 0.1.0."""
    value = conf.get("cniVersion")
    if value is None or value == "":
        return "0.1.0"
    if not isinstance(value, str):
        raise CNIError(
            DECODING_FAILURE,
            "decoding version from network config: json: cannot unmarshal "
            f"{json_kind(value)} into Go struct field .cniVersion of type string",
        )
    return value


def json_kind(value) -> str:
    """The JSON type name of a decoded value, in Go's error vocabulary."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return "null"
