"""A minimal CRI v1 client (runtime.v1.RuntimeService) over gRPC, for the containerd tests.

Only the transport comes from grpcio; the few CRI messages the tests use are encoded and decoded
here with a tiny proto3 wire codec driven by the schema below. Field names and numbers are the
API's (kubernetes/cri-api, pkg/apis/runtime/v1/api.proto); a message is a plain dict, a map field
a dict of strings, an enum an int, and fields the schema does not name are skipped on decode.
"""

# Each message: field name -> (number, kind). A kind is a scalar ("string", "bool", "int32",
# "uint32", "int64", "enum"), "map" (map<string, string>), a message name, or a one-element
# list [kind] for a repeated field.
SCHEMA: dict[str, dict[str, tuple]] = {
    "VersionRequest": {"version": (1, "string")},
    "VersionResponse": {
        "version": (1, "string"),
        "runtime_name": (2, "string"),
        "runtime_version": (3, "string"),
        "runtime_api_version": (4, "string"),
    },
    "StatusRequest": {"verbose": (1, "bool")},
    "StatusResponse": {"status": (1, "RuntimeStatus"), "info": (2, "map")},
    "RuntimeStatus": {"conditions": (1, ["RuntimeCondition"])},
    "RuntimeCondition": {
        "type": (1, "string"),
        "status": (2, "bool"),
        "reason": (3, "string"),
        "message": (4, "string"),
    },
    "PodSandboxMetadata": {
        "name": (1, "string"),
        "uid": (2, "string"),
        "namespace": (3, "string"),
        "attempt": (4, "uint32"),
    },
    "DNSConfig": {
        "servers": (1, ["string"]),
        "searches": (2, ["string"]),
        "options": (3, ["string"]),
    },
    # protocol: TCP = 0, UDP = 1, SCTP = 2
    "PortMapping": {
        "protocol": (1, "enum"),
        "container_port": (2, "int32"),
        "host_port": (3, "int32"),
        "host_ip": (4, "string"),
    },
    # NamespaceMode: POD = 0, CONTAINER = 1, POD, NODE = 0, 2
    "NamespaceOption": {"network": (1, "enum"), "pid": (2, "enum"), "ipc": (3, "enum")},
    "LinuxSandboxSecurityContext": {"namespace_options": (1, "NamespaceOption")},
    "LinuxPodSandboxConfig": {
        "cgroup_parent": (1, "string"),
        "security_context": (2, "LinuxSandboxSecurityContext"),
        "sysctls": (3, "map"),
    },
    "PodSandboxConfig": {
        "metadata": (1, "PodSandboxMetadata"),
        "hostname": (2, "string"),
        "log_directory": (3, "string"),
        "dns_config": (4, "DNSConfig"),
        "port_mappings": (5, ["PortMapping"]),
        "labels": (6, "map"),
        "annotations": (7, "map"),
        "linux": (8, "LinuxPodSandboxConfig"),
    },
    "RunPodSandboxRequest": {"config": (1, "PodSandboxConfig"), "runtime_handler": (2, "string")},
    "RunPodSandboxResponse": {"pod_sandbox_id": (1, "string")},
    "StopPodSandboxRequest": {"pod_sandbox_id": (1, "string")},
    "StopPodSandboxResponse": {},
    "RemovePodSandboxRequest": {"pod_sandbox_id": (1, "string")},
    "RemovePodSandboxResponse": {},
    "PodSandboxStatusRequest": {"pod_sandbox_id": (1, "string"), "verbose": (2, "bool")},
    "PodSandboxStatusResponse": {"status": (1, "PodSandboxStatus"), "info": (2, "map")},
    "PodIP": {"ip": (1, "string")},
    "PodSandboxNetworkStatus": {"ip": (1, "string"), "additional_ips": (2, ["PodIP"])},
    # state: SANDBOX_READY = 0, SANDBOX_NOTREADY = 1
    "PodSandboxStatus": {
        "id": (1, "string"),
        "metadata": (2, "PodSandboxMetadata"),
        "state": (3, "enum"),
        "created_at": (4, "int64"),
        "network": (5, "PodSandboxNetworkStatus"),
        "labels": (7, "map"),
        "annotations": (8, "map"),
    },
    "ListPodSandboxRequest": {},
    "ListPodSandboxResponse": {"items": (1, ["PodSandbox"])},
    "PodSandbox": {
        "id": (1, "string"),
        "metadata": (2, "PodSandboxMetadata"),
        "state": (3, "enum"),
        "created_at": (4, "int64"),
        "labels": (5, "map"),
        "annotations": (6, "map"),
    },
}
_MAP_ENTRY = {"key": (1, "string"), "value": (2, "string")}
_VARINT_KINDS = {"bool", "int32", "uint32", "int64", "enum"}
TCP, UDP, SCTP = 0, 1, 2
SANDBOX_READY, SANDBOX_NOTREADY = 0, 1
POD, NODE = 0, 2


# -- wire format -------------------------------------------------------------------------------


def _varint(value: int) -> bytes:
    if value < 0:
        value += 1 << 64  # negative int32/int64 travel as ten-byte two's complement
    out = bytearray()
    while True:
        low = value & 0x7F
        value >>= 7
        if value:
            out.append(low | 0x80)
        else:
            out.append(low)
            return bytes(out)


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return result, pos


def _encode_field(number: int, kind, value) -> bytes:
    if kind in _VARINT_KINDS:
        return _varint(number << 3) + _varint(int(value))
    if kind == "string":
        payload = value.encode()
    elif kind == "map":
        return b"".join(
            _encode_field(number, "_entry", {"key": k, "value": v}) for k, v in value.items()
        )
    elif kind == "_entry":
        payload = _encode_message(_MAP_ENTRY, value)
    else:
        payload = encode(kind, value)
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _encode_message(fields: dict, message: dict) -> bytes:
    out = []
    for name, value in message.items():
        if name not in fields:
            raise KeyError(f"unknown field {name!r}")
        number, kind = fields[name]
        if isinstance(kind, list):
            out += [_encode_field(number, kind[0], item) for item in value]
        elif value not in (None, "", 0, False, {}):  # proto3: defaults are not sent
            out.append(_encode_field(number, kind, value))
    return b"".join(out)


def encode(message_name: str, message: dict) -> bytes:
    """A dict as the wire bytes of the named CRI message."""
    return _encode_message(SCHEMA[message_name], message)


def _fields(data: bytes):
    """(field number, wire type, raw value) for each field in a message's bytes."""
    pos = 0
    while pos < len(data):
        key, pos = _read_varint(data, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _read_varint(data, pos)
        elif wire == 1:
            value, pos = data[pos : pos + 8], pos + 8
        elif wire == 2:
            length, pos = _read_varint(data, pos)
            value, pos = data[pos : pos + length], pos + length
        elif wire == 5:
            value, pos = data[pos : pos + 4], pos + 4
        else:
            raise ValueError(f"unsupported wire type {wire}")
        yield number, wire, value


def _decode_scalar(kind: str, value):
    if kind == "string":
        return value.decode()
    if kind == "bool":
        return bool(value)
    if kind in ("int32", "int64") and value >= 1 << 63:
        return value - (1 << 64)
    return value


def _decode_message(fields: dict, data: bytes) -> dict:
    by_number = {number: (name, kind) for name, (number, kind) in fields.items()}
    out: dict = {}
    for name, (_, kind) in fields.items():
        out[name] = [] if isinstance(kind, list) else {} if kind == "map" else None
    for number, _wire, value in _fields(data):
        if number not in by_number:
            continue
        name, kind = by_number[number]
        if kind == "map":
            entry = _decode_message(_MAP_ENTRY, value)
            out[name][entry["key"] or ""] = entry["value"] or ""
        elif isinstance(kind, list):
            item_kind = kind[0]
            if item_kind in SCHEMA:
                out[name].append(decode(item_kind, value))
            else:
                out[name].append(_decode_scalar(item_kind, value))
        elif kind in SCHEMA:
            out[name] = decode(kind, value)
        else:
            out[name] = _decode_scalar(kind, value)
    for name, (_, kind) in fields.items():  # proto3 defaults for scalars that were not sent
        if out[name] is None and kind in _VARINT_KINDS:
            out[name] = False if kind == "bool" else 0
        elif out[name] is None and kind == "string":
            out[name] = ""
    return out


def decode(message_name: str, data: bytes) -> dict:
    """The named CRI message's wire bytes as a dict (every schema field present)."""
    return _decode_message(SCHEMA[message_name], data)


# -- the service -------------------------------------------------------------------------------


class CriClient:
    """runtime.v1.RuntimeService on a unix socket: one method per RPC the tests use."""

    def __init__(self, socket_path: str, timeout: float = 120):
        import grpc

        self.grpc = grpc
        self.timeout = timeout
        self.channel = grpc.insecure_channel(f"unix://{socket_path}")

    def call(self, method: str, request: dict, timeout: float | None = None) -> dict:
        rpc = self.channel.unary_unary(
            f"/runtime.v1.RuntimeService/{method}",
            request_serializer=lambda message: encode(f"{method}Request", message),
            response_deserializer=lambda data: decode(f"{method}Response", data),
        )
        return rpc(request, timeout=timeout or self.timeout)

    def version(self) -> dict:
        return self.call("Version", {"version": "v1"})

    def status(self, verbose: bool = False) -> dict:
        return self.call("Status", {"verbose": verbose})

    def network_ready(self) -> bool:
        conditions = self.status()["status"]["conditions"]
        return any(c["type"] == "NetworkReady" and c["status"] for c in conditions)

    def run_pod_sandbox(self, config: dict) -> str:
        return self.call("RunPodSandbox", {"config": config})["pod_sandbox_id"]

    def pod_sandbox_status(self, sandbox_id: str, verbose: bool = False) -> dict:
        return self.call("PodSandboxStatus", {"pod_sandbox_id": sandbox_id, "verbose": verbose})

    def stop_pod_sandbox(self, sandbox_id: str) -> None:
        self.call("StopPodSandbox", {"pod_sandbox_id": sandbox_id})

    def remove_pod_sandbox(self, sandbox_id: str) -> None:
        self.call("RemovePodSandbox", {"pod_sandbox_id": sandbox_id})

    def list_pod_sandbox(self) -> list:
        return self.call("ListPodSandbox", {})["items"]

    def close(self) -> None:
        self.channel.close()
