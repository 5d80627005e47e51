"""Shared fixtures: namespaces the tests own, plugin directories, daemons; the session's hooks.

Every namespace a test uses is created by a fixture with a unique name and deleted at teardown,
also when the test fails. Plugins run as separate processes (source launchers, the frozen
executables, Debian's Go plugins) with a clean environment: CNI_* variables in, JSON out. The
whole session runs in a private mount namespace (tests/kit/mountns.py) and fails if the
machine's CNI paths changed under it.
"""

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# The helpers live in tests/kit/ (README.md there); test modules import them from the kit or,
# as before, from here.
from kit.daemon import SOCKET_ACTIVATED, Daemon, daemon_program  # noqa: E402, F401
from kit.netns import NETNS_DIR, NetnsFactory, ip_json, ns_exec, unique_name  # noqa: E402, F401
from kit.plugins import (  # noqa: E402, F401
    FAKE_IPAM,
    FROZEN_BIN,
    GO_BIN,
    REPO,
    FakeIPAM,
    PluginRun,
    run_plugin,
)

# The plugins cache their netfilter backend probe under /run/pycni; tests never write the
# machine's /run, so every plugin a test starts (also through libcni's list runtime, which
# passes os.environ; kit.plugins.run_plugin passes it on) keeps that cache in a directory of
# this session.
os.environ.setdefault(
    "PYCNI_NETFILTER_CACHE", __import__("tempfile").mkdtemp(prefix="pycni-netfilter-cache-")
)

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
                reporter.write_line(
                    f"  {path} ({kind}{f', {size} bytes' if size else ''})", red=True
                )
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


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


@pytest.fixture
def cni():
    """The run_plugin helper as a fixture."""
    return run_plugin


@pytest.fixture
def fake_ipam(tmp_path_factory):
    return FakeIPAM(tmp_path_factory.mktemp("fake-ipam"))


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


@pytest.fixture
def test_cgroup():
    """A fresh cgroup of our own (the pids hierarchy, or cgroup2), removed afterwards:
    (kind, directory, cgroup path)."""
    from kit.daemon import fresh_cgroup

    with fresh_cgroup() as cgroup:
        yield cgroup


@pytest.fixture
def netconf(tmp_path):
    """A NETCONFPATH directory; call it with (filename, obj or text) to add a config."""
    from kit.cnitool import netconf_dir

    return netconf_dir(tmp_path / "net.d")


@pytest.fixture
def cnitool(tmp_path, netconf):
    """Run <bin_dir>/cnitool with NETCONFPATH, CNI_PATH and a private cache directory."""
    from kit.cnitool import cnitool_runner

    return cnitool_runner(netconf.dir, str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def fake_dir(tmp_path_factory):
    """A directory of recording plugins `a`, `b`, `c` (tests/kit/recording_plugin.py), for
    tests that look at exactly what reached each plugin."""
    from kit import recording_plugin

    return recording_plugin.install(str(tmp_path_factory.mktemp("fake-bin")), "a", "b", "c")


@pytest.fixture
def fake_log(tmp_path):
    """Where the recording plugins log their calls (their FAKE_LOG)."""
    return str(tmp_path / "calls.jsonl")
