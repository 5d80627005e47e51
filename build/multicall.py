"""The one program behind every pycni executable: it runs the plugin its file is named after.

Frozen, `build/dist/bin/<name>` are hard links of one PyInstaller executable sharing one
`_internal/` runtime; from source, `build/srcbin.py` writes small launchers that call `run()`.
Only the chosen plugin's module is imported, so start-up stays small. When the pycni daemon
(libcni.fastpath.daemon) is running, a plugin call is handed to it instead (libcni.fastpath.client).
"""

import os
import sys

# Executable name -> module with a PLUGIN for the skeleton, or a main() of its own (cnitool, dhcp).
# Add a plugin here and it is frozen and launched.
PLUGINS = {
    "loopback": "plugins.loopback.loopback",
    "bridge": "plugins.bridge.bridge",
    "ptp": "plugins.ptp.ptp",
    "macvlan": "plugins.macvlan.macvlan",
    "host-device": "plugins.host_device.host_device",
    "tap": "plugins.tap.tap",
    "ipvlan": "plugins.ipvlan.ipvlan",
    "vlan": "plugins.vlan.vlan",
    "dummy": "plugins.dummy.dummy",
    "portmap": "meta.portmap.portmap",
    "tuning": "meta.tuning.tuning",
    "bandwidth": "meta.bandwidth.bandwidth",
    "firewall": "meta.firewall.firewall",
    "sbr": "meta.sbr.sbr",
    "vrf": "meta.vrf.vrf",
    "host-local": "ipam.host_local.host_local",
    "static": "ipam.static.static",
    "dhcp": "ipam.dhcp.dhcp",
    "cnitool": "libcni.runtime.cnitool",
}

# Plugins that accept only newer spec versions (as upstream); all others accept every version.
# tests/fastpath/test_startup_imports.py checks this against each module's own skel.Plugin.
MIN_VERSION = {"bandwidth": "0.3.0", "firewall": "0.4.0", "vrf": "0.3.1"}

# Programs with a serving mode chosen by their first argument (`dhcp daemon`): that call is
# neither answered as VERSION nor handed to the fork-server; the module's main() runs it.
SUBCOMMANDS = {"dhcp": "daemon"}

# The preloaded fork-server; it serves every name in PLUGINS except these.
DAEMON = "pycni-daemon"
NOT_FORWARDED = ("cnitool",)

# Programs that are no plugins, and what they are. Run the way a runtime runs a plugin
# (CNI_COMMAND set; for cnitool also no arguments) they answer like one and do nothing else: a
# runtime or a tool may probe every file of the plugin directory with VERSION.
NOT_PLUGINS = {
    DAEMON: "it is pycni's fork-server, started by systemd (pycni.socket)",
    "cnitool": "it runs network lists like a runtime: see cnitool --help",
}


def answer_as_plugin(name: str) -> int:
    """VERSION: every spec version; any other command: error 7, `name` is not a plugin."""
    from libcni.protocol import errors, gojson, version

    if os.environ["CNI_COMMAND"] == "VERSION":
        sys.stdout.write(gojson.version_info(version.CURRENT, version.ALL))
        code = 0
    else:
        what = NOT_PLUGINS[name] + "; a network's type names a plugin such as bridge"
        error = errors.config_error(f"{name} is not a CNI plugin", what)
        sys.stdout.write(gojson.indent(error.to_dict()))
        code = 1
    sys.stdout.flush()
    return code


def run(name: str, argv: list | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if name in NOT_PLUGINS and "CNI_COMMAND" in os.environ and (name == DAEMON or not argv):
        return answer_as_plugin(name)  # never serves, never runs a list
    if name == DAEMON:
        import libcni
        from libcni.fastpath import daemon as zygote

        libcni.SIBLINGS = PLUGINS  # a worker's IPAM delegation runs in the worker itself
        return zygote.main({k: v for k, v in PLUGINS.items() if k not in NOT_FORWARDED})
    module_name = PLUGINS.get(name)
    if module_name is None:
        known = ", ".join(sorted([*PLUGINS, DAEMON]))
        print(
            f"pycni: unknown program name {name!r}; this executable runs one of: {known}",
            file=sys.stderr,
        )
        return 2
    serving = name in SUBCOMMANDS and argv[:1] == [SUBCOMMANDS[name]]
    if not serving and name not in NOT_FORWARDED and os.environ.get("CNI_COMMAND") == "VERSION":
        # Runtimes probe every plugin with VERSION (podman: 8 times per container): answer it
        # before importing the plugin, its libcni modules or the daemon client.
        from libcni.protocol import gojson, version

        supported = version.starting_from(MIN_VERSION.get(name, version.ALL[0]))
        sys.stdout.write(gojson.version_info(version.CURRENT, supported))
        sys.stdout.flush()
        return 0
    if not serving and name not in NOT_FORWARDED:
        from libcni.fastpath import client as fastpath

        status = fastpath.forward(name, argv)
        if status is not None:
            return status
    import libcni

    libcni.SIBLINGS = PLUGINS
    __import__(module_name)
    module = sys.modules[module_name]
    if hasattr(module, "main"):  # cnitool, and dhcp (its `daemon` subcommand)
        return module.main()
    from libcni.protocol import skel

    return skel.main(module.PLUGIN)


def drop_bundle_environment(environ) -> None:
    """Undo what the PyInstaller bootloader put into our environment (LD_LIBRARY_PATH pointing
    at _internal/, _PYI_* bookkeeping), so that every program we start (ip, iptables, a
    delegated plugin) runs with the caller's environment and never loads the bundle's
    libraries. The dynamic loader read LD_LIBRARY_PATH when we started; this only affects
    children. libcni.delegation.invoke.clean_environ does the same for an explicit env dict."""
    for key in [k for k in environ if k.startswith("_PYI_")]:
        del environ[key]
    original = environ.pop("LD_LIBRARY_PATH_ORIG", None)
    if original is not None:
        environ["LD_LIBRARY_PATH"] = original
    else:
        environ.pop("LD_LIBRARY_PATH", None)


def main() -> int:
    if "PYCNI_TRACE_T0" in os.environ or os.environ.get("PYCNI_TRACE", "") not in ("", "0"):
        from libcni.protocol import phases  # the per-call log's phases (opt-in)

        phases.begin(os.environ)
        phases.mark("interpreter")
        os.environ.pop(phases.ORIGIN_VARIABLE, None)
    if getattr(sys, "frozen", False):
        drop_bundle_environment(os.environ)
    return run(os.path.basename(sys.argv[0]))


if __name__ == "__main__":
    sys.exit(main())
