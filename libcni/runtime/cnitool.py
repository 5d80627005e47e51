"""cnitool: run a CNI network list against a network namespace, the way a runtime would.

Compatible with upstream's cnitool (same environment variables, same derived container ID,
same cache), plus a few things that make it pleasant by hand: a config file in place of a
network name, throwaway namespaces, flags for what upstream only takes from the
environment, readable output, and errors that say what their code means.
"""

import os
import sys

from libcni.protocol.errors import INCOMPATIBLE_VERSION, INTERNAL, INVALID_ENVIRONMENT, CNIError
from libcni.runtime import cli


class NothingRun(CNIError):
    """cnitool refused before running any plugin (exit status 3): nothing changed."""


class Output:
    """Prints results and errors: Go's byte layout with --raw, indented for people otherwise."""

    def __init__(self, stdout, stderr, pretty: bool):
        self.stdout = stdout
        self.stderr = stderr
        self.pretty = pretty

    def json(self, obj, sort_keys: bool = False) -> None:
        if self.pretty:
            import json

            self.stdout.write(json.dumps(obj, indent=2, sort_keys=sort_keys, ensure_ascii=False))
            self.stdout.write("\n")
        else:
            from libcni.protocol.gojson import indent

            self.stdout.write(indent(obj, sort_keys=sort_keys))

    def result(self, result) -> None:
        from libcni.protocol import version as versions

        sort = versions.family(result.cni_version) is versions.FAMILY_C
        self.json(result.to_version(result.cni_version), sort_keys=sort)

    def note(self, text: str) -> None:
        self.stderr.write(f"cnitool: {text}\n")

    def error(self, err: CNIError, action: str) -> None:
        from libcni.protocol.errors import explain

        self.json(err.to_dict())
        self.note(f"{action} failed: {err}")
        self.stderr.write(f"error {err.code}: {explain(err.code)}\n")


class Invocation:
    """Everything one cnitool run needs, decoded from argv and the environment."""

    def __init__(self, opts, environ, parser):
        self.opts = opts
        self.environ = environ
        self.parser = parser
        self.command = opts.command
        self.network_arg = opts.network
        self.netns_arg = opts.netns
        if opts.conf is not None:
            if opts.netns is not None:
                parser.error("with --conf, give only COMMAND and NETNS")
            self.network_arg, self.netns_arg = None, opts.network
        if self.command == "doctor":
            parser.error("doctor takes its own options after it: cnitool doctor [options]")
        if self.network_arg is None and opts.conf is None and self.command != "version":
            parser.error(f"{self.command} needs a NETWORK (a name or a config file path)")
        if opts.netns_create and self.command not in ("add", "del"):
            parser.error("--netns-create is for add and del")
        if opts.valid and self.command != "gc":
            parser.error("--valid is for gc")
        if self.command in ("add", "check") and not self.netns_arg and not opts.netns_create:
            parser.error(f"{self.command} needs a NETNS (a netns path or a name in /var/run/netns)")
        if self.command == "del" and not self.netns_arg and not opts.container_id:
            parser.error("del needs a NETNS (or --container-id)")
        if opts.netns_create and self.command == "del" and not self.netns_arg:
            parser.error("del --netns-create needs the NETNS to remove")

    def load(self):
        from libcni.runtime import conflist

        if self.opts.conf is not None:
            return conflist.load_file(self.opts.conf)
        if "/" in self.network_arg:
            return conflist.load_file(self.network_arg)
        directory = self.environ.get("NETCONFPATH") or cli.DEFAULT_NETCONFPATH
        return conflist.load_network(directory, self.network_arg)

    def runtime_conf(self, netns: str, netlist=None):
        """The attachment's arguments. Given the `netlist` (check, del), capability arguments
        not passed by flag or $CAP_ARGS are those cached by add, as a runtime passes the same
        ones again: portmap's CHECK cannot see a deleted rule without its portMappings."""
        from libcni.runtime.netlist import RuntimeConf

        capability_text = self.opts.capability_args
        source = "--capability-args"
        if capability_text is None:
            capability_text, source = self.environ.get("CAP_ARGS", ""), "CAP_ARGS"
        capability_args = (
            cli.parse_capability_args(capability_text, source) if capability_text else {}
        )
        cni_args_text = self.environ.get("CNI_ARGS", "")
        ifname = self.opts.ifname or self.environ.get("CNI_IFNAME") or "eth0"
        rt = RuntimeConf(
            container_id=self.opts.container_id or cli.container_id_for(netns),
            netns=netns,
            ifname=ifname,
            args=cli.parse_cni_args(cni_args_text) if cni_args_text else [],
            capability_args=capability_args,
        )
        if netlist is not None and not capability_text:
            rt.capability_args = self.cached_capability_args(netlist, rt)
        return rt

    def cached_capability_args(self, netlist, rt) -> dict:
        from libcni.runtime import cache

        try:
            attachment = cache.read_config(
                self.opts.cache_dir or cache.DEFAULT_DIR, netlist.name, rt
            )
        except CNIError:
            return {}  # an unreadable cache: check/del report it themselves
        return dict(attachment.capability_args) if attachment is not None else {}

    def runtime(self, stderr):
        from libcni.runtime import cache
        from libcni.runtime.netlist import Runtime

        cni_path = self.environ.get("CNI_PATH")
        if cni_path is None:
            cni_path = cli.DEFAULT_CNI_PATH
        return Runtime(
            cni_path.split(":"),
            cache_dir=self.opts.cache_dir or cache.DEFAULT_DIR,
            environ=self.environ,
            stderr=stderr,
        )

    def require_plugins(self, runtime, netlist) -> None:
        """Refuse (NothingRun) when a plugin of the list is in no plugin directory: running the
        ones before it would leave a half-made attachment that DEL cannot finish either."""
        missing = runtime.missing_plugins(netlist)
        if missing:
            where = ":".join(runtime.cni_path)
            raise NothingRun(
                INTERNAL,
                f'network "{netlist.name}" needs plugins that are in no plugin directory '
                f"({where}): {', '.join(missing)}; no plugin was run",
                f"fix the type in {netlist.path or 'the config'} or install the plugin there "
                "(CNI_PATH lists the directories)",
            )

    def valid_attachments(self):
        if self.opts.valid is None:
            return None
        pairs = []
        for text in self.opts.valid:
            container_id, slash, ifname = text.partition("/")
            if not slash or not container_id or not ifname:
                self.parser.error(f"--valid wants CONTAINERID/IFNAME, got {text!r}")
            pairs.append((container_id, ifname))
        return pairs


# -- throwaway namespaces -------------------------------------------------------------------


def _netns_name(path: str) -> str:
    directory, name = os.path.split(path)
    if directory not in cli.NETNS_DIRS or not name:
        raise CNIError(
            INVALID_ENVIRONMENT,
            f"--netns-create manages namespaces in /var/run/netns only, not {path}",
            "give a bare name such as ctr1",
        )
    return name


def _ip_netns(verb: str, name: str) -> None:
    import subprocess

    from libcni.delegation.invoke import clean_environ

    proc = subprocess.run(
        ["ip", "netns", verb, name],
        capture_output=True,
        text=True,
        env=clean_environ(os.environ),
        check=False,
    )
    if proc.returncode != 0:
        raise CNIError(
            INTERNAL, f"ip netns {verb} {name} failed: {proc.stderr.strip() or proc.returncode}"
        )


# -- commands -------------------------------------------------------------------------------


def _add(inv: Invocation, out: Output, netlist) -> None:
    runtime = inv.runtime(out.stderr)
    inv.require_plugins(runtime, netlist)
    created = None
    if inv.opts.netns_create:
        if not inv.netns_arg:
            import secrets

            inv.netns_arg = "cnitool-" + secrets.token_hex(4)
        path = cli.netns_path(inv.netns_arg)
        created = _netns_name(path)
        if os.path.exists(path):
            raise CNIError(
                INVALID_ENVIRONMENT,
                f"network namespace {path} already exists",
                "drop --netns-create to use it",
            )
        _ip_netns("add", created)
        out.note(f"created network namespace {path}")
    path = cli.netns_path(inv.netns_arg)
    rt = inv.runtime_conf(path)
    try:
        result = runtime.add(netlist, rt)
    except CNIError:
        if created:
            # Undo what the failed ADD may have left (host-side state, IPAM) before the
            # namespace goes away, as a runtime would.
            try:
                runtime.delete(netlist, rt, keep_going=True)
            except CNIError as err:
                out.note(f"cleanup DEL after the failed add also failed: {err}")
            _ip_netns("delete", created)
            out.note(f"removed network namespace {path}")
        raise
    out.result(result)


def _del(inv: Invocation, out: Output, netlist) -> None:
    path = cli.netns_path(inv.netns_arg) if inv.netns_arg else ""
    name = _netns_name(path) if inv.opts.netns_create else None
    runtime = inv.runtime(out.stderr)
    for missing in runtime.missing_plugins(netlist):
        out.note(f"del: {missing} is in no plugin directory; deleting with the others")
    runtime.delete(netlist, inv.runtime_conf(path, netlist), keep_going=True)
    if name and os.path.exists(path):
        _ip_netns("delete", name)
        out.note(f"removed network namespace {path}")


def _check(inv: Invocation, out: Output, netlist) -> None:
    runtime = inv.runtime(out.stderr)
    inv.require_plugins(runtime, netlist)
    runtime.check(netlist, inv.runtime_conf(cli.netns_path(inv.netns_arg), netlist))


def _gc(inv: Invocation, out: Output, netlist) -> None:
    deleted = inv.runtime(out.stderr).gc(netlist, inv.valid_attachments())
    for container_id, ifname in deleted:
        out.note(f"deleted stale attachment {container_id} {ifname}")


def _status(inv: Invocation, out: Output, netlist) -> None:
    # Decided: an error, not a notice with status 0. libcni skips STATUS before 1.1.0 and a
    # runtime then takes the network as ready, but whoever runs `cnitool status` asked a
    # question no plugin can answer; exit 0 would read as "ready" in a script.
    asked = inv.runtime(out.stderr).status(netlist)
    if not asked:
        raise NothingRun(
            INCOMPATIBLE_VERSION,
            f'network "{netlist.name}" has cniVersion "{netlist.cni_version}", which has no '
            "STATUS command (1.1.0 or newer has): no plugin was asked",
            f'set "cniVersion": "1.1.0" in {netlist.path or "its config"} to ask its plugins '
            "(a runtime treats a list without STATUS as ready)",
        )


def _version(inv: Invocation, out: Output) -> int:
    from libcni import PYCNI_VERSION
    from libcni.protocol import version as versions

    if inv.network_arg is None and inv.opts.conf is None:
        out.json(
            {
                "cniVersion": versions.CURRENT,
                "supportedVersions": list(versions.ALL),
                "pycniVersion": PYCNI_VERSION,
            }
        )
        return 0
    netlist = inv.load()
    runtime = inv.runtime(out.stderr)
    wanted = netlist.cni_version or "0.1.0"
    report = []
    unsupported = []
    for plugin in netlist.plugins:
        path = runtime.find(plugin.type)
        supported = runtime.version_info(plugin.type)
        report.append({"type": plugin.type, "path": path, "supportedVersions": supported})
        if wanted not in supported:
            unsupported.append(plugin.type)
    out.json({"name": netlist.name, "cniVersion": netlist.cni_version, "plugins": report})
    for plugin_type in unsupported:
        out.note(f'plugin {plugin_type} does not support config version "{wanted}"')
    return 1 if unsupported else 0


RUNNERS = {"add": _add, "check": _check, "del": _del, "gc": _gc, "status": _status}


def _help(argv: list, environ, stdout, stderr) -> int:
    """`cnitool help [COMMAND]` and `cnitool COMMAND --help`."""
    if not argv:
        cli.parser().print_help(stdout)
        return cli.EXIT_OK
    command = argv[0]
    if command == "doctor":
        from libcni.runtime import doctor

        return doctor.main(["--help"], environ, stdout)
    if command not in cli.COMMAND_HELP:
        stderr.write(f"cnitool: no command {command!r}; the commands: {', '.join(cli.COMMANDS)}\n")
        return cli.EXIT_USAGE
    cli.command_parser(command).print_help(stdout)
    return cli.EXIT_OK


def _asks_for_help(argv: list) -> list | None:
    """For `cnitool [options] COMMAND ... --help`: [COMMAND] ([] without one); else None."""
    if "-h" not in argv and "--help" not in argv:
        return None
    words = [arg for arg in argv if not arg.startswith("-")]
    return [words[0]] if words and words[0] in cli.COMMAND_HELP else []


def _warn_broken(out: Output, err: CNIError) -> None:
    for broken in getattr(err, "broken", ()):
        out.note(f"warning: skipped a config file that cannot be used: {broken.msg}")


def run(argv, environ, stdout, stderr) -> int:
    parser = cli.parser()
    if not argv:
        parser.print_usage(stderr)
        stderr.write("run 'cnitool --help' for the commands and options\n")
        return cli.EXIT_USAGE
    if argv[0] == "doctor":
        from libcni.runtime import doctor

        return doctor.main(argv[1:], environ, stdout)
    if argv[0] == "help":
        return _help(argv[1:], environ, stdout, stderr)
    wanted_help = _asks_for_help(argv)
    if wanted_help:
        return _help(wanted_help, environ, stdout, stderr)
    try:
        opts = parser.parse_intermixed_args(argv)
        inv = Invocation(opts, environ, parser)
    except SystemExit as exit_request:
        return int(exit_request.code or 0)
    if cli.exec_wanted(opts, environ):
        # A frozen cnitool runs the plugins of its own build in-process when they are in
        # libcni.SIBLINGS (libcni.delegation.invoke.sibling_module); an empty table makes
        # every plugin an exec, as from a runtime.
        import libcni

        libcni.SIBLINGS = {}
    pretty = opts.pretty if opts.pretty is not None else stdout.isatty()
    out = Output(stdout, stderr, pretty)
    try:
        if inv.command == "version":
            return _version(inv, out)
        netlist = inv.load()
        RUNNERS[inv.command](inv, out, netlist)
        return cli.EXIT_OK
    except NothingRun as err:
        out.error(err, inv.command)
        return cli.EXIT_NOT_RUN
    except CNIError as err:
        _warn_broken(out, err)
        out.error(err, inv.command)
        return cli.EXIT_FAILED


def main(argv=None) -> int:
    code = run(sys.argv[1:] if argv is None else argv, os.environ, sys.stdout, sys.stderr)
    sys.stdout.flush()
    return code


if __name__ == "__main__":
    sys.exit(main())
