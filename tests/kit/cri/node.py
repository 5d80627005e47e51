"""Debian's containerd 1.6 with its CRI plugin, the kubelet's runtime, on a given CNI plugin
directory, inside a test-owned node netns. How containerd behaves here is in
shared/reference/RUNTIMES.md; the CRI calls go through tests/kit/cri/client.py.

One holder process (`unshare -m -p -f --kill-child`, entered through `ip netns exec <node>`)
owns a private mount namespace and a private PID namespace: fresh tmpfs on /run,
/var/lib/containerd and /var/lib/cni, the cgroup hierarchies, and its own /proc. containerd,
its shims and every pod live in that PID namespace, so killing the holder (the one process the
fixture started for it) ends all of them. containerd's own config, root, state and socket paths
are set in its config; its socket sits in the node's work directory, reachable from the test.
Nodes share a "LAN" netns (a bridge with an outside host address) that plays the rest of the
network; two nodes on one LAN form a small cluster.
"""

import hashlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time

from kit.cri.client import NODE, POD, CriClient
from kit.nodekit import busybox_rootfs, cgroup_mounts

IMAGE = "localhost/pycni-pod:test"
LAN_PREFIX = "192.168.210"
OUTSIDE_ADDRESS = f"{LAN_PREFIX}.254"
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
CONFLIST_NAME = "10-pycni-test.conflist"

# PID 1 of the node's PID namespace: reaps the shims that containerd leaves to it.
REAPER = "import os, time\nwhile True:\n try: os.wait()\n except ChildProcessError: time.sleep(1)"
HOLDER = r"""
set -e
{cgroups}
for d in /run /var/lib/containerd /var/lib/cni; do
    mkdir -p "$d" && mount -t tmpfs tmpfs "$d"
done
ip link set lo up
echo ready
exec {python} -c '{reaper}'
"""

# The sandbox image's entrypoint: the servers the tests talk to (HTTP on 80 with a CGI that
# answers the peer's address, UDP echo on 5353), then sleep until TERM. A pause that serves.
POD_INIT = """#!/bin/sh
udpecho 5353 &
httpd -p 80 -h /www
trap 'exit 0' TERM
while :; do sleep 3600 & wait $!; done
"""
PEER_CGI = """#!/bin/sh
printf 'Content-Type: text/plain\\r\\n\\r\\n%s\\n' "$REMOTE_ADDR"
"""


def _containerd_config(work: str, plugin_dir: str) -> str:
    cri = '[plugins."io.containerd.grpc.v1.cri"'
    return f"""version = 2
root = "/var/lib/containerd"
state = "/run/containerd"
disabled_plugins = ["io.containerd.internal.v1.opt", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.aufs", "io.containerd.tracing.processor.v1.otlp"]
[grpc]
  address = "{work}/containerd.sock"
[ttrpc]
  address = "{work}/containerd.sock.ttrpc"
[debug]
  level = "info"
{cri}]
  sandbox_image = "{IMAGE}"
  restrict_oom_score_adj = true
  disable_apparmor = true
  stream_server_address = "127.0.0.1"
{cri}.cni]
  bin_dir = "{plugin_dir}"
  conf_dir = "{work}/net.d"
  max_conf_num = 1
{cri}.containerd]
  snapshotter = "overlayfs"
  default_runtime_name = "runc"
{cri}.containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"
{cri}.containerd.runtimes.runc.options]
  SystemdCgroup = false
"""


def _blob(layout: tarfile.TarFile, data: bytes) -> str:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    info = tarfile.TarInfo(f"blobs/sha256/{digest[7:]}")
    info.size = len(data)
    layout.addfile(info, io.BytesIO(data))
    return digest


def build_pod_image(path: str, work: str) -> str:
    """An OCI image-layout tarball at `path` holding IMAGE (busybox rootfs, POD_INIT)."""
    rootfs = busybox_rootfs(os.path.join(work, "rootfs"))
    os.makedirs(os.path.join(rootfs, "www", "cgi-bin"))
    for name, text in (("init", POD_INIT), (os.path.join("www", "cgi-bin", "peer"), PEER_CGI)):
        with open(os.path.join(rootfs, name), "w") as f:
            f.write(text)
        os.chmod(os.path.join(rootfs, name), 0o755)
    for empty in ("proc", "sys", "dev", "etc", "tmp", "run"):
        os.makedirs(os.path.join(rootfs, empty), exist_ok=True)
    layer = io.BytesIO()
    with tarfile.open(fileobj=layer, mode="w") as tar:
        tar.add(rootfs, arcname=".")
    layer_bytes = layer.getvalue()
    layer_digest = "sha256:" + hashlib.sha256(layer_bytes).hexdigest()
    config = {
        "architecture": "amd64",
        "os": "linux",
        "config": {"Entrypoint": ["/init"], "Env": [f"PATH={PATH}"]},
        "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
    }
    with tarfile.open(path, "w") as layout:
        _blob(layout, layer_bytes)
        config_bytes = json.dumps(config).encode()
        manifest = {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": _blob(layout, config_bytes),
                "size": len(config_bytes),
            },
            "layers": [
                {
                    "mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": layer_digest,
                    "size": len(layer_bytes),
                }
            ],
        }
        manifest_bytes = json.dumps(manifest).encode()
        index = {
            "schemaVersion": 2,
            "manifests": [
                {
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "digest": _blob(layout, manifest_bytes),
                    "size": len(manifest_bytes),
                    "annotations": {
                        "io.containerd.image.name": IMAGE,
                        "org.opencontainers.image.ref.name": "test",
                    },
                }
            ],
        }
        for name, data in (
            ("oci-layout", b'{"imageLayoutVersion": "1.0.0"}'),
            ("index.json", json.dumps(index).encode()),
        ):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            layout.addfile(info, io.BytesIO(data))
    return path


def kubernetes_conflist(node, version: str, subnet: str) -> dict:
    """The Kubernetes-like list (bridge + host-local, portmap, bandwidth, tuning, firewall) for
    `subnet` ("a.b.c", a /24), its bridge named after the subnet's third octet."""
    plugins = [
        {
            "type": "bridge",
            "bridge": f"cni{subnet.split('.')[2]}",
            "isGateway": True,
            "ipMasq": True,
            "hairpinMode": True,
            "ipam": node.host_local(f"{subnet}.0/24", routes=[{"dst": "0.0.0.0/0"}]),
        },
        {"type": "portmap", "capabilities": {"portMappings": True}, "snat": True},
        {"type": "bandwidth", "capabilities": {"bandwidth": True}},
        {"type": "tuning", "sysctl": {"net.core.somaxconn": "1024"}},
        {"type": "firewall", "backend": "iptables"},
    ]
    return {"cniVersion": version, "name": f"k8s-{subnet.replace('.', '-')}", "plugins": plugins}


class Lan:
    """A "switch" netns: bridge br0 holding OUTSIDE_ADDRESS, the nodes' uplinks as its ports."""

    def __init__(self, namespaces):
        self.netns = namespaces("crl")
        self.name = os.path.basename(self.netns)
        self.ports = 0
        for argv in (
            ("link", "set", "lo", "up"),
            ("link", "add", "br0", "type", "bridge"),
            ("addr", "add", f"{OUTSIDE_ADDRESS}/24", "dev", "br0"),
            ("link", "set", "br0", "up"),
        ):
            subprocess.run(["ip", "-n", self.name, *argv], check=True)

    def attach(self, node_netns: str, address: str) -> None:
        """Link a node to the LAN: its `uplink` with `address`/24 and a default route."""
        node = os.path.basename(node_netns)
        self.ports += 1
        port = f"port{self.ports}"
        run = lambda *argv: subprocess.run(["ip", *argv], check=True)  # noqa: E731
        run("-n", node, "link", "add", "uplink", "type", "veth", "peer", port, "netns", self.name)
        run("-n", self.name, "link", "set", port, "master", "br0", "up")
        run("-n", node, "addr", "add", f"{address}/24", "dev", "uplink")
        run("-n", node, "link", "set", "uplink", "up")
        run("-n", node, "route", "add", "default", "via", OUTSIDE_ADDRESS)


class CriNode:
    """containerd serving CRI on `plugin_dir`, in a node netns on `lan` at `address`."""

    def __init__(self, namespaces, plugin_dir: str, lan: Lan, address: str, image_tar: str):
        self.plugin_dir = plugin_dir
        self.address = address
        self.lan = lan
        self.netns = namespaces("crn")
        self.name = os.path.basename(self.netns)
        self.work = tempfile.mkdtemp(prefix="pycni-cri-")
        self.socket = os.path.join(self.work, "containerd.sock")
        self.conf_dir = os.path.join(self.work, "net.d")
        self.host_local_dir = os.path.join(self.work, "host-local")
        os.makedirs(self.conf_dir)
        self.config = os.path.join(self.work, "containerd.toml")
        with open(self.config, "w") as f:
            f.write(_containerd_config(self.work, plugin_dir))
        lan.attach(self.netns, address)
        self.containerd = self.containerd_launcher = self.client = None
        script = HOLDER.format(cgroups=cgroup_mounts(), python=sys.executable, reaper=REAPER)
        self.holder = subprocess.Popen(
            [
                "ip",
                "netns",
                "exec",
                self.name,
                "unshare",
                "--mount",
                "--pid",
                "--fork",
                "--kill-child",
                "--mount-proc",
                "sh",
                "-c",
                script,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            if self.holder.stdout.readline().strip() != "ready":
                raise RuntimeError(f"containerd holder failed: {self.holder.stderr.read()}")
            self.init_pid = self._child_of(self.holder.pid)
            self.start()
            self.sh("ctr", "--address", self.socket, "-n", "k8s.io", "images", "import", image_tar)
            self.set_conflist(
                {"cniVersion": "1.0.0", "name": "boot", "plugins": [{"type": "loopback"}]}
            )
        except BaseException:
            self.close()
            raise

    @staticmethod
    def _child_of(pid: int) -> int:
        """The one child of process `pid` (unshare --fork's, nsenter --pid's), as PID here."""
        for _ in range(100):
            with open(f"/proc/{pid}/task/{pid}/children") as f:
                children = f.read().split()
            if children:
                return int(children[0])
            time.sleep(0.02)
        raise RuntimeError(f"process {pid} started no child")

    # -- containerd ---------------------------------------------------------------------------

    def start(self, timeout: float = 30) -> None:
        self.log = open(os.path.join(self.work, "containerd.log"), "a")
        self.containerd_launcher = subprocess.Popen(
            [
                "nsenter",
                "-t",
                str(self.init_pid),
                "-m",
                "-n",
                "-p",
                "--",
                "containerd",
                "--config",
                self.config,
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env={"PATH": PATH},
        )
        self.containerd = self._child_of(self.containerd_launcher.pid)
        deadline = time.monotonic() + timeout
        while not os.path.exists(self.socket):
            if self.containerd_launcher.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"containerd did not start: {self.log_tail()}")
            time.sleep(0.05)
        self.client = CriClient(self.socket)
        while True:
            try:
                self.client.version()
                return
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def stop(self) -> None:
        """Stop containerd (SIGTERM, by PID); shims and pods keep running, as on a node."""
        if self.client:
            self.client.close()
            self.client = None
        if self.containerd_launcher and self.containerd_launcher.poll() is None:
            os.kill(self.containerd, signal.SIGTERM)
            try:
                self.containerd_launcher.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.kill(self.containerd, signal.SIGKILL)
                self.containerd_launcher.wait()
        self.containerd = None
        self.log.close()
        if os.path.exists(self.socket):
            os.unlink(self.socket)

    def restart(self) -> None:
        self.stop()
        self.start()
        self.wait_network_ready()

    def start_fast_path(self, timeout: float = 30) -> None:
        """Run our pycni-daemon in the node (its socket at the fixed /run/pycni/pycni.sock,
        private to the node's /run): every plugin exec containerd makes then forwards to it."""
        # In the runtime folder of a frozen build (no plugin), beside source launchers.
        daemon = os.path.join(self.plugin_dir, "_internal", "pycni-daemon")
        if not os.path.exists(daemon):
            daemon = os.path.join(self.plugin_dir, "pycni-daemon")
        self.fast_path_launcher = subprocess.Popen(
            ["nsenter", "-t", str(self.init_pid), "-m", "-n", "-p", "--", daemon],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env={"PATH": PATH},
        )
        deadline = time.monotonic() + timeout
        while self.sh("test", "-S", "/run/pycni/pycni.sock", check=False).returncode != 0:
            if self.fast_path_launcher.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("pycni-daemon did not start in the node")
            time.sleep(0.1)

    def log_tail(self, chars: int = 4000) -> str:
        with open(os.path.join(self.work, "containerd.log")) as f:
            return f.read()[-chars:]

    # -- networks -----------------------------------------------------------------------------

    def set_conflist(self, conflist: dict, timeout: float = 20) -> None:
        """Write `conflist` in place (containerd 1.6 ignores a file moved in) and wait until CRI
        has loaded exactly this text and reports NetworkReady."""
        text = json.dumps(conflist, indent=1)
        with open(os.path.join(self.conf_dir, CONFLIST_NAME), "w") as f:
            f.write(text)
        deadline = time.monotonic() + timeout
        while True:
            if self.loaded_conflist() == text and self.client.network_ready():
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"containerd did not load the conflist: {self.log_tail()}")
            time.sleep(0.05)

    def loaded_conflist(self) -> str | None:
        info = self.client.status(verbose=True)["info"]
        config = json.loads(info.get("cniconfig", "{}"))
        for network in config.get("Networks") or []:
            if network.get("IFName") != "lo":
                return network["Config"]["Source"]
        return None

    def wait_network_ready(self, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while not self.client.network_ready():
            if time.monotonic() > deadline:
                raise AssertionError("CRI never reported NetworkReady")
            time.sleep(0.05)

    def host_local(self, *ranges, routes=None) -> dict:
        """A host-local IPAM block with its dataDir in this node's work directory."""
        block = {
            "type": "host-local",
            "dataDir": self.host_local_dir,
            "ranges": [[{"subnet": r} if isinstance(r, str) else r] for r in ranges],
        }
        if routes is not None:
            block["routes"] = routes
        return block

    # -- pods -----------------------------------------------------------------------------------

    def run_pod(
        self, name: str, ports=(), annotations=None, host_network=False, wait_serving=True
    ) -> str:
        """RunPodSandbox; `ports` are (protocol, container_port, host_port, host_ip) tuples;
        `host_network` runs it in the node's netns (no CNI at all). RunPodSandbox returns once
        the sandbox's init runs; with `wait_serving`, also wait until its servers answer."""
        config = {
            "metadata": {"name": name, "uid": f"uid-{name}", "namespace": "default"},
            "hostname": "" if host_network else name,  # runc sets none without a UTS ns
            "log_directory": os.path.join(self.work, "logs", name),
            "port_mappings": [
                {"protocol": proto, "container_port": inner, "host_port": outer, "host_ip": host_ip}
                for proto, inner, outer, host_ip in ports
            ],
            "annotations": dict(annotations or {}),
            "labels": {"io.kubernetes.pod.name": name},
            "linux": {
                "security_context": {
                    "namespace_options": {"network": NODE if host_network else POD}
                }
            },
        }
        sandbox_id = self.client.run_pod_sandbox(config)
        if wait_serving and not host_network:
            self.wait_serving(sandbox_id)
        return sandbox_id

    def wait_serving(self, sandbox_id: str, timeout: float = 10) -> None:
        netns = self.pod_netns(sandbox_id)
        deadline = time.monotonic() + timeout
        while (
            self.sh(
                "curl", "-s", "-m", "1", "http://127.0.0.1/", netns=netns, check=False
            ).stdout.strip()
            != "pod"
        ):
            if time.monotonic() > deadline:
                raise AssertionError(f"pod {sandbox_id} does not serve HTTP on its loopback")
            time.sleep(0.05)

    def remove_pod(self, sandbox_id: str) -> None:
        self.client.stop_pod_sandbox(sandbox_id)
        self.client.remove_pod_sandbox(sandbox_id)

    def pod_ip(self, sandbox_id: str) -> str:
        return self.client.pod_sandbox_status(sandbox_id)["status"]["network"]["ip"]

    def pod_info(self, sandbox_id: str) -> dict:
        """containerd's verbose sandbox info (runtimeSpec, cniResult, pid)."""
        status = self.client.pod_sandbox_status(sandbox_id, verbose=True)
        return json.loads(status["info"]["info"])

    def pod_netns(self, sandbox_id: str) -> str:
        spec = self.pod_info(sandbox_id)["runtimeSpec"]
        return next(n["path"] for n in spec["linux"]["namespaces"] if n["type"] == "network")

    # -- running things inside the node ---------------------------------------------------------

    def sh(self, *argv, check=True, timeout=120, netns=None) -> subprocess.CompletedProcess:
        """A command in the node's netns, private mount and PID namespace (its /proc is that
        PID namespace's: /proc/self exists only inside). In a pod's netns, a path seen from the
        node, when `netns` is given."""
        full = ["nsenter", "-t", str(self.init_pid), "-m", "-n", "-p", "--"]
        if netns:
            full += ["nsenter", f"--net={netns}", "--"]
        proc = subprocess.run(
            [*full, *argv],
            env={"PATH": PATH, "HOME": self.work},
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"{argv} failed ({proc.returncode}): {proc.stderr[-3000:]}")
        return proc

    def remove_all_pods(self) -> None:
        for pod in self.client.list_pod_sandbox():
            self.remove_pod(pod["id"])

    def close(self) -> None:
        try:
            if self.client:
                try:
                    self.remove_all_pods()
                except Exception:
                    pass
            if self.containerd:
                self.stop()
        finally:
            if self.holder.poll() is None:
                self.holder.kill()  # --kill-child: the PID namespace and all in it go too
                self.holder.wait()
            shutil.rmtree(self.work, ignore_errors=True)
