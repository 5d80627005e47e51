"""firewall's firewalld backend against a real firewalld: a system D-Bus daemon and firewalld
started inside a test "host" netns and a private mount namespace (tmpfs over /run/dbus,
/run/firewalld, /var/log, /var/lib/firewalld), so the machine's own bus and rules are never
touched. Plugins run in the same namespaces through nsenter."""

import os
import shutil
import subprocess

import pytest
from kit import require

HOLDER = r"""
set -e
mount --make-rprivate /
for d in /run/dbus /run/firewalld /var/log /var/lib/firewalld; do
    mkdir -p $d && mount -t tmpfs tmpfs $d
done
dbus-daemon --system --fork --print-pid=3 --nopidfile 3>/run/dbus/pid
firewalld --nofork --nopid > /run/firewalld/log 2>&1 &
for i in $(seq 1 120); do
    busctl --system --no-legend list 2>/dev/null | grep -q org.fedoraproject.FirewallD1 && break
    sleep 0.25
done
busctl --system --no-legend list | grep -q org.fedoraproject.FirewallD1
echo ready
trap 'kill $(cat /run/dbus/pid) %1 2>/dev/null; wait' EXIT TERM
sleep 100000 & wait $!
"""

PREV = {
    "cniVersion": "1.0.0",
    "interfaces": [{"name": "cni0"}],
    "ips": [{"address": "10.95.0.2/24"}, {"address": "fd95::2/64"}],
}


class Firewalld:
    def __init__(self, make_netns):
        self.host = make_netns("fwd")
        self.pod = make_netns("fwp")
        self.holder = subprocess.Popen(
            ["ip", "netns", "exec", os.path.basename(self.host), "sh", "-c", HOLDER],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        if self.holder.stdout.readline().strip() != "ready":
            self.close()
            raise AssertionError(f"firewalld did not start: {self.holder.stderr.read()[-2000:]}")

    def sh(self, *argv, env=None, stdin=None):
        full = ["nsenter", "-t", str(self.holder.pid), "-m", "-n", "--", *argv]
        return subprocess.run(full, env=env, input=stdin, capture_output=True, timeout=60)

    def plugin(self, plugin_dir, command, conf, cid="ctr1"):
        import json

        env = {
            "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
            "CNI_COMMAND": command,
            "CNI_CONTAINERID": cid,
            "CNI_NETNS": self.pod,
            "CNI_IFNAME": "eth0",
            "CNI_PATH": plugin_dir,
        }
        proc = self.sh(
            os.path.join(plugin_dir, "firewall"), env=env, stdin=json.dumps(conf).encode()
        )
        return proc.returncode, proc.stdout.decode()

    def in_zone(self, zone: str, source: str) -> bool:
        out = self.sh(
            "busctl",
            "--system",
            "call",
            "org.fedoraproject.FirewallD1",
            "/org/fedoraproject/FirewallD1",
            "org.fedoraproject.FirewallD1.zone",
            "querySource",
            "ss",
            zone,
            source,
        ).stdout.decode()
        return "true" in out

    def close(self):
        if self.holder.poll() is None:
            self.holder.terminate()
            try:
                self.holder.wait(10)
            except subprocess.TimeoutExpired:
                self.holder.kill()
                self.holder.wait()


@pytest.fixture
def firewalld(make_netns):
    require(
        shutil.which("firewalld") and shutil.which("dbus-daemon"),
        "firewalld and dbus-daemon are not installed (Debian packages firewalld, dbus)",
    )
    daemon = Firewalld(make_netns)
    yield daemon
    daemon.close()


RECORDS: dict = {}


@pytest.fixture(autouse=True)
def records_dir(tmp_path):
    """The plugin's per-attachment records go to the test's own directory."""
    RECORDS["dataDir"] = str(tmp_path / "firewall")
    yield
    RECORDS.clear()


def conf(**extra):
    base = {
        "cniVersion": "1.0.0",
        "name": "fwdnet",
        "type": "firewall",
        "prevResult": PREV,
        "dataDir": RECORDS["dataDir"],
    }
    base.update(extra)
    return base


@pytest.mark.parametrize("backend", ["firewalld", ""])
def test_sources_join_and_leave_the_zone(plugin_dir, firewalld, backend):
    # An empty backend picks firewalld because it owns its name on the system bus.
    config = conf(backend=backend, firewalldZone="trusted")
    code, out = firewalld.plugin(plugin_dir, "ADD", config)
    assert code == 0, out
    assert firewalld.in_zone("trusted", "10.95.0.2/32")
    assert firewalld.in_zone("trusted", "fd95::2/128")
    assert firewalld.plugin(plugin_dir, "CHECK", config)[0] == 0
    for _ in range(2):
        assert firewalld.plugin(plugin_dir, "DEL", config)[0] == 0
    assert not firewalld.in_zone("trusted", "10.95.0.2/32")
    code, out = firewalld.plugin(plugin_dir, "CHECK", config)
    assert code == 1 and "not in firewalld zone trusted" in out


@pytest.mark.parametrize("adder, other", [("go", "ours"), ("ours", "go")])
def test_go_and_ours_agree_on_firewalld(plugin_dir, go_bin, firewalld, adder, other):
    dirs = {"go": go_bin, "ours": plugin_dir}
    config = conf(backend="firewalld")
    assert firewalld.plugin(dirs[adder], "ADD", config)[0] == 0
    assert firewalld.plugin(dirs[other], "CHECK", config)[0] == 0
    assert firewalld.plugin(dirs[other], "DEL", config)[0] == 0
    assert not firewalld.in_zone("trusted", "10.95.0.2/32")
