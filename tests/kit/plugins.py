"""Running plugins the way a runtime does: a clean environment with CNI_* set, the config on
stdin, JSON out; from a plugin directory (source launchers, the frozen build, Debian's Go
plugins in /usr/lib/cni). A stand-in IPAM plugin that logs its calls."""

import json
import os
import subprocess

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FROZEN_BIN = os.path.join(REPO, "build", "dist", "bin")
GO_BIN = "/usr/lib/cni"


class PluginRun:
    """A finished run: returncode, stdout, stderr (and the pid it ran as, where known)."""

    def __init__(self, proc, pid=0):
        self.returncode = proc.returncode
        self.stdout = proc.stdout
        self.stderr = proc.stderr
        self.pid = pid

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
    if "PYCNI_NETFILTER_CACHE" in os.environ:  # conftest's: the backend probe's cache dir
        full_env["PYCNI_NETFILTER_CACHE"] = os.environ["PYCNI_NETFILTER_CACHE"]
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


# An IPAM result the main plugins cannot configure: its route's gateway is off every subnet.
UNREACHABLE_ROUTE_RESULT = {
    "cniVersion": "1.0.0",
    "ips": [{"address": "10.99.0.2/24"}],
    "routes": [{"dst": "10.200.0.0/16", "gw": "192.0.2.1"}],
}


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

    def refusing(self, command: str = "ADD") -> dict:
        """run_in_host keywords: this IPAM in CNI_PATH, failing `command` with code 11."""
        return {"extra_path": self.dir, "env": self.env(fail=command)}

    def answering(self, result: dict | None = None) -> dict:
        """run_in_host keywords: this IPAM in CNI_PATH, answering ADD with `result` (a
        10.99.0.2/24 one by default) and every other command with success."""
        return {"extra_path": self.dir, "env": self.env(result=result)}

    def calls(self) -> list:
        if not os.path.exists(self.log):
            return []
        with open(self.log) as f:
            return f.read().split()
