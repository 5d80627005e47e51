"""CNI error values: a code from the spec table and a message a person can act on."""

# Codes from the CNI spec (SPEC.md "Error" table) plus upstream's Go constants.
INCOMPATIBLE_VERSION = 1
UNSUPPORTED_FIELD = 2
UNKNOWN_CONTAINER = 3
INVALID_ENVIRONMENT = 4
IO_FAILURE = 5
DECODING_FAILURE = 6
INVALID_NETWORK_CONFIG = 7
INVALID_NETNS = 8
TRY_AGAIN_LATER = 11
PLUGIN_NOT_AVAILABLE = 50
LIMITED_CONNECTIVITY = 51
INTERNAL = 999

# What each code means, for tools (cnitool) that explain an error to a person.
CODE_MEANINGS = {
    INCOMPATIBLE_VERSION: "the plugin does not support the config's cniVersion",
    UNSUPPORTED_FIELD: "a config field has a value the plugin does not support",
    UNKNOWN_CONTAINER: "the container is unknown or does not exist",
    INVALID_ENVIRONMENT: "a CNI_* environment variable is missing or invalid",
    IO_FAILURE: "reading stdin or writing stdout failed",
    DECODING_FAILURE: "the network config (stdin) could not be decoded",
    INVALID_NETWORK_CONFIG: "the network config is invalid",
    INVALID_NETNS: "CNI_NETNS is not a usable network namespace",
    TRY_AGAIN_LATER: "a transient condition; the runtime should retry later",
    PLUGIN_NOT_AVAILABLE: "the plugin cannot serve requests (STATUS)",
    LIMITED_CONNECTIVITY: "the plugin cannot serve new requests; existing containers may "
    "have limited connectivity (STATUS)",
    INTERNAL: "plugin-internal error",
}


def explain(code: int) -> str:
    """A short human explanation of an error code."""
    if code in CODE_MEANINGS:
        return CODE_MEANINGS[code]
    if 100 <= code < 999:
        return "plugin-specific error"
    return "unknown error code"


class CNIError(Exception):
    """An error a plugin reports: printed by the skeleton as CNI error JSON, exit status 1."""

    def __init__(self, code: int, msg: str, details: str = ""):
        super().__init__(msg)
        self.code = code
        self.msg = msg
        self.details = details

    def to_dict(self) -> dict:
        out: dict = {"code": self.code, "msg": self.msg}
        if self.details:
            out["details"] = self.details
        return out

    def __str__(self) -> str:
        if self.details:
            return f"{self.msg}; {self.details}"
        return self.msg

    def __repr__(self) -> str:
        return f"CNIError({self.code}, {self.msg!r}, {self.details!r})"


def config_error(msg: str, details: str = "") -> CNIError:
    """An invalid network config (code 7)."""
    return CNIError(INVALID_NETWORK_CONFIG, msg, details)


def internal(msg: str, details: str = "") -> CNIError:
    """A plugin failure with no more specific code (999, like Go's ErrInternal)."""
    return CNIError(INTERNAL, msg, details)
