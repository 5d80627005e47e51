"""JSON the way Go's encoding/json prints it, so output is byte-compatible with upstream.

`json` (and the `re` it pulls in) is imported by the functions that print: VERSION prints
without it.
"""

# Go escapes these inside strings (HTML safety); Python does not.
_GO_ESCAPES = {
    "<": "\\u003c",
    ">": "\\u003e",
    "&": "\\u0026",
    "\u2028": "\\u2028",
    "\u2029": "\\u2029",
}


def _escape(text: str) -> str:
    # These characters can only occur inside JSON strings, so a plain replace is safe.
    for char, escaped in _GO_ESCAPES.items():
        if char in text:
            text = text.replace(char, escaped)
    return text


def indent(obj, sort_keys: bool = False) -> str:
    """json.MarshalIndent(obj, "", "    "): 4-space indent, no trailing newline."""
    import json

    return _escape(json.dumps(obj, indent=4, ensure_ascii=False, sort_keys=sort_keys))


def compact(obj) -> str:
    """json.Marshal(obj): no spaces."""
    import json

    return _escape(json.dumps(obj, separators=(",", ":"), ensure_ascii=False))


def quote(text: str) -> str:
    """Go's %q for a string (close enough for the ASCII names CNI deals in)."""
    import json

    return json.dumps(text, ensure_ascii=False)


def version_info(current: str, supported) -> str:
    """VERSION's one line, built by hand: version strings need no escaping, and this path
    must stay free of imports (it runs for every plugin on every runtime probe)."""
    listed = ",".join(f'"{v}"' for v in supported)
    return f'{{"cniVersion":"{current}","supportedVersions":[{listed}]}}\n'


def quote_list(items) -> str:
    """Go's %q for a []string: ["a" "b"]."""
    return "[" + " ".join(quote(item) for item in items) + "]"


def loads(data, message: str, code: int | None = None):
    """Decoded JSON, or a CNIError (`code`, default INTERNAL) saying `message: <why>` when the
    text is not JSON."""
    import json

    from libcni.protocol.errors import INTERNAL, CNIError

    try:
        return json.loads(data)
    except ValueError as err:
        raise CNIError(INTERNAL if code is None else code, f"{message}: {err}") from None
