"""What `cnitool doctor` looks at beyond the configs: kernel features, netfilter tools, daemon
sockets, the result cache and host-local's reservations. Read-only towards the node: kernel
features are probed by creating links and qdiscs in a throwaway netns of our own, never in
the root namespace; netfilter tools are asked for their version only.
"""

import os
import shutil
import subprocess
import uuid

# What each plugin needs from the kernel: (module, how to try it in a scratch netns that has
# a veth pair dp0/dp1). A module is there if it is loaded, built in or loadable (the kernel
# loads rtnl-link-* and sch_* modules on demand).
KERNEL_NEEDS: dict = {
    "vlan": [("8021q", ["link", "add", "dpvlan", "link", "dp0", "type", "vlan", "id", "5"])],
    "ipvlan": [("ipvlan", ["link", "add", "dpipvl", "link", "dp0", "type", "ipvlan"])],
    "macvlan": [("macvlan", ["link", "add", "dpmacvl", "link", "dp0", "type", "macvlan"])],
    "vrf": [("vrf", ["link", "add", "dpvrf", "type", "vrf", "table", "10"])],
    "dummy": [("dummy", ["link", "add", "dpdummy", "type", "dummy"])],
    "bridge": [("bridge", ["link", "add", "dpbr", "type", "bridge"])],
    "tap": [("tun", ["tuntap", "add", "dptap", "mode", "tap"])],
    "bandwidth": [
        ("ifb", ["link", "add", "dpifb", "type", "ifb"]),
        (
            "sch_tbf",
            [
                "tc",
                "qdisc",
                "add",
                "dev",
                "dp0",
                "root",
                "tbf",
                "rate",
                "1mbit",
                "burst",
                "32k",
                "latency",
                "50ms",
            ],
        ),
        ("sch_ingress", ["tc", "qdisc", "add", "dev", "dp1", "ingress"]),
    ],
}
KCONFIG = {
    "8021q": "CONFIG_VLAN_8021Q",
    "ipvlan": "CONFIG_IPVLAN",
    "macvlan": "CONFIG_MACVLAN",
    "vrf": "CONFIG_NET_VRF",
    "dummy": "CONFIG_DUMMY",
    "bridge": "CONFIG_BRIDGE",
    "tun": "CONFIG_TUN",
    "ifb": "CONFIG_IFB",
    "sch_tbf": "CONFIG_NET_SCH_TBF",
    "sch_ingress": "CONFIG_NET_SCH_INGRESS",
}
# Where module evidence lives; the doctor's tests point these at scratch files.
PROC_MODULES = "/proc/modules"
SYS_MODULE = "/sys/module"
MODULES_DIR = "/lib/modules"
PYCNI_SOCKET = "/run/pycni/pycni.sock"
DHCP_SOCKET = "/run/pycni/dhcp.sock"  # ipam/dhcp's default (not upstream's /run/cni/dhcp.sock)
SBIN_PATH = "/usr/local/sbin:/usr/sbin:/sbin:/usr/local/bin:/usr/bin:/bin"


def _module_name(text: str) -> str:
    name = os.path.basename(text.strip())
    for suffix in (".xz", ".zst", ".gz"):
        name = name.removesuffix(suffix)
    return name.removesuffix(".ko").replace("-", "_")


class Modules:
    """The kernel's modules as files show them: loaded, built in, loadable."""

    def __init__(self, proc_modules=PROC_MODULES, sys_module=SYS_MODULE, modules_dir=None):
        if modules_dir is None:
            modules_dir = os.path.join(MODULES_DIR, os.uname().release)
        self.known = set()
        self.have_lists = False
        try:
            with open(proc_modules) as f:
                self.known |= {line.split()[0].replace("-", "_") for line in f if line.strip()}
        except OSError:
            pass
        try:
            self.known |= {name.replace("-", "_") for name in os.listdir(sys_module)}
        except OSError:
            pass
        for listing in ("modules.builtin", "modules.dep"):
            try:
                with open(os.path.join(modules_dir, listing)) as f:
                    self.known |= {_module_name(line.split(":")[0]) for line in f if line.strip()}
                self.have_lists = True
            except OSError:
                pass

    def has(self, module: str) -> bool:
        return module.replace("-", "_") in self.known


def probe_in_scratch_netns(tries: list) -> dict:
    """{module: True/False/None} by trying each thing in a netns made for it (None: unclear)."""
    name = f"pycni-doctor-{uuid.uuid4().hex[:8]}"
    env = {"PATH": SBIN_PATH}
    found: dict = {}
    if subprocess.run(["ip", "netns", "add", name], capture_output=True, env=env).returncode:
        return {module: None for module, _ in tries}
    try:
        subprocess.run(
            ["ip", "-n", name, "link", "add", "dp0", "type", "veth", "peer", "name", "dp1"],
            capture_output=True,
            env=env,
        )
        for module, argv in tries:
            command = (
                ["tc", "-n", name, *argv[1:]] if argv[0] == "tc" else ["ip", "-n", name, *argv]
            )
            proc = subprocess.run(command, capture_output=True, text=True, env=env)
            text = proc.stderr.lower()
            if proc.returncode == 0:
                found[module] = True
            elif (
                "unknown device type" in text or "not supported" in text or "unknown qdisc" in text
            ):
                found[module] = False
            elif argv[0] == "tuntap" and ("no such" in text or "failed to open" in text):
                found[module] = False
            else:
                found[module] = None
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True, env=env)
    return found


def kernel_features(plugin_types, modules: Modules, probe: bool) -> list:
    """[(plugin type, module, True/False/None)] for what the configured plugins need."""
    needed = [
        (t, m, argv) for t in sorted(set(plugin_types)) for m, argv in KERNEL_NEEDS.get(t, [])
    ]
    unclear = [(m, argv) for _, m, argv in needed if not modules.has(m)]
    probed: dict = {}
    if unclear and probe and os.geteuid() == 0 and shutil.which("ip", path=SBIN_PATH):
        probed = probe_in_scratch_netns(unclear)
    answers: list = []
    for plugin_type, module, _ in needed:
        if modules.has(module):
            answers.append((plugin_type, module, True))
        elif module in probed and probed[module] is not None:
            answers.append((plugin_type, module, probed[module]))
        else:
            # No probe: a module list that does not name it means it is not there.
            answers.append((plugin_type, module, False if modules.have_lists else None))
    return answers


def tool_version(binary: str, path: str) -> str | None:
    """`<binary> --version`'s first line, or None when it is not installed."""
    found = shutil.which(binary, path=path)
    if found is None:
        return None
    try:
        proc = subprocess.run([found, "--version"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    text = (proc.stdout or proc.stderr).strip().splitlines()
    return text[0] if text else binary


def tool_path(path: str) -> str:
    """Where the plugins find the netfilter tools (libcni.netfilter.batch adds the sbin dirs)."""
    return f"{path}:{SBIN_PATH}" if path else SBIN_PATH


def netfilter_tools(path: str) -> dict:
    """{"iptables": version line or None, "nft": version line or None}, found on `path`."""
    iptables = tool_version("iptables", path)
    if iptables is not None and shutil.which("iptables-restore", path=path) is None:
        iptables = None  # our plugins batch every change through iptables-restore
    return {"iptables": iptables, "nft": tool_version("nft", path)}


# Plugins whose work goes through netfilter, and the config key naming their backend.
NETFILTER_USERS = {"portmap": "backend", "firewall": "backend"}
MASQUERADERS = ("bridge", "ptp")


def netfilter_users(netlist) -> list:
    """[(plugin type, backend or "")] of a network's plugins that write netfilter rules."""
    wanted = []
    for plugin in netlist.plugins:
        conf = plugin.conf
        if plugin.type in MASQUERADERS and conf.get("ipMasq") is True:
            wanted.append((plugin.type, str(conf.get("ipMasqBackend") or "")))
        elif plugin.type in NETFILTER_USERS:
            wanted.append((plugin.type, str(conf.get(NETFILTER_USERS[plugin.type]) or "")))
    return wanted


def socket_state(path: str) -> str:
    """ "reachable", "refused" (a socket file nobody serves), or "absent"."""
    import socket

    if not os.path.exists(path):
        return "absent"
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    client.settimeout(2)
    try:
        client.connect(path)
        return "reachable"
    except OSError:
        return "refused"
    finally:
        client.close()


def stale_attachments(attachments: list) -> list:
    """Cached attachments whose netns path is recorded and no longer exists."""
    return [a for a in attachments if a.netns and not os.path.exists(a.netns)]


def reservations(data_dir: str) -> list:
    """[(network, ip, container_id, ifname or None, file)] of host-local's store in data_dir
    (ipam/host_local/store.py writes it: one file per address, "<id>\\r\\n<ifname>")."""
    import ipaddress

    found: list = []
    try:
        networks = sorted(os.listdir(data_dir))
    except OSError:
        return found
    for network in networks:
        directory = os.path.join(data_dir, network)
        try:
            names = sorted(os.listdir(directory))
        except OSError:
            continue
        for name in names:
            try:
                ipaddress.ip_address(name)
                with open(os.path.join(directory, name), newline="") as f:
                    content = f.read().strip()
            except (ValueError, OSError):
                continue
            owner, _, ifname = content.partition("\r\n")
            found.append(
                (
                    network,
                    name,
                    owner.strip(),
                    ifname.strip() or None,
                    os.path.join(directory, name),
                )
            )
    return found


def orphaned_reservations(held: list, attachments: list) -> list:
    """The reservations no cached attachment (same network, container and ifname) owns."""
    owners = {(a.network, a.container_id, a.ifname) for a in attachments}
    ids = {(a.network, a.container_id) for a in attachments}
    orphans = []
    for network, ip, container_id, ifname, path in held:
        owned = (
            (network, container_id) in ids
            if ifname is None
            else ((network, container_id, ifname) in owners)
        )
        if not owned:
            orphans.append((network, ip, container_id, ifname, path))
    return orphans
