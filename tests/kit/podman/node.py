"""Debian's podman 4.3 (CNI backend) running inside a test-owned "node" network namespace, on a
given CNI plugin directory. How to make podman run here is in shared/reference/RUNTIMES.md.

One long-lived holder process sits in the node netns and in a private mount namespace where
the cgroup v1 hierarchies, tmpfs stores and podman's own directories are mounted; every podman
command enters both namespaces of that holder with nsenter. An "external" netns, joined to
the node by a veth, plays the rest of the network. Everything is removed in close().
"""

import json
import os
import shutil
import subprocess
import tempfile
import time

from kit.nodekit import busybox_rootfs, cgroup_mounts

NODE_ADDRESS, EXTERNAL_ADDRESS = "192.168.210.1", "192.168.210.2"
IMAGE = "localhost/pycni-busybox:test"

HOLDER = r"""
set -e
mount --make-rprivate /
{cgroups}
for d in /var/lib/containers /var/lib/cni /run/netns /run/containers /run/libpod /run/cni \
         /run/pycni /var/tmp; do
    mkdir -p "$d" && mount -t tmpfs tmpfs "$d"
done
ip link set lo up
echo ready
exec sleep 100000
"""


def _containers_conf(work: str, plugin_dir: str) -> str:
    return f"""[containers]
default_ulimits = ["nofile=4096:4096", "nproc=4096:4096"]
netns = "bridge"
[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
tmp_dir = "{work}/tmp"
runtime = "crun"
[network]
network_backend = "cni"
cni_plugin_dirs = ["{plugin_dir}"]
network_config_dir = "{work}/net.d"
"""


def _storage_conf() -> str:
    return """[storage]
driver = "overlay"
runroot = "/run/containers/storage"
graphroot = "/var/lib/containers/storage"
"""


class PodmanNode:
    def __init__(self, make_netns, plugin_dir: str):
        self.plugin_dir = plugin_dir
        self.node = make_netns("pmn")
        self.external = make_netns("pmx")
        self.work = tempfile.mkdtemp(prefix="pycni-podman-")
        os.makedirs(os.path.join(self.work, "tmp"))
        os.makedirs(os.path.join(self.work, "net.d"))
        for name, text in (
            ("containers.conf", _containers_conf(self.work, plugin_dir)),
            ("storage.conf", _storage_conf()),
        ):
            with open(os.path.join(self.work, name), "w") as f:
                f.write(text)
        self._join_external()
        self.holder = subprocess.Popen(
            [
                "ip",
                "netns",
                "exec",
                os.path.basename(self.node),
                "sh",
                "-c",
                HOLDER.replace("{cgroups}", cgroup_mounts()),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        if self.holder.stdout.readline().strip() != "ready":
            raise RuntimeError(f"podman holder failed: {self.holder.stderr.read()}")
        self._import_image()

    def _join_external(self) -> None:
        node, ext = os.path.basename(self.node), os.path.basename(self.external)
        run = lambda *argv: subprocess.run(argv, check=True)  # noqa: E731
        run(
            "ip",
            "-n",
            node,
            "link",
            "add",
            "uplink",
            "type",
            "veth",
            "peer",
            "downlink",
            "netns",
            ext,
        )
        run("ip", "-n", node, "addr", "add", f"{NODE_ADDRESS}/24", "dev", "uplink")
        run("ip", "-n", node, "link", "set", "uplink", "up")
        run("ip", "-n", ext, "addr", "add", f"{EXTERNAL_ADDRESS}/24", "dev", "downlink")
        run("ip", "-n", ext, "link", "set", "downlink", "up")
        run("ip", "-n", ext, "link", "set", "lo", "up")

    # -- running things inside the node ------------------------------------------------

    def sh(self, *argv, check=True, timeout=120, input=None) -> subprocess.CompletedProcess:
        """A command in the node's netns and private mount namespace."""
        env = {
            "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "CONTAINERS_CONF": os.path.join(self.work, "containers.conf"),
            "CONTAINERS_STORAGE_CONF": os.path.join(self.work, "storage.conf"),
            "HOME": self.work,
        }
        full = ["nsenter", "-t", str(self.holder.pid), "-m", "-n", "--", *argv]
        proc = subprocess.run(
            full, env=env, capture_output=True, text=True, timeout=timeout, input=input
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"{argv} failed ({proc.returncode}): {proc.stderr[-3000:]}")
        return proc

    def spawn(self, *argv, **popen) -> subprocess.Popen:
        """A long-running process in the node's namespaces (nsenter execs it: its PID is ours)."""
        return subprocess.Popen(
            ["nsenter", "-t", str(self.holder.pid), "-m", "-n", "--", *argv], **popen
        )

    def podman(self, *argv, check=True, timeout=120) -> str:
        return self.sh("podman", *argv, check=check, timeout=timeout).stdout.strip()

    def _import_image(self) -> None:
        rootfs = busybox_rootfs(os.path.join(self.work, "rootfs"))
        tarball = os.path.join(self.work, "rootfs.tar")
        subprocess.run(["tar", "-C", rootfs, "-cf", tarball, "."], check=True)
        self.podman("import", "--change", "CMD=/bin/sh", tarball, IMAGE)

    def run_container(self, name: str, *options, command=("httpd", "-f", "-p", "80", "-h", "/www")):
        return self.podman("run", "-d", "--name", name, *options, IMAGE, *command)

    def inspect_ip(self, name: str, network: str) -> str:
        data = json.loads(self.podman("inspect", name))
        return data[0]["NetworkSettings"]["Networks"][network]["IPAddress"]

    def exec(self, name: str, *argv, check=False) -> subprocess.CompletedProcess:
        return self.sh("podman", "exec", name, *argv, check=check)

    def close(self) -> None:
        try:
            self.sh("podman", "rm", "-a", "-f", "-t", "0", check=False, timeout=120)
            for net in json.loads(
                self.podman("network", "ls", "--format", "json", check=False) or "[]"
            ):
                if net.get("name") != "podman":
                    self.podman("network", "rm", "-f", net["name"], check=False)
        finally:
            if self.holder.poll() is None:
                self.holder.kill()
                self.holder.wait()
            time.sleep(0.1)
            # Overlay mounts lived in the holder's private mount namespace: nothing to unmount.
            shutil.rmtree(self.work, ignore_errors=True)
