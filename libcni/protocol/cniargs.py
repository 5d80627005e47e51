"""CNI_ARGS parsing (`K=V;K=V`), with upstream's strictness and IgnoreUnknown."""

from libcni.protocol.errors import INTERNAL, CNIError
from libcni.protocol.gojson import quote, quote_list

_TRUE = ("1", "true")
_FALSE = ("0", "false")


def parse(raw: str, known: tuple = ()) -> dict:
    """Return {key: value} for the `known` keys (matched case-sensitively, like Go's field names).

    Unknown keys are an error unless IgnoreUnknown is true; a piece without exactly one `=` is
    an error. Both are code 999, with upstream's message and a hint in the details.
    """
    values: dict = {}
    if raw == "":
        return values
    unknown = []
    ignore_unknown = False
    for pair in raw.split(";"):
        parts = pair.split("=")
        if len(parts) != 2:
            raise CNIError(
                INTERNAL,
                f"ARGS: invalid pair {quote(pair)}",
                "CNI_ARGS must be KEY=VALUE pairs separated by ';', with no '=' in values "
                "and no trailing ';'",
            )
        key, value = parts
        if key == "IgnoreUnknown":
            lowered = value.lower()
            if lowered not in _TRUE + _FALSE:
                raise CNIError(
                    INTERNAL,
                    f"ARGS: error parsing value of pair {quote(pair)}: "
                    f"boolean unmarshal error: invalid input {value}",
                    "IgnoreUnknown takes 1, true, 0 or false",
                )
            ignore_unknown = lowered in _TRUE
        elif key in known:
            values[key] = value
        else:
            unknown.append(pair)
    if unknown and not ignore_unknown:
        raise CNIError(
            INTERNAL,
            f"ARGS: unknown args {quote_list(unknown)}",
            "add IgnoreUnknown=1 to CNI_ARGS to let this plugin ignore keys it does not use",
        )
    return values
