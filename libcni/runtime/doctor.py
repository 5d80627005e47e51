"""`cnitool doctor`: read the node the way the kubelet, containerd and podman do, and say in
plain words what keeps pods off the network and how to fix it.

Looks at the config directory (every .conflist/.conf/.json, as libcni loads them), the plugin
directories (each plugin type and IPAM type of each network, and the versions each answers to
VERSION), the kernel features those plugins need, the netfilter tools, the pycni and dhcp
daemon sockets, and the result cache with host-local's reservations. Exit status 0 only when
nothing is wrong; `--json` prints the same report for machines.
"""

import json
import os
from dataclasses import asdict, dataclass, field

from libcni.protocol.errors import CNIError
from libcni.runtime import cache, conflist, nodeprobe, resolution
from libcni.runtime.resolution import ask_version, ipam_types, plugin_types, typed_roles

DEFAULT_CONF_DIR = "/etc/cni/net.d"
# containerd's default bin_dir and Debian's (podman searches both, among others).
DEFAULT_PLUGIN_DIRS = ("/opt/cni/bin", "/usr/lib/cni")

USAGE = "cnitool doctor [--json] [--conf-dir DIR] [--plugin-dir DIR ...] [--cache-dir DIR]"


@dataclass
class Finding:
    """One thing wrong with the node: what, why it matters, how to fix it."""

    check: str  # config, plugin, version, kernel, netfilter, daemon, cache, reservation
    problem: str
    fix: str
    severity: str = "error"  # error: pods fail; warning: something leaks or degrades


@dataclass
class Node:
    """Where to look; every path overridable (flags, NETCONFPATH, CNI_PATH, tests)."""

    conf_dir: str = DEFAULT_CONF_DIR
    plugin_dirs: list = field(default_factory=lambda: list(DEFAULT_PLUGIN_DIRS))
    cache_dir: str = cache.DEFAULT_DIR
    pycni_socket: str = nodeprobe.PYCNI_SOCKET
    dhcp_socket: str = nodeprobe.DHCP_SOCKET
    tool_path: str = nodeprobe.tool_path(os.environ.get("PATH", ""))
    modules: nodeprobe.Modules | None = None
    probe_kernel: bool = True


@dataclass
class Report:
    node: Node
    networks: list = field(default_factory=list)  # NetworkList, in file order
    findings: list = field(default_factory=list)
    facts: list = field(default_factory=list)  # what is fine, said once
    unknowns: list = field(default_factory=list)  # what could not be checked: never "ok"
    resolved: list = field(default_factory=list)  # resolution.Resolved per network and type

    def add(self, check: str, problem: str, fix: str, severity: str = "error") -> None:
        self.findings.append(Finding(check, problem, fix, severity))

    @property
    def ok(self) -> bool:
        return not self.findings


# -- configs, plugins, versions -----------------------------------------------------------


def check_configs(report: Report) -> None:
    conf_dir = report.node.conf_dir
    files = conflist.conf_files(conf_dir, conflist.LIST_EXTENSIONS + conflist.SINGLE_EXTENSIONS)
    if not files:
        where = "does not exist" if not os.path.isdir(conf_dir) else "holds no network config"
        report.add(
            "config",
            f'{conf_dir} {where}: the kubelet reports NetworkReady=false ("cni plugin not '
            'initialized", "no network config found") and the node stays NotReady; podman '
            "falls back to its default network",
            f"install your network add-on, or write a .conflist into {conf_dir} (containerd's "
            "conf_dir, podman's network_config_dir); `cnitool doctor` again when done",
        )
        return
    names: dict = {}
    for path in files:
        try:
            if os.path.splitext(path)[1] in conflist.LIST_EXTENSIONS:
                netlist = conflist.list_from_file(path)
            else:
                netlist = conflist.single_from_file(path)
        except CNIError as err:
            fix = "fix or remove the file: runtimes stop at a file they cannot read, or skip it"
            if 'missing "name"' in err.msg:
                fix = 'add a "name": runtimes look networks up by it'
            details = f" ({err.details})" if err.details else ""
            report.add("config", f"cannot use {err.msg}{details}", fix)
            continue
        if not netlist.name:
            report.add(
                "config",
                f"{path} has no network name",
                'add a "name" (runtimes look networks up by name)',
            )
            continue
        if netlist.name in names:
            report.add(
                "config",
                f'{path} defines network "{netlist.name}" again (first in {names[netlist.name]})',
                "runtimes use the first file in name order only; rename or remove one",
                "warning",
            )
            continue
        names[netlist.name] = path
        report.networks.append(netlist)


def find_plugin(report: Report, plugin_type: str) -> str | None:
    for directory in report.node.plugin_dirs:
        candidate = os.path.join(directory, plugin_type)
        if os.path.isfile(candidate):
            return candidate
    return None


def check_plugins(report: Report) -> None:
    dirs = ":".join(report.node.plugin_dirs)
    answers: dict = {}
    for netlist in report.networks:
        for plugin_type in plugin_types(netlist):
            path = find_plugin(report, plugin_type)
            if path is None:
                report.add(
                    "plugin",
                    f'network "{netlist.name}" needs plugin "{plugin_type}", which is in none '
                    f"of the plugin dirs ({dirs}); every pod on it fails to start",
                    "install it into /opt/cni/bin (pycni's package ships every standard "
                    "plugin), or add its directory to containerd's bin_dir / podman's "
                    "cni_plugin_dirs / CNI_PATH",
                )
                continue
            if not os.access(path, os.X_OK):
                report.add("plugin", f"{path} is not executable", f"chmod 755 {path}")
                continue
            if path not in answers:
                answers[path] = ask_version(path)
            supported, problem = answers[path]
            if problem is not None:
                report.add(
                    "version",
                    f"{path} ({plugin_type}): {problem}; podman skips every network using it",
                    "reinstall the plugin (a truncated or foreign binary answers like this)",
                )
            elif netlist.cni_version and netlist.cni_version not in supported:
                report.add(
                    "version",
                    f'network "{netlist.name}" has cniVersion "{netlist.cni_version}", which '
                    f"{path} does not support (it speaks {', '.join(supported)})",
                    f"set cniVersion in {netlist.path or 'the config'} to one of those, or "
                    "install a plugin build that speaks it",
                )


def check_resolution(report: Report) -> None:
    """Where each plugin resolves and whose it is (resolution.py); its warnings."""
    report.resolved = resolution.resolve(report.networks, report.node.plugin_dirs, typed_roles)
    for problem, fix in resolution.warnings(report.resolved):
        report.add("plugin", problem, fix, "warning")


# -- the node -------------------------------------------------------------------------------


def check_kernel(report: Report) -> None:
    types = [t for netlist in report.networks for t in plugin_types(netlist)]
    modules = report.node.modules or nodeprobe.Modules()
    answers = nodeprobe.kernel_features(types, modules, report.node.probe_kernel)
    for plugin_type, module, present in answers:
        if present is False:
            report.add(
                "kernel",
                f"plugin {plugin_type} needs the kernel's {module} support, which this kernel "
                "lacks (not loaded, not built in, no module to load)",
                f"modprobe {module} (some distributions ship it in linux-modules-extra-*), or "
                f"boot a kernel built with {nodeprobe.KCONFIG.get(module, module)}; until then "
                f"{plugin_type} ADDs fail",
            )
        elif present is None:
            report.unknowns.append(
                f"kernel: could not tell whether {module} ({plugin_type}) is there (no module "
                "list, and no probe: --no-kernel-probe or not root)"
            )


def check_netfilter(report: Report) -> None:
    tools = nodeprobe.netfilter_tools(report.node.tool_path)
    usable = [f"{name} ({line})" for name, line in tools.items() if line]
    report.facts.append(
        "netfilter: " + (", ".join(usable) if usable else "neither iptables nor nft")
    )
    for netlist in report.networks:
        for plugin_type, backend in nodeprobe.netfilter_users(netlist):
            if backend in ("firewalld",):
                continue
            need = "nft" if backend == "nftables" else "iptables" if backend else None
            if (need and tools[need]) or (need is None and usable):
                continue
            report.add(
                "netfilter",
                f'network "{netlist.name}": {plugin_type} writes netfilter rules but '
                f"{need or 'neither iptables (with iptables-restore) nor nft'} is installed",
                "apt-get install iptables (or nftables, with the plugin's backend set to "
                '"nftables")',
            )


def check_daemons(report: Report) -> None:
    node = report.node
    state = nodeprobe.socket_state(node.pycni_socket)
    if state == "refused":
        report.add(
            "daemon",
            f"{node.pycni_socket} exists but nobody answers on it: every plugin call tries "
            "it first, then runs on its own (correct, but without the fast path)",
            "systemctl restart pycni.socket, or remove the stale socket file",
            "warning",
        )
    elif state == "absent" and resolution.daemon_program(report.resolved):
        report.add(
            "daemon",
            f"pycni is installed with its daemon ({resolution.daemon_program(report.resolved)}) "
            f"but no daemon listens on {node.pycni_socket}: every plugin call starts a frozen "
            "program of its own (correct, but without the fast path)",
            "systemctl enable --now pycni.socket (the package's unit), or start the daemon by "
            'hand (README, "Running the daemon")',
            "warning",
        )
    else:
        report.facts.append(f"pycni daemon: {state} ({node.pycni_socket}; optional fast path)")
    uses_dhcp = sorted({n.name for n in report.networks if "dhcp" in ipam_types(n)})
    state = nodeprobe.socket_state(node.dhcp_socket)
    if uses_dhcp and state != "reachable":
        report.add(
            "daemon",
            f"network {', '.join(uses_dhcp)} uses dhcp IPAM but the dhcp daemon "
            f"socket {node.dhcp_socket} is {state}: ADDs fail",
            "systemctl enable --now pycni-dhcp.socket (or run `dhcp daemon`)",
        )
    else:
        report.facts.append(f"dhcp daemon: {state} ({node.dhcp_socket})")


def check_cache(report: Report) -> None:
    try:
        attachments = cache.attachments(report.node.cache_dir)
    except CNIError as err:
        report.add("cache", err.msg, "check the cache directory's permissions", "warning")
        return
    for gone in nodeprobe.stale_attachments(attachments):
        report.add(
            "cache",
            f"cached attachment of container {gone.container_id} ({gone.ifname}) on network "
            f'"{gone.network}": its netns {gone.netns} is gone, so the runtime missed its DEL; '
            "its addresses, rules and host interfaces may still be held",
            f"cnitool del {gone.network} --container-id {gone.container_id} --ifname "
            f"{gone.ifname} --cache-dir {report.node.cache_dir} (DEL works without the netns)",
            "warning",
        )
    # host-local's default dataDir is /var/lib/cni/networks: <cache dir>/networks.
    data_dirs = {os.path.join(report.node.cache_dir, "networks")}
    data_dirs |= {d for n in report.networks for d in ipam_types(n).get("host-local", [])}
    held = [r for d in sorted(data_dirs) for r in nodeprobe.reservations(d)]
    for network, ip, container_id, ifname, path in nodeprobe.orphaned_reservations(
        held, attachments
    ):
        report.add(
            "reservation",
            f'host-local reservation {ip} on network "{network}" (container {container_id}'
            f"{', ' + ifname if ifname else ''}) belongs to no cached attachment: leaked by a "
            "missed DEL, the address stays taken",
            f"if container {container_id} is gone: rm {path} (or `cnitool gc {network} --valid "
            "ID/IFNAME ...` naming every live attachment)",
            "warning",
        )


CHECKS = (
    check_configs,
    check_plugins,
    check_resolution,
    check_kernel,
    check_netfilter,
    check_daemons,
    check_cache,
)


def examine(node: Node) -> Report:
    report = Report(node)
    for check in CHECKS:
        check(report)
    return report


# -- output and command line ----------------------------------------------------------------


def as_json(report: Report) -> dict:
    node = report.node
    return {
        "ok": report.ok,
        "confDir": node.conf_dir,
        "pluginDirs": node.plugin_dirs,
        "cacheDir": node.cache_dir,
        "networks": [n.name for n in report.networks],
        "resolution": [asdict(r) for r in report.resolved],
        "findings": [asdict(f) for f in report.findings],
        "facts": report.facts,
        "unknowns": report.unknowns,
    }


def as_text(report: Report) -> str:
    node = report.node
    lines = [
        f"conf dir {node.conf_dir}, plugin dirs {':'.join(node.plugin_dirs)}, "
        f"cache dir {node.cache_dir}",
        "networks: " + (", ".join(n.name for n in report.networks) or "none"),
    ]
    if report.resolved:
        lines.append(
            f"plugins (the first match in {':'.join(node.plugin_dirs)}; pycni, Go or other):"
        )
        lines += resolution.table(report.resolved)
    for finding in report.findings:
        lines.append(f"{finding.severity.upper():7} [{finding.check}] {finding.problem}")
        lines.append(f"        fix: {finding.fix}")
    lines += [f"ok      {fact}" for fact in report.facts]
    lines += [f"??      {unknown}" for unknown in report.unknowns]
    errors = sum(f.severity == "error" for f in report.findings)
    warnings = len(report.findings) - errors
    summary = "all well" if report.ok else f"{errors} error(s), {warnings} warning(s)"
    if report.unknowns:
        summary = "nothing wrong found" if report.ok else summary
        summary += f", {len(report.unknowns)} unknown (not checked)"
    lines.append(summary)
    return "\n".join(lines) + "\n"


def parser():
    import argparse

    parser = argparse.ArgumentParser(
        prog="cnitool doctor", usage=USAGE, description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--json", action="store_true", help="the report as JSON")
    parser.add_argument(
        "--conf-dir", help=f"network config directory (default $NETCONFPATH or {DEFAULT_CONF_DIR})"
    )
    parser.add_argument(
        "--plugin-dir",
        action="append",
        help="a plugin directory, repeatable (default $CNI_PATH or "
        + ":".join(DEFAULT_PLUGIN_DIRS)
        + ")",
    )
    parser.add_argument(
        "--cache-dir", help=f"the runtime's result cache directory (default {cache.DEFAULT_DIR})"
    )
    parser.add_argument(
        "--pycni-socket",
        default=nodeprobe.PYCNI_SOCKET,
        help="the pycni daemon's socket to check (default %(default)s)",
    )
    parser.add_argument(
        "--dhcp-socket",
        default=nodeprobe.DHCP_SOCKET,
        help="the dhcp daemon's socket to check, for networks with dhcp IPAM (default %(default)s)",
    )
    parser.add_argument(
        "--no-kernel-probe",
        action="store_true",
        help="judge kernel features from module lists only (no scratch netns)",
    )
    return parser


def node_from_args(argv: list, environ) -> tuple:
    opts = parser().parse_args(argv)
    plugin_dirs = opts.plugin_dir
    if not plugin_dirs:
        cni_path = environ.get("CNI_PATH")
        plugin_dirs = cni_path.split(":") if cni_path else list(DEFAULT_PLUGIN_DIRS)
    node = Node(
        conf_dir=opts.conf_dir or environ.get("NETCONFPATH") or DEFAULT_CONF_DIR,
        plugin_dirs=[d for d in plugin_dirs if d],
        cache_dir=opts.cache_dir or cache.DEFAULT_DIR,
        pycni_socket=opts.pycni_socket,
        dhcp_socket=opts.dhcp_socket,
        tool_path=nodeprobe.tool_path(environ.get("PATH", "")),
        probe_kernel=not opts.no_kernel_probe,
    )
    return node, opts.json


def main(argv: list, environ, stdout) -> int:
    try:
        node, want_json = node_from_args(argv, environ)
    except SystemExit as exit_request:
        return int(exit_request.code or 0)
    report = examine(node)
    if want_json:
        stdout.write(json.dumps(as_json(report), indent=2) + "\n")
    else:
        stdout.write(as_text(report))
    return 0 if report.ok else 1
