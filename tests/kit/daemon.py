"""pycni-daemon for a test: on a private socket, inside a test netns and a private mount
namespace, stopped by its PID (the fast path through the daemon is one of the plugin runners)."""

import os
import subprocess
import sys


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
