"""JSON the way libcni re-encodes it after decoding into Go's map[string]interface{}.

The runtime side of libcni never forwards a config verbatim: it decodes the plugin object into
a map, adds keys, and encodes it again. Go sorts map keys, prints without spaces, escapes
`<>&`, and, having decoded every number as float64, prints 2.0 as `2`. Plugin stdin, the
wrapped single-plugin list and the cache file all go through this, so we mirror it.
"""

from libcni.protocol.gojson import compact

# Go's float formatting switches to exponent notation from here on; keep those as floats.
_GO_EXPONENT_FROM = 1e21


def normalize(value):
    """`value` as it comes out of a Go map round trip: keys sorted, integral floats as ints."""
    if isinstance(value, dict):
        return {key: normalize(value[key]) for key in sorted(value)}
    if isinstance(value, list):
        return [normalize(item) for item in value]
    if isinstance(value, float) and value.is_integer() and abs(value) < _GO_EXPONENT_FROM:
        return int(value)
    return value


def marshal(value) -> bytes:
    """json.Marshal of a decoded map: compact, sorted keys, Go's escapes."""
    return compact(normalize(value)).encode()
