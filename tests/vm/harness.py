"""Run a command under Debian's stock kernel in qemu (software emulation), on this machine's
files, for the link kinds this machine's kernel lacks (8021q, ipvlan, dummy, bridge VLAN
filtering). See shared/reference/KERNELVM.md for the facts behind the choices here.

- Kernel: the `linux-image-<version>-amd64` package of Debian's registry, downloaded once with
  `apt-get download` and unpacked with `dpkg-deb -x` under build/work/vm-kernel (never
  installed; nothing touches /boot).
- Root: a tiny initramfs (static busybox + the modules to reach the files) mounts this
  machine's / read-only over virtio-9p with a tmpfs overlay, fresh tmpfs on /run /tmp /var,
  the package's modules on /lib/modules/<version> (so modprobe works inside), then runs the
  command in a chroot.
- Results: the command's stdout/stderr and exit status are written to a read-write 9p share.
"""

import glob
import gzip
import io
import os
import re
import shutil
import subprocess
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CACHE = os.path.join(REPO, "build", "work", "vm-kernel")
BUSYBOX = "/bin/busybox"
# Modules the initramfs loads itself (their dependencies are found from .modinfo); the rest
# load on demand from inside, through modprobe.
BOOT_MODULES = ("virtio_pci", "9pnet_virtio", "9p", "overlay")
TEST_MODULES = ("8021q", "ipvlan", "dummy", "macvlan", "veth", "bridge", "vrf")
BOOT_ATTEMPTS = 2


class VMError(RuntimeError):
    pass


def _run(argv: list, **kwargs) -> str:
    proc = subprocess.run(argv, capture_output=True, text=True, **kwargs)
    if proc.returncode != 0:
        raise VMError(f"{' '.join(argv)} failed: {proc.stderr.strip()[-500:]}")
    return proc.stdout


def kernel_package() -> str:
    """linux-image-<version>-amd64, the package linux-image-amd64 currently depends on."""
    out = _run(["apt-cache", "depends", "linux-image-amd64"])
    match = re.search(r"Depends: (linux-image-[0-9][^\s]*-amd64)", out)
    if not match:
        raise VMError("apt-cache does not know linux-image-amd64 (apt-get update?)")
    return match.group(1)


def unpacked_kernel() -> tuple:
    """(vmlinuz path, modules dir) of the unpacked kernel package, fetching it if needed."""
    os.makedirs(CACHE, exist_ok=True)
    debs = sorted(glob.glob(os.path.join(CACHE, "linux-image-*-amd64_*.deb")))
    if not debs:
        _run(["apt-get", "download", kernel_package()], cwd=CACHE)
        debs = sorted(glob.glob(os.path.join(CACHE, "linux-image-*-amd64_*.deb")))
    root = os.path.join(CACHE, "root")
    stamp = os.path.join(root, ".from")
    if not os.path.exists(stamp) or open(stamp).read() != debs[-1]:
        shutil.rmtree(root, ignore_errors=True)
        _run(["dpkg-deb", "-x", debs[-1], root])
        with open(stamp, "w") as f:
            f.write(debs[-1])
    vmlinuz = glob.glob(os.path.join(root, "boot", "vmlinuz-*"))[0]
    modules = glob.glob(os.path.join(root, "lib", "modules", "*"))[0]
    return vmlinuz, modules


# -- modules and their dependencies ----------------------------------------------------------


def module_files(modules_dir: str) -> dict:
    """{module name: path} (names with "_", as the kernel spells them)."""
    found = {}
    for path in glob.glob(os.path.join(modules_dir, "kernel", "**", "*.ko"), recursive=True):
        found[os.path.basename(path)[:-3].replace("-", "_")] = path
    return found


def depends(path: str) -> list:
    with open(path, "rb") as f:
        match = re.search(rb"depends=([^\0]*)\0", f.read())
    names = match.group(1).decode() if match else ""
    return [n.replace("-", "_") for n in names.split(",") if n]


def load_order(wanted, files: dict) -> list:
    """`wanted` with all dependencies, each after what it needs."""
    order: list = []

    def visit(name: str) -> None:
        if name in order or name not in files:
            return  # built into the kernel, or already placed
        for dep in depends(files[name]):
            visit(dep)
        order.append(name)

    for name in wanted:
        visit(name)
    return order


# -- initramfs -------------------------------------------------------------------------------

INIT = """#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
for m in $(cat /modules.order); do insmod /modules/$m.ko 2>/dev/null; done
mkdir -p /lower /upper /newroot /results
mount -t tmpfs tmpfs /upper && mkdir -p /upper/up /upper/work
mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=262144,cache=loose hostroot /lower
mount -t overlay overlay -o lowerdir=/lower,upperdir=/upper/up,workdir=/upper/work /newroot
mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144 results /results
exec 2>/results/init.log
mount -t proc proc /newroot/proc; mount -t sysfs sys /newroot/sys
mount -t devtmpfs dev /newroot/dev; mkdir -p /newroot/dev/pts /newroot/dev/shm
mount -t devpts devpts /newroot/dev/pts; mount -t tmpfs tmpfs /newroot/dev/shm
for d in run tmp var; do mount -t tmpfs tmpfs /newroot/$d; done
mkdir -p /newroot/run/netns /newroot/var/tmp /newroot/var/lib /newroot/lib/modules/{version}
ln -s /run /newroot/var/run
mount --bind /lower{modules} /newroot/lib/modules/{version}
mkdir -p /newroot/results && mount --bind /results /newroot/results
# A checkout under /tmp, /run or /var (CI's may be) was hidden by the fresh tmpfs: put it back,
# writable through its own overlay.
case "{cwd}" in /tmp/*|/run/*|/var/*)
    mkdir -p /upper/repo-up /upper/repo-work /newroot{cwd}
    layers=lowerdir=/lower{cwd},upperdir=/upper/repo-up,workdir=/upper/repo-work
    mount -t overlay overlay -o "$layers" /newroot{cwd}
esac
echo booted > /results/booted
chroot /newroot /bin/sh -c 'cd {cwd} && exec /bin/sh /results/command.sh' \
    > /results/stdout 2> /results/stderr
echo $? > /results/status
sync
poweroff -f
"""


def _cpio_entry(name: str, mode: int, data: bytes = b"") -> bytes:
    fields = [0, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(name) + 1, 0]
    header = "070701" + "".join(f"{value:08x}" for value in fields)
    out = header.encode() + name.encode() + b"\0"
    out += b"\0" * (-len(out) % 4) + data
    return out + b"\0" * (-len(out) % 4)


def initramfs(modules_dir: str, path: str) -> None:
    files = module_files(modules_dir)
    order = load_order(BOOT_MODULES + TEST_MODULES, files)
    version = os.path.basename(modules_dir)
    init = INIT.replace("{version}", version).replace("{modules}", modules_dir)
    init = init.replace("{cwd}", REPO)
    entries = [
        ("bin", 0o40755, b""),
        ("proc", 0o40755, b""),
        ("sys", 0o40755, b""),
        ("dev", 0o40755, b""),
        ("modules", 0o40755, b""),
    ]
    with open(BUSYBOX, "rb") as f:
        entries.append(("bin/busybox", 0o100755, f.read()))
    entries.append(("init", 0o100755, init.encode()))
    entries.append(("modules.order", 0o100644, "\n".join(order).encode() + b"\n"))
    for name in order:
        with open(files[name], "rb") as f:
            entries.append((f"modules/{name}.ko", 0o100644, f.read()))
    blob = io.BytesIO()
    with gzip.GzipFile(fileobj=blob, mode="wb", compresslevel=1) as gz:
        for name, mode, data in entries:
            gz.write(_cpio_entry(name, mode, data))
        gz.write(_cpio_entry("TRAILER!!!", 0))
    with open(path, "wb") as f:
        f.write(blob.getvalue())


# -- running -----------------------------------------------------------------------------


class Run:
    def __init__(
        self, status: int, stdout: str, stderr: str, seconds: float, boot: float, files: dict
    ):
        self.status, self.stdout, self.stderr = status, stdout, stderr
        self.seconds, self.boot_seconds = seconds, boot
        self.files = files  # what the command left in /results, by name


def qemu_argv(vmlinuz: str, initrd: str, results: str) -> list:
    append = (
        "console=ttyS0 quiet panic=-1 cryptomgr.notests random.trust_cpu=on "
        "no_timer_check tsc=reliable"
    )
    return [
        "qemu-system-x86_64",
        "-M",
        "q35,accel=tcg",
        "-cpu",
        "max,-erms,-fsrm",
        "-smp",
        "2",
        "-m",
        "2048",
        "-nographic",
        "-no-reboot",
        "-nic",
        "none",
        "-kernel",
        vmlinuz,
        "-initrd",
        initrd,
        "-append",
        append,
        # multidevs=remap: / spans several filesystems whose inode numbers would collide.
        "-virtfs",
        "local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap",
        "-virtfs",
        f"local,path={results},mount_tag=results,security_model=none",
    ]


def run(command: str, timeout: float = 900, collect=()) -> Run:
    """Boot the VM, run `command` (sh) in the repo directory, return its status and output.
    A boot that never reaches the command is retried once (TCG boots occasionally hang)."""
    if shutil.which("qemu-system-x86_64") is None:
        raise VMError("qemu-system-x86_64 is not installed (Debian package qemu-system-x86)")
    vmlinuz, modules = unpacked_kernel()
    with tempfile.TemporaryDirectory(prefix="pycni-vm-") as work:
        initrd = os.path.join(work, "initrd.gz")
        initramfs(modules, initrd)
        for attempt in range(BOOT_ATTEMPTS):
            results = os.path.join(work, f"results{attempt}")
            os.mkdir(results)
            with open(os.path.join(results, "command.sh"), "w") as f:
                f.write(command + "\n")
            started = time.monotonic()
            proc = subprocess.Popen(
                qemu_argv(vmlinuz, initrd, results),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
            )
            booted_at = None
            deadline = started + timeout
            try:
                while proc.poll() is None:
                    if booted_at is None and os.path.exists(os.path.join(results, "booted")):
                        booted_at = time.monotonic()
                    if booted_at is None and time.monotonic() - started > 120:
                        break  # a hung boot: try again
                    if time.monotonic() > deadline:
                        break
                    time.sleep(0.2)
            finally:
                if proc.poll() is None:
                    proc.kill()
                console = proc.communicate()[0].decode(errors="replace")
            status_file = os.path.join(results, "status")
            if os.path.exists(status_file):

                def read(name, folder=results):
                    with open(os.path.join(folder, name), errors="replace") as f:
                        return f.read()

                files = {n: read(n) for n in collect if os.path.exists(os.path.join(results, n))}
                return Run(
                    int(read("status").strip() or 1),
                    read("stdout"),
                    read("stderr"),
                    time.monotonic() - started,
                    (booted_at or time.monotonic()) - started,
                    files,
                )
            if booted_at is not None:
                raise VMError(f"the command did not finish in {timeout} s\n{console[-3000:]}")
        raise VMError(f"the VM did not boot after {BOOT_ATTEMPTS} attempts\n{console[-3000:]}")


if __name__ == "__main__":
    import sys

    done = run(" ".join(sys.argv[1:]) or "uname -r")
    print(done.stdout, end="")
    print(done.stderr, end="", file=sys.stderr)
    print(
        f"[vm] status {done.status}, boot {done.boot_seconds:.1f} s, total {done.seconds:.1f} s",
        file=sys.stderr,
    )
    sys.exit(done.status)
