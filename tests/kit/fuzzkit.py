"""Hostile inputs for every plugin, and one runner that checks what a plugin answers.

Used by tests/robustness/test_fuzz.py (hypothesis, in-process through skel.dispatch) and, as a
script, for longer campaigns through the source modules or the frozen executables:

    ip netns exec <host> python3 tests/kit/fuzzkit.py --inputs 20000 [--frozen build/dist/bin]

(`make fuzz` creates the namespaces and runs both.) Every input is a stdin (bytes), an
environment and a command; every answer must be valid CNI JSON: an error with an int `code` and
a str `msg` and a non-zero exit, or a success with a valid result (ADD) or nothing.
"""

import io
import json
import os
import random
import subprocess
import sys

TESTS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REPO = os.path.dirname(TESTS)
for _path in (REPO, TESTS):  # run as a script too (`make fuzz`): the packages and the kit
    if _path not in sys.path:
        sys.path.insert(0, _path)

NETWORK = "fznet"
HOST_MASTER = "fzdum0"  # a dummy in the host netns: master of macvlan, ipvlan and vlan
HOST_DEVICE = "fzdev0"  # a dummy host-device moves into the container
CHAIN_IFNAME = "ceth0"  # a dummy in the container netns: the chained plugins' interface
SUBNET = "10.250.0"

# The longest value one environment variable may hold (Linux's MAX_ARG_STRLEN, 32 pages, with
# the `CNI_CONTAINERID=` and the NUL): the spec sets no limit on an ID, the kernel does.
ENV_VALUE_MAX = 32 * os.sysconf("SC_PAGE_SIZE") - len("CNI_CONTAINERID=") - 1
# Legal container IDs and network names around every file-name limit (one path component:
# 255 bytes; a file-keeping plugin joins ID, ifname and a suffix) and up to the environment's.
LONG_LEGAL_NAMES = [
    "c" * 200,
    "c" * 250,
    "c" * 255,
    "c" * 256,
    "c" * 300,
    "c" * 4096,
    "c" * ENV_VALUE_MAX,
]
NETWORK_NAMES = [NETWORK, "n" * 255, "n" * 256, "n" * 300, "n" * 4096, "n" * 65536]


def plugins() -> dict:
    import runpy

    return runpy.run_path(os.path.join(REPO, "build", "multicall.py"))["PLUGINS"]


def base_configs(data_dir: str) -> dict:
    """A valid config per plugin; the fuzzer mutates these."""
    hl = {
        "type": "host-local",
        "dataDir": os.path.join(data_dir, "ipam"),
        "ranges": [[{"subnet": f"{SUBNET}.0/24"}]],
        "routes": [{"dst": "0.0.0.0/0"}],
    }
    prev = {
        "cniVersion": "1.0.0",
        "interfaces": [{"name": CHAIN_IFNAME, "sandbox": "SANDBOX"}],
        "ips": [{"address": f"{SUBNET}.77/24", "gateway": f"{SUBNET}.1", "interface": 0}],
        "routes": [{"dst": "0.0.0.0/0"}],
    }
    static = {"type": "static", "addresses": [{"address": f"{SUBNET}.88/24"}]}
    return {
        "loopback": {},
        "bridge": {"bridge": "fzbr0", "isGateway": True, "ipMasq": True, "ipam": hl},
        "ptp": {"ipMasq": True, "mtu": 1400, "ipam": hl},
        "macvlan": {"master": HOST_MASTER, "mode": "bridge", "ipam": hl},
        "ipvlan": {"master": HOST_MASTER, "ipam": hl},
        "vlan": {"master": HOST_MASTER, "vlanId": 100, "ipam": hl},
        "host-device": {"device": HOST_DEVICE, "ipam": static},
        "tap": {"mtu": 1400, "owner": 0, "group": 0, "ipam": hl},
        "dummy": {"ipam": hl},
        "portmap": {
            "capabilities": {"portMappings": True},
            "prevResult": prev,
            "runtimeConfig": {
                "portMappings": [{"hostPort": 30080, "containerPort": 80, "protocol": "tcp"}]
            },
        },
        "tuning": {
            "sysctl": {"net.core.somaxconn": "512"},
            "mtu": 1300,
            "prevResult": prev,
            "dataDir": os.path.join(data_dir, "tuning"),
        },
        "bandwidth": {"ingressRate": 8000000, "ingressBurst": 400000, "prevResult": prev},
        "firewall": {
            "backend": "iptables",
            "prevResult": prev,
            "dataDir": os.path.join(data_dir, "firewall"),
        },
        "sbr": {"prevResult": prev},
        "vrf": {"vrfname": "fzvrf", "prevResult": prev},
        "host-local": {"ipam": hl},
        "static": {"ipam": static},
        # No daemon listens there: every ADD/CHECK/STATUS is a clean error, DEL succeeds.
        "dhcp": {"ipam": {"type": "dhcp", "daemonSocketPath": os.path.join(data_dir, "no.sock")}},
    }


def full_config(name: str, data_dir: str, netns: str, version: str = "1.0.0") -> dict:
    conf = {"cniVersion": version, "name": NETWORK, "type": name}
    conf.update(json.loads(json.dumps(base_configs(data_dir)[name])))
    prev = conf.get("prevResult")
    if prev:
        prev["interfaces"][0]["sandbox"] = netns
    return conf


# -- hostile values ---------------------------------------------------------------------------

DEEP = "[" * 5000 + "]" * 5000
SPECIAL_STRINGS = [
    "",
    " ",
    "\ud800",
    "a\udfffb",
    "\x00",
    "a\x00b",
    "../../etc/passwd",
    "/",
    ".",
    "..",
    "x" * 300,
    "1.2.3.4.5",
    "10.250.0.0/33",
    "::ffff:1.2.3.4",
    "fe80::1%eth0",
    "0.0.0.0/0",
    "256.1.1.1",
    "10.250.0.5",
    "10.250.0.5/24",
    "00:11:22:33:44:55",
    "zz:zz",
    "eth0",
    "lo",
    "-1",
    "1e309",
    "true",
    "null",
    "é",
    "\u2028",
    "<&>",
    "%s%n",
    "a/b",
    "a:b",
    "a b",
    "/proc/self/ns/net",
    "/dev/null",
    "/nonexistent/ns",
    "tcp",
    "udp",
    "sctp",
    "nftables",
    "iptables",
    "firewalld",
    "bridge",
    "host-local",
    "static",
    "loopback",
    "passthru",
]
SPECIAL_NUMBERS = [
    0,
    1,
    -1,
    7,
    100,
    1500,
    65535,
    65536,
    2**31 - 1,
    2**31,
    2**32 - 1,
    2**32,
    2**63,
    2**64,
    -(2**63),
    10**30,
    1.5,
    -0.0,
    1e308,
    4094,
    4095,
    68,
    67,
]


def random_json(rng: random.Random, depth: int = 0):
    pick = rng.random()
    if depth > 3 or pick < 0.35:
        return rng.choice([None, True, False, *SPECIAL_NUMBERS, *SPECIAL_STRINGS])
    if pick < 0.55:
        return [random_json(rng, depth + 1) for _ in range(rng.randint(0, 3))]
    if pick < 0.75:
        keys = [
            "address",
            "gateway",
            "dst",
            "gw",
            "hostPort",
            "containerPort",
            "protocol",
            "hostIP",
            "name",
            "interface",
            "ips",
            "mac",
            "cni",
            "subnet",
            "rangeStart",
            "containerID",
            "ifname",
            "x",
        ]
        return {rng.choice(keys): random_json(rng, depth + 1) for _ in range(rng.randint(0, 3))}
    return rng.choice(SPECIAL_STRINGS)


def _paths(obj, prefix=()):
    """Every (path, value) inside a config, to pick a key to mutate."""
    yield prefix, obj
    if isinstance(obj, dict):
        for key, value in obj.items():
            yield from _paths(value, (*prefix, key))
    elif isinstance(obj, list):
        for i, value in enumerate(obj):
            yield from _paths(value, (*prefix, i))


EXTRA_KEYS = [
    ("args",),
    ("args", "cni"),
    ("args", "cni", "ips"),
    ("args", "cni", "mac"),
    ("runtimeConfig",),
    ("runtimeConfig", "ips"),
    ("runtimeConfig", "mac"),
    ("runtimeConfig", "portMappings"),
    ("runtimeConfig", "bandwidth"),
    ("runtimeConfig", "ipRanges"),
    ("prevResult",),
    ("prevResult", "interfaces"),
    ("prevResult", "ips"),
    ("prevResult", "routes"),
    ("prevResult", "dns"),
    ("cni.dev/valid-attachments",),
    ("ipam",),
    ("ipam", "type"),
    ("ipam", "resolvConf"),
    ("ipam", "addresses"),
    ("ipam", "ranges"),
    ("dns",),
    ("capabilities",),
    ("mtu",),
    ("name",),
    ("cniVersion",),
    ("unknownKey",),
    ("sysctl",),
    ("owner",),
    ("group",),
    ("mac",),
    ("vlanId",),
    ("master",),
]


def _set(conf: dict, path: tuple, value) -> None:
    node = conf
    for key in path[:-1]:
        if isinstance(node, dict):
            node = (
                node.setdefault(key, {})
                if not isinstance(node.get(key), (dict, list))
                else node[key]
            )
        elif isinstance(node, list) and isinstance(key, int) and key < len(node):
            node = node[key]
        else:
            return
    last = path[-1]
    if isinstance(node, dict):
        node[last] = value
    elif isinstance(node, list) and isinstance(last, int) and last < len(node):
        node[last] = value


def pin_data_dirs(conf, data_dir: str) -> None:
    """Keep every state directory inside the campaign's: a mutated `ipam` without dataDir would
    make host-local write to /var/lib/cni/networks, tuning to /run/cni/tuning."""
    if isinstance(conf, dict):
        if isinstance(conf.get("ipam"), dict):
            conf["ipam"]["dataDir"] = os.path.join(data_dir, "ipam")
        conf["dataDir"] = os.path.join(data_dir, "tuning")


def mutate_config(rng: random.Random, conf: dict, data_dir: str) -> dict:
    conf = json.loads(json.dumps(conf))
    for _ in range(rng.randint(1, 3)):
        if rng.random() < 0.5:
            # dataDir stays where the campaign put it: a random one could be "/" on the real disk.
            paths = [p for p, _ in _paths(conf) if p and "dataDir" not in p]
            path = rng.choice(paths)
        else:
            path = rng.choice(EXTRA_KEYS)
        _set(conf, path, random_json(rng))
    pin_data_dirs(conf, data_dir)
    return conf


def encode(conf) -> bytes:
    return json.dumps(conf, ensure_ascii=True).encode()


def mutate_stdin(rng: random.Random, conf: dict, data_dir: str) -> bytes:
    pick = rng.random()
    if pick < 0.75:
        return encode(mutate_config(rng, conf, data_dir))
    text = encode(conf)
    if pick < 0.82:
        return text[: rng.randint(0, len(text))]
    if pick < 0.87:  # deep nesting in an unknown key
        return text[:-1] + b', "deep": ' + DEEP.encode() + b"}"
    if pick < 0.92:  # random bytes, never inside the data dir paths
        marker = data_dir.encode()
        pos = rng.randint(0, len(text))
        while any(i <= pos <= i + len(marker) for i in _spans(text, marker)):
            pos = rng.randint(0, len(text))
        return (
            text[:pos] + bytes(rng.randint(0, 255) for _ in range(rng.randint(1, 4))) + text[pos:]
        )
    return rng.choice(
        [
            b"",
            b"null",
            b"[]",
            b"1",
            b'"x"',
            b"{}",
            b"\xff\xfe",
            b'{"name": 1}',
            b'{"name": "fznet", "cniVersion": "\\ud800"}',
        ]
    )


# The example classes of issue #16, each applied to every plugin: (what, {key path: value}, env).
SEEDS = [
    ("surrogate in name", {("name",): "\ud800"}, {}),
    ("surrogate in cniVersion", {("cniVersion",): "\ud800"}, {}),
    ("surrogate in ipam.type", {("ipam", "type"): "\ud800"}, {}),
    ("prevResult interfaces 1", {("prevResult", "interfaces"): 1}, {}),
    ("prevResult routes 5", {("prevResult", "routes"): 5}, {}),
    ("prevResult ips 5", {("prevResult", "ips"): 5}, {}),
    ("prevResult ips [null]", {("prevResult", "ips"): [None]}, {}),
    ("args cni 1.5", {("args",): {"cni": 1.5}}, {}),
    ("args cni ips 7", {("args",): {"cni": {"ips": 7, "mac": 7}}}, {}),
    ("runtimeConfig ips 7", {("runtimeConfig",): {"ips": 7}}, {}),
    ("runtimeConfig mac 7", {("runtimeConfig",): {"mac": 7}}, {}),
    ("runtimeConfig 7", {("runtimeConfig",): 7}, {}),
    ("addresses [null]", {("ipam", "addresses"): [None]}, {}),
    ("portMappings [null]", {("runtimeConfig", "portMappings"): [None]}, {}),
    ("sysctl null value", {("sysctl",): {"net.core.somaxconn": None}}, {}),
    ("mtu 2**32", {("mtu",): 4294967296}, {}),
    ("mtu -1", {("mtu",): -1}, {}),
    ("owner 2**31", {("owner",): 2147483648}, {}),
    ("group -5", {("group",): -5}, {}),
    ("vlanId 2**40", {("vlanId",): 2**40}, {}),
    (
        "hostIP 1.2.3.4.5",
        {
            ("runtimeConfig", "portMappings"): [
                {"hostPort": 8080, "containerPort": 80, "protocol": "tcp", "hostIP": "1.2.3.4.5"}
            ]
        },
        {},
    ),
    (
        "hostPort 70000",
        {
            ("runtimeConfig", "portMappings"): [
                {"hostPort": 70000, "containerPort": 80, "protocol": "tcp"}
            ]
        },
        {},
    ),
    ("NUL in resolvConf", {("ipam", "resolvConf"): "/etc/re\x00solv.conf"}, {}),
    ("NUL in dataDir", {("dataDir",): "/tmp/a\x00b"}, {}),
    ("NUL in ipam.dataDir", {("ipam", "dataDir"): "/tmp/a\x00b"}, {}),
    *((f"{len(cid)}-char container ID", {}, {"CNI_CONTAINERID": cid}) for cid in LONG_LEGAL_NAMES),
    *((f"{len(net)}-char network name", {("name",): net}, {}) for net in NETWORK_NAMES[1:]),
    ("dataDir a regular file", {("dataDir",): "/etc/hostname"}, {}),
    ("ipam.dataDir a regular file", {("ipam", "dataDir"): "/etc/hostname"}, {}),
    ("deep nesting", {("deep",): "DEEP"}, {}),
    ("bandwidth huge", {("ingressRate",): 2**70, ("egressBurst",): -1}, {}),
    ("bandwidth runtime null", {("runtimeConfig",): {"bandwidth": {"ingressRate": None}}}, {}),
    ("ranges [[null]]", {("ipam", "ranges"): [[None]]}, {}),
    ("ranges [[{subnet: 5}]]", {("ipam", "ranges"): [[{"subnet": 5, "rangeStart": 7}]]}, {}),
    ("routes [null]", {("ipam", "routes"): [None]}, {}),
    ("dns wrong", {("dns",): {"nameservers": [1]}}, {}),
    ("ipam.dns wrong", {("ipam", "dns"): {"nameservers": "x"}}, {}),
    ("mac int", {("mac",): 5}, {}),
    ("CNI_ARGS IP bad", {}, {"CNI_ARGS": "IgnoreUnknown=1;IP=1.2.3.4.5"}),
    ("CNI_ARGS MAC bad", {}, {"CNI_ARGS": "IgnoreUnknown=1;MAC=zz"}),
    ("netns /proc/1", {}, {"CNI_NETNS": "/proc/1/ns/net"}),
    ("netns a file", {}, {"CNI_NETNS": "/etc/hostname"}),
    ("table 2**32", {("table",): 2**32}, {}),
]


FIELD_VALUES = [
    "a\x00b",
    "x" * 300,
    "../../x",
    "\ud800",
    "",
    "/",
    2**40,
    -1,
    1.5,
    True,
    None,
    [],
    {},
    [None],
    {"a": None},
]


def _struct_fields(cls, prefix=()):
    from libcni.protocol import config

    for key, kind in config._fields(cls).items():
        if key == "dataDir":
            continue
        yield (*prefix, key)
        if isinstance(kind, type) and issubclass(kind, config.Struct):
            yield from _struct_fields(kind, (*prefix, key))


def field_inputs(name: str, module, data_dir: str, netns: str, cni_path: str):
    """Type-aware inputs: every field of every config class in the plugin's module, set to each
    of FIELD_VALUES (wrong types, NUL, surrogates, huge and negative numbers, path tricks)."""
    from libcni.protocol import config

    classes = [
        c for c in vars(module).values() if isinstance(c, type) and issubclass(c, config.NetConf)
    ]
    paths = sorted({path for cls in classes for path in _struct_fields(cls)})
    for path in paths:
        for value in FIELD_VALUES:
            conf = full_config(name, data_dir, netns)
            if path[0] == "ipam" and not isinstance(conf.get("ipam"), dict):
                continue
            _set(conf, path, value)
            pin_data_dirs(conf, data_dir)
            env = base_env("ADD", netns, cni_path, ifname_for(name))
            yield ".".join(map(str, path)), "ADD", encode(conf), env


COMMON_KEYS = ("name", "cniVersion", "type", "args", "runtimeConfig", "dns", "capabilities", "deep")
# Keys a plugin reads that its base config leaves at the default.
MORE_KEYS = {
    "bridge": ("mtu",),
    "ipvlan": ("mtu",),
    "macvlan": ("mtu", "mac"),
    "vlan": ("mtu",),
    "tap": ("mac",),
    "tuning": ("mac",),
    "sbr": ("table",),
    "vrf": ("table",),
    "bandwidth": ("egressBurst",),
    "host-device": ("mtu",),
    "dummy": ("mtu",),
}


def relevant(name: str, changes: dict) -> bool:
    """Whether a seed touches keys plugin `name` reads (else it is just a good config again)."""
    known = (*COMMON_KEYS, *base_configs("/")[name], *MORE_KEYS.get(name, ()))
    return all(path[0] in known for path in changes)


def seeded_inputs(name: str, data_dir: str, netns: str, cni_path: str):
    """Every seed class that applies to plugin `name`, on ADD (and GC with bad attachments)."""
    for what, changes, env_changes in SEEDS:
        if not relevant(name, changes):
            continue
        conf = full_config(name, data_dir, netns)
        for path, value in changes.items():
            _set(conf, path, value)
        stdin = encode(conf)
        if ("deep",) in changes:
            stdin = stdin.replace(b'"DEEP"', DEEP.encode())
        env = dict(base_env("ADD", netns, cni_path, ifname_for(name)), **env_changes)
        yield what, "ADD", stdin, env
    for what, attachments in (
        ("string", "x"),
        ("object", {"containerID": "a"}),
        ("missing", None),
        ("[null]", [None]),
        ("[{containerID: 1}]", [{"containerID": 1}]),
    ):
        conf = full_config(name, data_dir, netns, "1.1.0")
        if attachments is not None:
            conf["cni.dev/valid-attachments"] = attachments
        yield (
            f"GC attachments {what}",
            "GC",
            encode(conf),
            base_env("GC", netns, cni_path, ifname_for(name)),
        )


# Plugins that name state files after the container ID, network or ifname (the runtime's cache
# is libcni's: tests/robustness/test_long_ids.py). The others meet long names in the random
# inputs, where only a clean answer is required (netfilter comments, for one, hold 256 bytes).
FILE_KEEPING = ["firewall", "tuning", "host-local", "dhcp"]


def long_name_inputs(name: str, data_dir: str, netns: str, cni_path: str):
    """(what, ADD env, stdin) for every legal long container ID and network name: plugins that
    keep files named after them must ADD (or refuse with code 7) and DEL them."""
    env = base_env("ADD", netns, cni_path, ifname_for(name))
    for cid in LONG_LEGAL_NAMES:
        yield (
            f"{len(cid)}-char ID",
            dict(env, CNI_CONTAINERID=cid),
            encode(full_config(name, data_dir, netns)),
        )
    for network in NETWORK_NAMES[1:]:
        conf = dict(full_config(name, data_dir, netns), name=network)
        yield f"{len(network)}-char network", env, encode(conf)


def _spans(text: bytes, marker: bytes) -> list:
    found, start = [], text.find(marker)
    while start >= 0:
        found.append(start)
        start = text.find(marker, start + 1)
    return found


CONTAINER_IDS = [
    "fzctr1",
    *LONG_LEGAL_NAMES,
    "../etc",
    "a/b",
    "-bad",
    "a b",
    "ctr\u00e9",
    "a" * 64,
    "fz.ctr_2-3",
    ".",
    "fzctr1\n",
]
IFNAMES = [
    "eth0",
    CHAIN_IFNAME,
    "x" * 15,
    "x" * 16,
    "a/b",
    ".",
    "..",
    "e:1",
    "lo",
    "eth 0",
    "é",
    "eth1",
]
NETNS_VALUES = [
    "CONTAINER",
    "",
    "/nonexistent/ns",
    "/dev/null",
    "/tmp",
    "/proc/self/ns/net",
    "/proc/1/ns/net",
    "relative/ns",
]
CNI_ARGS = [
    "",
    "IgnoreUnknown=1",
    "IP=10.250.0.9",
    "IP=1.2.3.4.5",
    "MAC=zz",
    "MAC=00:11:22:33:44:55",
    "IgnoreUnknown=maybe",
    ";",
    "a=b=c",
    "IgnoreUnknown=1;K8S_POD_NAME=x;IP=10.250.0.10",
    "=",
    "IP=",
    "IgnoreUnknown=1;MAC=02:00:00:00:00:01",
    "GATEWAY=x;IP=10.250.0.11/24",
]
COMMANDS = ["ADD"] * 6 + ["DEL", "DEL", "CHECK", "GC", "STATUS", "VERSION", "BOGUS", ""]


def mutate_env(rng: random.Random, env: dict, netns: str) -> dict:
    env = dict(env)
    if rng.random() < 0.3:
        env["CNI_CONTAINERID"] = rng.choice(CONTAINER_IDS)
    if rng.random() < 0.2:
        env["CNI_IFNAME"] = rng.choice(IFNAMES)
    if rng.random() < 0.2:
        value = rng.choice(NETNS_VALUES)
        env["CNI_NETNS"] = netns if value == "CONTAINER" else value
    if rng.random() < 0.4:
        env["CNI_ARGS"] = rng.choice(CNI_ARGS)
    if rng.random() < 0.05:
        env.pop(rng.choice(sorted(env)), None)
    return env


# -- checking an answer ----------------------------------------------------------------------


class Verdict:
    """What one call answered; `problem` is empty when the answer is a valid CNI answer."""

    def __init__(self, rc: int, stdout: bytes, stderr: str, command: str):
        self.rc, self.stdout, self.stderr, self.command = rc, stdout, stderr, command
        self.problem = ""
        self.traceback = "Traceback (most recent call last)" in stderr
        self.json = None
        try:
            text = stdout.decode("utf-8")
            self.json = json.loads(text) if text.strip() else None
        except ValueError as err:
            self.problem = f"stdout is not UTF-8 JSON: {err}"
            return
        if self.traceback:
            self.problem = "a traceback on stderr (an unexpected exception)"
        elif "Traceback" in text:
            self.problem = "exception text on stdout"
        elif rc != 0:
            if not isinstance(self.json, dict):
                self.problem = f"exit {rc} without an error JSON"
            elif not isinstance(self.json.get("code"), int) or isinstance(self.json["code"], bool):
                self.problem = "error JSON without an int code"
            elif not isinstance(self.json.get("msg"), str):
                self.problem = "error JSON without a str msg"
        elif command == "ADD":
            if not isinstance(self.json, dict) or not isinstance(self.json.get("cniVersion"), str):
                self.problem = "ADD succeeded without a result"
        elif command == "VERSION":
            if not isinstance(self.json, dict) or "supportedVersions" not in self.json:
                self.problem = "VERSION without version info"
        elif stdout.strip() and command in ("DEL", "CHECK", "GC", "STATUS"):
            self.problem = f"{command} succeeded and printed something"

    @property
    def ok(self) -> bool:
        return not self.problem

    def __repr__(self):
        return (
            f"Verdict(rc={self.rc}, problem={self.problem!r}, stdout={self.stdout[:500]!r}, "
            f"stderr={self.stderr[-1500:]!r})"
        )


class InProcess:
    """Runs plugins through skel.dispatch in this process; IPAM delegation stays in-process."""

    def __init__(self):
        import importlib

        import libcni
        from libcni.delegation import invoke

        self.table = plugins()
        # Restored by close(): other tests in the same process see the real lookup again.
        self._saved = (libcni.SIBLINGS, invoke.sibling_module)
        libcni.SIBLINGS = self.table
        invoke.sibling_module = lambda path: self.table.get(os.path.basename(path))
        self.modules = {
            name: importlib.import_module(module).PLUGIN
            for name, module in self.table.items()
            if name != "cnitool"
        }

    def close(self) -> None:
        import libcni
        from libcni.delegation import invoke

        libcni.SIBLINGS, invoke.sibling_module = self._saved

    def __call__(self, name: str, env: dict, stdin: bytes) -> Verdict:
        from libcni.protocol import skel

        raw = io.BytesIO()
        out = io.TextIOWrapper(raw, encoding="utf-8", errors="strict")
        err = io.StringIO()
        rc = skel.dispatch(self.modules[name], env, io.BytesIO(stdin), out, err)
        out.flush()
        return Verdict(rc, raw.getvalue(), err.getvalue(), env.get("CNI_COMMAND", ""))


class Frozen:
    """Runs the executables in `bin_dir` as a runtime would."""

    def __init__(self, bin_dir: str):
        self.bin_dir = bin_dir

    def __call__(self, name: str, env: dict, stdin: bytes) -> Verdict:
        full = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")}
        full.update({k: v for k, v in env.items() if "\x00" not in k + v})
        proc = subprocess.run(
            [os.path.join(self.bin_dir, name)],
            input=stdin,
            env=full,
            capture_output=True,
            timeout=60,
        )
        return Verdict(
            proc.returncode,
            proc.stdout,
            proc.stderr.decode(errors="replace"),
            env.get("CNI_COMMAND", ""),
        )


def base_env(command: str, netns: str, cni_path: str, ifname: str) -> dict:
    return {
        "CNI_COMMAND": command,
        "CNI_CONTAINERID": "fzctr1",
        "CNI_NETNS": netns,
        "CNI_IFNAME": ifname,
        "CNI_ARGS": "",
        "CNI_PATH": cni_path,
    }


def ifname_for(name: str) -> str:
    chained = ("portmap", "tuning", "bandwidth", "firewall", "sbr", "vrf")
    return CHAIN_IFNAME if name in chained else "eth0"


# -- state, for "nothing left behind" -------------------------------------------------------

IP_BATCH = (
    "link show\naddress show\nroute show table all\n-6 route show table all\n"
    "rule show\n-6 rule show\n"
)


def snapshot(container_ns: str, data_dir: str) -> str:
    """Links, addresses, routes, rules, qdiscs of both namespaces, netfilter of the host (the
    calling thread's netns), and the state files under `data_dir`."""
    name = os.path.basename(container_ns)
    script = (
        "ip -br -batch - <<EOF\n" + IP_BATCH + "EOF\n"
        f"ip -br -n {name} -batch - <<EOF\n" + IP_BATCH + "EOF\n"
        f"tc qdisc show; tc -n {name} qdisc show; "
        "iptables-save | grep -v '^[#:]'; ip6tables-save | grep -v '^[#:]'; nft list ruleset"
    )
    out = subprocess.run(["sh", "-c", script], capture_output=True, text=True).stdout
    out = "\n".join(_stable(line) for line in out.splitlines())
    files = []
    for root, _dirs, names in os.walk(data_dir):
        files += [
            os.path.join(root, n)
            for n in names
            if n != "lock" and not n.startswith("last_reserved_ip.")
        ]
    return out + "\n" + "\n".join(sorted(files))


_VOLATILE = None


def _stable(line: str) -> str:
    """A snapshot line without what changes by itself: link states and flags, MACs (a bridge
    takes its ports'), `linkdown`, rule counters."""
    global _VOLATILE
    if _VOLATILE is None:
        import re

        _VOLATILE = re.compile(
            r"<[^>]*>|\b(UP|DOWN|UNKNOWN|LOWERLAYERDOWN|DORMANT|linkdown)\b"
            r"|([0-9a-f]{2}:){5}[0-9a-f]{2}|counter packets \d+ bytes \d+|fe80::\S+"
        )
    if line.startswith(("fe80::", "local fe80::", "multicast ff00::", "ff00::")):
        return ""  # link-local and multicast routes follow the carrier
    return " ".join(_VOLATILE.sub("", line).split())


def diff(before: str, after: str) -> list:
    old = set(before.splitlines())
    return [line for line in after.splitlines() if line not in old]


# Codes of errors found while decoding and validating, before any kernel or file work.
EARLY_CODES = (1, 4, 6, 7)


class Campaign:
    """One input after another against `runner`; counts answers by kind.

    check_leaks: "all" snapshots around every ADD, "late" keeps the snapshot only for ADDs
    that failed past validation (a code outside EARLY_CODES; callers then compare a snapshot
    around a whole batch for the others), "" never."""

    def __init__(self, runner, netns: str, data_dir: str, cni_path: str, check_leaks: str):
        self.runner, self.netns, self.data_dir = runner, netns, data_dir
        self.cni_path, self.check_leaks = cni_path, check_leaks
        self.counts = {
            "inputs": 0,
            "ok": 0,
            "errors": 0,
            "successes": 0,
            "tracebacks": 0,
            "no_json": 0,
            "other_problems": 0,
            "leaks": 0,
        }
        self.failures: list = []

    def one(self, name: str, command: str, stdin: bytes, env: dict) -> Verdict:
        before = (
            snapshot(self.netns, self.data_dir) if self.check_leaks and command == "ADD" else ""
        )
        verdict = self.runner(name, env, stdin)
        self.counts["inputs"] += 1
        if verdict.ok:
            self.counts["ok"] += 1
        elif verdict.traceback:
            self.counts["tracebacks"] += 1
        elif verdict.json is None:
            self.counts["no_json"] += 1
        else:
            self.counts["other_problems"] += 1
        if not verdict.ok:
            self.failures.append((name, command, stdin[:2000], env, verdict))
        if verdict.rc == 0 and command == "ADD":
            self.counts["successes"] += 1
            self.runner(name, dict(env, CNI_COMMAND="DEL"), stdin)
        elif verdict.rc != 0:
            self.counts["errors"] += 1
            early = isinstance(verdict.json, dict) and verdict.json.get("code") in EARLY_CODES
            if before and not (early and self.check_leaks == "late"):
                left = diff(before, snapshot(self.netns, self.data_dir))
                if left:
                    self.counts["leaks"] += 1
                    self.failures.append((name, command, stdin[:2000], env, f"left: {left}"))
        return verdict

    def random_input(self, rng: random.Random, name: str):
        command = rng.choice(COMMANDS)
        version = rng.choice(["1.0.0", "1.0.0", "1.1.0", "0.4.0", "0.3.1", "0.2.0"])
        conf = full_config(name, self.data_dir, self.netns, version)
        if command == "GC":
            conf["cniVersion"] = "1.1.0"
            conf["cni.dev/valid-attachments"] = [{"containerID": "fzctr1", "ifname": "eth0"}]
        env = base_env(command, self.netns, self.cni_path, ifname_for(name))
        if rng.random() < 0.1:
            conf["name"] = rng.choice(NETWORK_NAMES)
        if rng.random() < 0.1:
            stdin = encode(conf)
        else:
            stdin = mutate_stdin(rng, conf, self.data_dir)
        if rng.random() < 0.5:
            env = mutate_env(rng, env, self.netns)
        return env.get("CNI_COMMAND", ""), stdin, env


def setup_namespace_devices(container_ns: str) -> None:
    """The links the base configs name (run inside the host netns; no dummy module needed)."""
    for dev in (HOST_MASTER, HOST_DEVICE):
        subprocess.run(
            ["ip", "link", "add", dev, "type", "veth", "peer", dev + "p"], stderr=subprocess.DEVNULL
        )
        subprocess.run(["ip", "link", "set", dev, "up"])
    subprocess.run(["ip", "link", "set", "lo", "up"])
    name = os.path.basename(container_ns)
    subprocess.run(
        ["ip", "-n", name, "link", "add", CHAIN_IFNAME, "type", "veth", "peer", CHAIN_IFNAME + "p"],
        stderr=subprocess.DEVNULL,
    )
    subprocess.run(["ip", "-n", name, "link", "set", CHAIN_IFNAME, "up"])
    subprocess.run(["ip", "-n", name, "addr", "replace", f"{SUBNET}.77/24", "dev", CHAIN_IFNAME])


def main(argv=None) -> int:
    """A campaign from inside a host netns made for it (see `make fuzz`)."""
    import argparse
    import importlib
    import time

    parser = argparse.ArgumentParser()
    parser.add_argument("--inputs", type=int, default=20000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--frozen", default="", help="bin dir of the frozen executables")
    parser.add_argument("--container-netns", required=True)
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--cni-path", required=True)
    parser.add_argument(
        "--leaks",
        default="",
        choices=["", "all", "late"],
        help="check failed ADDs for leftovers (all, or past validation only)",
    )
    parser.add_argument("--show", type=int, default=10)
    args = parser.parse_args(argv)
    os.chdir(args.data_dir)  # a relative path in a mutated config lands here
    setup_namespace_devices(args.container_netns)
    runner = Frozen(args.frozen) if args.frozen else InProcess()
    campaign = Campaign(runner, args.container_netns, args.data_dir, args.cni_path, args.leaks)
    rng = random.Random(args.seed)
    names = [n for n in plugins() if n != "cnitool"]
    started = time.monotonic()
    for name in names:
        for _what, command, stdin, env in seeded_inputs(
            name, args.data_dir, args.container_netns, args.cni_path
        ):
            campaign.one(name, command, stdin, env)
        if not args.frozen:  # the frozen campaign is about the executables, not the fields
            module = importlib.import_module(plugins()[name])
            for _what, command, stdin, env in field_inputs(
                name, module, args.data_dir, args.container_netns, args.cni_path
            ):
                campaign.one(name, command, stdin, env)
    for i in range(args.inputs):
        name = names[i % len(names)]
        command, stdin, env = campaign.random_input(rng, name)
        campaign.one(name, command, stdin, env)
    elapsed = time.monotonic() - started
    for failure in campaign.failures[: args.show]:
        print(repr(failure), file=sys.stderr)
    print(
        json.dumps(
            dict(
                campaign.counts,
                plugins=len(names),
                seconds=round(elapsed, 1),
                mode="frozen" if args.frozen else "in-process",
                seed=args.seed,
                leaks_checked=args.leaks or "never",
            )
        )
    )
    bad = sum(campaign.counts[k] for k in ("tracebacks", "no_json", "other_problems", "leaks"))
    return 1 if bad else 0


def in_namespaces(argv: list) -> int:
    """Create a host and a container netns (unique names), run main() inside the host one,
    delete both afterwards, also on failure."""
    import tempfile

    from kit.mountns import PrivateMounts

    # Like the pytest session: a mutated config without dataDir writes a tmpfs, not the machine.
    mounts = PrivateMounts()
    mounts.enter()
    tag = f"fz{os.getpid() % 100000}"
    host, container = f"{tag}h", f"{tag}c"
    data_dir = tempfile.mkdtemp(prefix="pycni-fuzz-")
    cni_path = tempfile.mkdtemp(prefix="pycni-fuzz-bin-")
    import runpy

    runpy.run_path(os.path.join(REPO, "build", "srcbin.py"))["write_launchers"](cni_path)
    try:
        for ns in (host, container):
            subprocess.run(["ip", "netns", "add", ns], check=True)
        path = ""
        if "--frozen" in argv:  # absolute: the campaign runs from inside its data dir
            at = argv.index("--frozen") + 1
            path = argv[at] = os.path.abspath(argv[at])
        return subprocess.run(
            [
                "ip",
                "netns",
                "exec",
                host,
                sys.executable,
                os.path.abspath(__file__),
                *argv,
                "--container-netns",
                f"/var/run/netns/{container}",
                "--data-dir",
                data_dir,
                "--cni-path",
                path or cni_path,
            ],
        ).returncode
    finally:
        for ns in (container, host):
            subprocess.run(["ip", "netns", "del", ns], stderr=subprocess.DEVNULL)
        import shutil

        shutil.rmtree(data_dir, ignore_errors=True)
        shutil.rmtree(cni_path, ignore_errors=True)
        left = mounts.leftovers()
        mounts.close()
        if left:
            print(f"the machine's CNI paths changed during the campaign: {left}", file=sys.stderr)
            sys.exit(1)


if __name__ == "__main__":
    if "--container-netns" in sys.argv:
        sys.exit(main())
    sys.exit(in_namespaces(sys.argv[1:]))


class InProcessWorld:
    """A host netns (this thread inside it, with the master and host-device links of
    `setup_namespace_devices`) and a container netns, both made by `factory` with names from
    `tag`, and an in-process runner. Close it (or use `with`)."""

    def __init__(self, factory, data_dir: str, cni_path: str, tag: str):
        from libcni.kernel import netns

        self.host = factory(f"{tag}h")
        self.container = factory(f"{tag}c")
        self.data_dir = data_dir
        self.cni_path = cni_path
        self.inside = netns.entered(self.host)
        self.inside.__enter__()
        try:
            setup_namespace_devices(self.container)
            self.runner = InProcess()
        except BaseException:
            self.inside.__exit__(None, None, None)
            raise

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.runner.close()
        self.inside.__exit__(None, None, None)
