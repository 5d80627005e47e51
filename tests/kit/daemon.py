"""pycni-daemon for a test: on a private socket, inside a test netns and a private mount
namespace, stopped by its PID (the fast path through the daemon is one of the plugin runners)."""

import contextlib
import os
import subprocess
import sys
import time

# The call most daemon tests make: loopback has no state and works in any netns.
LOOPBACK_CONF = {"cniVersion": "1.0.0", "name": "lo-net", "type": "loopback"}


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


def in_private_mounts(netns_name: str) -> list:
    """The argv prefix that runs a program inside the test netns `netns_name` and a private
    mount namespace (`ip netns exec` and `unshare` exec it: the PID is the program's)."""
    return ["ip", "netns", "exec", netns_name, "unshare", "--mount", "--propagation", "private"]


def run_daemon(plugin_dir, make_netns, *args, env=None, timeout=30, **run):
    """pycni-daemon with `args` run to its end in a test netns and a private mount namespace,
    with PATH and `env` only (subprocess.run's other keywords in `run`)."""
    netns_name = os.path.basename(make_netns())
    return subprocess.run(
        [*in_private_mounts(netns_name), daemon_program(plugin_dir), *args],
        env={"PATH": os.environ["PATH"], **(env or {})},
        capture_output=True,
        timeout=timeout,
        **run,
    )


def via(daemon) -> dict:
    """The environment that sends a plugin call through `daemon`."""
    return {"PYCNI_SOCKET": daemon.socket}


def loopback_add_env(daemon, netns) -> dict:
    """The whole environment of a loopback ADD for `netns` through `daemon`."""
    return {
        "PATH": os.environ["PATH"],
        "PYCNI_SOCKET": daemon.socket,
        "CNI_COMMAND": "ADD",
        "CNI_CONTAINERID": "c1",
        "CNI_NETNS": netns,
        "CNI_IFNAME": "lo",
        "CNI_PATH": "/x",
    }


def blocked_client(plugin_dir, daemon, netns, preexec_fn=None):
    """A loopback ADD through the daemon whose stdin stays open: its worker blocks reading the
    config until we write it (or the caller dies). Returns the client and its worker's PID."""
    client = subprocess.Popen(
        [os.path.join(plugin_dir, "loopback")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=loopback_add_env(daemon, netns),
        preexec_fn=preexec_fn,
    )
    deadline = time.monotonic() + 30
    while daemon.served() < 1:
        assert client.poll() is None, client.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.05)
    worker = int(daemon.log_path.read_text().split(": worker ")[1].split(":")[0])
    return client, worker


def eventually(check, timeout=10.0) -> bool:
    """Whether `check()` comes true within `timeout` seconds (polled)."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


@contextlib.contextmanager
def fresh_cgroup():
    """A fresh cgroup of our own (the pids hierarchy, or cgroup2), removed afterwards, as
    (kind, directory, cgroup path)."""
    from kit.environment import require
    from kit.netns import unique_name
    from libcni.fastpath import caller

    mounts = caller._cgroup_mounts("/proc/self/mountinfo")
    chosen = [m for m in mounts if m[0] != caller.CGROUP_V2 and "pids" in m[0]]
    chosen = chosen or [m for m in mounts if m[0] == caller.CGROUP_V2]
    require(chosen, "no pids or cgroup2 hierarchy is mounted")
    kind, root, point = chosen[0]
    path = os.path.join(point, unique_name("pycnicg"))
    os.mkdir(path)
    try:
        yield kind, path, "/" + os.path.relpath(path, point)
    finally:
        deadline = time.monotonic() + 10
        while open(os.path.join(path, "cgroup.procs")).read().strip():
            assert time.monotonic() < deadline, "processes left in the test cgroup"
            time.sleep(0.05)
        os.rmdir(path)


class Daemon:
    """pycni-daemon serving a private socket from inside a test netns and a private mount
    namespace (never the machine's own), stopped by its PID. With `listener` (a bound,
    listening socket) it is started as systemd's socket activation starts it."""

    def __init__(self, plugin_dir, workdir, make_netns, *args, listener=None):
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
            [*in_private_mounts(home), *program],
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


def serves_a_new_daemon(plugin_dir, workdir, make_netns, netns) -> None:
    """Starts a daemon on `workdir`'s socket (whatever was left there), checks it serves a
    loopback ADD, and stops it."""
    from kit.plugins import run_plugin

    daemon = Daemon(plugin_dir, workdir, make_netns)
    try:
        done = run_plugin(
            plugin_dir, "loopback", "ADD", LOOPBACK_CONF, netns=netns, env=via(daemon)
        )
        assert done.returncode == 0 and daemon.served() == 1, done
    finally:
        daemon.stop()
