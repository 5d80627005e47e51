"""What the runtime node fixtures (tests/kit/podman/node.py, tests/kit/cri/node.py) share: mounting
cgroups inside a private mount namespace, and a busybox-static root filesystem for their images.
"""

import os
import shutil
import subprocess

# `ip netns exec` remounted /sys without cgroups. On a cgroup v1 machine (these development
# machines): the v1 hierarchies and name=systemd, but not cgroup2 (crun refuses the hybrid);
# on a unified (v2-only) machine, Debian bookworm's default: the one cgroup2 hierarchy.
CGROUP_V1 = r"""
mount -t tmpfs tmpfs /sys/fs/cgroup
while read -r name hierarchy _ enabled; do
    case "$name" in "#"*) continue;; esac
    [ "$hierarchy" != 0 ] && [ "$enabled" = 1 ] || continue
    mkdir -p "/sys/fs/cgroup/$name"
    mount -t cgroup -o "$name" cgroup "/sys/fs/cgroup/$name" 2>/dev/null ||
        rmdir "/sys/fs/cgroup/$name"
done < /proc/cgroups
mkdir -p /sys/fs/cgroup/systemd
mount -t cgroup -o none,name=systemd cgroup /sys/fs/cgroup/systemd
"""
CGROUP_V2 = "mount -t cgroup2 cgroup2 /sys/fs/cgroup\n"


def unified_cgroups() -> bool:
    kind = subprocess.run(
        ["stat", "-f", "-c", "%T", "/sys/fs/cgroup"], capture_output=True, text=True
    ).stdout.strip()
    return kind == "cgroup2fs"


def cgroup_mounts() -> str:
    """Shell lines that mount this machine's cgroup layout on /sys/fs/cgroup."""
    return CGROUP_V2 if unified_cgroups() else CGROUP_V1


UDPECHO_SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "podman", "udpecho.c")


def busybox_rootfs(rootfs: str) -> str:
    """A root filesystem at `rootfs`: Debian's static busybox with every applet linked in /bin,
    /www/index.html answering "pod", and /bin/udpecho (a static UDP echo server, tests/kit/podman/
    udpecho.c, compiled here: busybox has no UDP server)."""
    os.makedirs(os.path.join(rootfs, "bin"))
    os.makedirs(os.path.join(rootfs, "www"))
    shutil.copy("/bin/busybox", os.path.join(rootfs, "bin", "busybox"))
    applets = subprocess.run(["/bin/busybox", "--list"], capture_output=True, text=True)
    for applet in applets.stdout.split():
        if applet != "busybox":
            os.symlink("busybox", os.path.join(rootfs, "bin", applet))
    with open(os.path.join(rootfs, "www", "index.html"), "w") as f:
        f.write("pod\n")
    subprocess.run(
        ["gcc", "-static", "-O2", "-o", os.path.join(rootfs, "bin", "udpecho"), UDPECHO_SOURCE],
        check=True,
    )
    return rootfs
