"""Shared fixtures: namespaces the tests own, and running plugins the way a runtime does.

Every namespace a test uses is created here with a unique name and deleted at teardown, also
when the test fails. Plugins run as separate processes (source launchers or the frozen
executables) with a clean environment: CNI_* variables in, JSON out.
"""

import itertools
import json
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FROZEN_BIN = os.path.join(REPO, "build", "dist", "bin")
GO_BIN = "/usr/lib/cni"
NETNS_DIR = "/var/run/netns"

sys.path.insert(0, REPO)

_counter = itertools.count()

# The session's private mount namespace (tests/kit/mountns.py), entered before any test runs.
_private_mounts = None


def pytest_configure(config):
    global _private_mounts
    if os.geteuid() != 0 or os.environ.get("PYCNI_TEST_PRIVATE_MOUNTS") == "0":
        return  # without root no plugin test runs; =0 is for a run already inside its own
    from kit.mountns import PrivateMounts

    _private_mounts = PrivateMounts()
    _private_mounts.enter()


def pytest_report_header(config):
    from kit.fuzzseed import SEED, reproduce

    return f"fuzz seed: {SEED} (reproduce: {reproduce()})"


def pytest_terminal_summary(terminalreporter):
    """The seed again at the end (shown under -q too), when the fuzz test ran."""
    if "test_fuzz" in sys.modules:
        from kit.fuzzseed import SEED, reproduce

        terminalreporter.write_line(f"fuzz seed: {SEED} (reproduce: {reproduce()})")


def pytest_sessionfinish(session, exitstatus):
    """Fail the run if the machine's /var/lib/cni, /run/cni or /etc/cni changed under it."""
    if _private_mounts is None:
        return
    left = _private_mounts.leftovers()
    _private_mounts.close()
    if left:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write("\n")
            reporter.write_sep("=", "the machine's CNI paths changed during the run", red=True)
            for path, kind, size, _mtime in left:
                reporter.write_line(f"  {path} ({kind}, {size} bytes)", red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def unique_name(prefix: str = "pyt") -> str:
    """A netns/link-safe unique name (≤ 15 chars)."""
    return f"{prefix}{os.getpid() % 100000}x{next(_counter)}"[:15]


class NetnsFactory:
    def __init__(self):
        self.created = []

    def __call__(self, prefix: str = "pyt") -> str:
        name = unique_name(prefix)
        subprocess.run(["ip", "netns", "add", name], check=True)
        self.created.append(name)
        return os.path.join(NETNS_DIR, name)

    def cleanup(self):
        for name in reversed(self.created):
            subprocess.run(["ip", "netns", "del", name], check=False, stderr=subprocess.DEVNULL)


@pytest.fixture
def make_netns():
    """Call it to get a fresh netns path; all are deleted after the test."""
    factory = NetnsFactory()
    try:
        yield factory
    finally:
        factory.cleanup()


@pytest.fixture
def netns(make_netns):
    return make_netns()


def ns_exec(netns_path: str, *argv, check=True) -> str:
    """Run a command inside a netns the test owns; returns stdout."""
    name = os.path.basename(netns_path)
    proc = subprocess.run(["ip", "netns", "exec", name, *argv], capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(f"{argv} failed in {name}: {proc.stderr}")
    return proc.stdout


def ip_json(netns_path: str, *argv):
    """`ip -j ...` inside the netns, decoded."""
    out = ns_exec(netns_path, "ip", "-j", *argv)
    return json.loads(out) if out.strip() else []


@pytest.fixture(scope="session")
def source_bin(tmp_path_factory):
    """A directory of source launchers (one per plugin), like a CNI_PATH."""
    import runpy

    outdir = str(tmp_path_factory.mktemp("src-bin"))
    runpy.run_path(os.path.join(REPO, "build", "srcbin.py"))["write_launchers"](outdir)
    return outdir


@pytest.fixture(scope="session")
def frozen_bin():
    if not os.path.isfile(os.path.join(FROZEN_BIN, "loopback")):
        if os.environ.get("PYCNI_ALLOW_NO_FROZEN") == "1":
            pytest.skip("frozen executables not built (make build)")
        pytest.fail(
            f"frozen executables missing in {FROZEN_BIN}: run `make build` first "
            "(or set PYCNI_ALLOW_NO_FROZEN=1 to skip these tests)"
        )
    return FROZEN_BIN


@pytest.fixture(scope="session")
def go_bin():
    from kit import require

    require(
        os.path.isfile(os.path.join(GO_BIN, "loopback")),
        f"Debian's containernetworking-plugins are not installed in {GO_BIN}",
    )
    return GO_BIN


@pytest.fixture(params=["source", "frozen"])
def plugin_dir(request):
    """Each behaviour test runs twice: from source launchers and from the frozen executables."""
    return request.getfixturevalue(f"{request.param}_bin")


class PluginRun:
    def __init__(self, proc):
        self.returncode = proc.returncode
        self.stdout = proc.stdout
        self.stderr = proc.stderr

    @property
    def json(self):
        return json.loads(self.stdout)

    def __repr__(self):
        tail = self.stderr[-2000:]
        return f"PluginRun(rc={self.returncode}, stdout={self.stdout!r}, stderr={tail!r})"


def run_plugin(
    plugin_dir: str,
    name: str,
    command: str,
    conf=None,
    *,
    netns: str = "",
    ifname: str = "eth0",
    container_id: str = "ctr1",
    args: str = "",
    cni_path: str | None = None,
    env: dict | None = None,
    stdin: bytes | None = None,
    timeout: float = 60,
    in_netns: str | None = None,
    wrapper: list | None = None,
) -> PluginRun:
    """Exec `plugin_dir/name` like a runtime: a clean environment with CNI_* set, config on stdin.

    Pass env={} plus explicit keys to control exactly what is set (None values are dropped).
    `in_netns` runs the plugin inside that netns (a test "host" holding the master links);
    `wrapper` is a command line to run the plugin under (GNU time, strace).
    """
    full_env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
    full_env.update(
        {
            "CNI_COMMAND": command,
            "CNI_CONTAINERID": container_id,
            "CNI_NETNS": netns,
            "CNI_IFNAME": ifname,
            "CNI_ARGS": args,
            "CNI_PATH": cni_path if cni_path is not None else plugin_dir,
        }
    )
    if env:
        full_env.update(env)
    full_env = {k: v for k, v in full_env.items() if v is not None}
    if stdin is None:
        stdin = json.dumps(conf).encode() if conf is not None else b""
    argv = [*(wrapper or []), os.path.join(plugin_dir, name)]
    if in_netns:
        argv = ["ip", "netns", "exec", os.path.basename(in_netns), *argv]
    proc = subprocess.run(
        argv,
        input=stdin,
        env=full_env,
        capture_output=True,
        timeout=timeout,
    )
    return PluginRun(
        type(
            "P",
            (),
            {
                "returncode": proc.returncode,
                "stdout": proc.stdout.decode(),
                "stderr": proc.stderr.decode(),
            },
        )()
    )


@pytest.fixture
def cni():
    """The run_plugin helper as a fixture."""
    return run_plugin


FAKE_IPAM = """#!/bin/sh
# A stand-in IPAM plugin for tests: logs each command, answers ADD with $FAKE_IPAM_RESULT,
# fails the command named in $FAKE_IPAM_FAIL with CNI error 11.
echo "$CNI_COMMAND" >> "$FAKE_IPAM_LOG"
if [ "$CNI_COMMAND" = "$FAKE_IPAM_FAIL" ]; then
    printf '{"code": 11, "msg": "fake-ipam: %s refused"}' "$CNI_COMMAND"
    exit 1
fi
case "$CNI_COMMAND" in
    ADD) printf '%s' "$FAKE_IPAM_RESULT" ;;
    VERSION) printf '{"cniVersion":"1.1.0","supportedVersions":["0.4.0","1.0.0","1.1.0"]}' ;;
esac
exit 0
"""


class FakeIPAM:
    """A logging IPAM plugin named `fake-ipam` in its own directory (put it in CNI_PATH)."""

    name = "fake-ipam"

    def __init__(self, directory):
        self.dir = str(directory)
        self.log = os.path.join(self.dir, "calls.log")
        path = os.path.join(self.dir, self.name)
        with open(path, "w") as f:
            f.write(FAKE_IPAM)
        os.chmod(path, 0o755)

    def env(self, result: dict | None = None, fail: str = "") -> dict:
        result = result or {"cniVersion": "1.0.0", "ips": [{"address": "10.99.0.2/24"}]}
        return {
            "FAKE_IPAM_LOG": self.log,
            "FAKE_IPAM_RESULT": json.dumps(result),
            "FAKE_IPAM_FAIL": fail,
        }

    def calls(self) -> list:
        if not os.path.exists(self.log):
            return []
        with open(self.log) as f:
            return f.read().split()


@pytest.fixture
def fake_ipam(tmp_path_factory):
    return FakeIPAM(tmp_path_factory.mktemp("fake-ipam"))


def daemon_program(plugin_dir: str) -> str:
    """pycni-daemon of a plugin directory: in the frozen build's runtime folder (it is no
    plugin), beside the source launchers."""
    inside = os.path.join(plugin_dir, "_internal", "pycni-daemon")
    return inside if os.path.exists(inside) else os.path.join(plugin_dir, "pycni-daemon")


# Starts a program the way systemd's socket activation does: the listening socket as fd 3,
# LISTEN_FDS=1 and LISTEN_PID = its own pid (the exec keeps it).
SOCKET_ACTIVATED = """
import os, sys
os.dup2(int(sys.argv[1]), 3)
os.environ.update(LISTEN_FDS="1", LISTEN_PID=str(os.getpid()))
os.execv(sys.argv[2], sys.argv[2:])
"""


class Daemon:
    """pycni-daemon serving a private socket from inside a test netns and a private mount
    namespace (never the machine's own), stopped by its PID. With `listener` (a bound,
    listening socket) it is started as systemd's socket activation starts it."""

    def __init__(self, plugin_dir, workdir, make_netns, *args, listener=None):
        import time

        self.socket = listener.getsockname() if listener else str(workdir / "run" / "pycni.sock")
        self.log_path = workdir / "daemon.log"
        self.log = open(self.log_path, "w")  # noqa: SIM115 - closed by stop()
        home = os.path.basename(make_netns("pyd"))
        program = [daemon_program(plugin_dir), "--verbose", *args, self.socket]
        if listener is not None:
            program = [
                sys.executable,
                "-I",
                "-c",
                SOCKET_ACTIVATED,
                str(listener.fileno()),
                *program,
            ]
        # `ip netns exec`, `unshare` and the activation shim exec (no fork): the PID we get is
        # the daemon's.
        self.proc = subprocess.Popen(
            [
                "ip",
                "netns",
                "exec",
                home,
                "unshare",
                "--mount",
                "--propagation",
                "private",
                *program,
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env={"PATH": os.environ["PATH"]},
            pass_fds=() if listener is None else (listener.fileno(),),
        )
        deadline = time.monotonic() + 60
        while "serving" not in self.log_path.read_text():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise AssertionError(f"daemon did not start: {self.log_path.read_text()}")
            time.sleep(0.05)
        assert f"pycni-daemon[{self.proc.pid}]" in self.log_path.read_text()

    def served(self) -> int:
        return self.log_path.read_text().count(": worker ")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


@pytest.fixture
def start_daemon(make_netns, tmp_path):
    """Call it with a plugin directory to get a running Daemon; all are stopped afterwards."""
    started = []

    def start(plugin_dir, *args, listener=None):
        workdir = tmp_path / f"daemon{len(started)}"
        (workdir / "run").mkdir(parents=True)
        started.append(Daemon(plugin_dir, workdir, make_netns, *args, listener=listener))
        return started[-1]

    try:
        yield start
    finally:
        for daemon in started:
            daemon.stop()
