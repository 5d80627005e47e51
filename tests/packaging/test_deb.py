"""`make deb` (build/deb.py): the package holds the plugin dir as `make build` lays it out,
installs into a scratch root (dpkg --root, maintainer scripts run with DPKG_ROOT so that they
enable the sockets in that root, never on this machine), runs a plugin from there, removes
without a trace, and is lintian clean of errors.

Never touches this machine's /opt/cni/bin, /etc or systemd: every dpkg call gets --root, and
the test checks the machine's enablement links before and after.
"""

import os
import runpy
import shutil
import subprocess

import pytest
from conftest import REPO, ip_json, run_plugin

DEB = runpy.run_path(os.path.join(REPO, "build", "deb.py"))
SYSTEMD = os.path.join(REPO, "build", "systemd")
HOST_WANTS = "/etc/systemd/system/sockets.target.wants"
LO = {"cniVersion": "1.0.0", "name": "lo-net", "type": "loopback"}


def tree(root: str) -> set:
    found = set()
    for directory, dirs, files in os.walk(root):
        for name in dirs + files:
            found.add(os.path.relpath(os.path.join(directory, name), root))
    return found


@pytest.fixture(scope="module")
def deb(frozen_bin, tmp_path_factory):
    if shutil.which("dpkg-deb") is None:
        pytest.fail("dpkg-deb missing (package dpkg)")
    out = tmp_path_factory.mktemp("deb")
    # gzip: faster to build than make deb's xz; the contents are the same.
    return DEB["build"](frozen_bin, str(out), "gzip", str(out / "work"))


@pytest.fixture(scope="module")
def unpacked(deb, tmp_path_factory):
    root = tmp_path_factory.mktemp("unpacked")
    subprocess.run(["dpkg-deb", "-x", deb, str(root)], check=True)
    return root


def test_the_plugin_dir_is_build_dist_bin_as_it_is(frozen_bin, unpacked):
    plugin_dir = unpacked / "opt" / "cni" / "bin"
    assert tree(str(plugin_dir)) == tree(frozen_bin)
    # One file under every program name, as in build/dist/bin.
    inode = os.stat(plugin_dir / "loopback").st_ino
    assert all(os.stat(plugin_dir / n).st_ino == inode for n in ("bridge", "cnitool", "vrf"))
    assert os.readlink(unpacked / "usr" / "bin" / "cnitool") == "/opt/cni/bin/cnitool"
    units = sorted(os.listdir(unpacked / "lib" / "systemd" / "system"))
    sources = [n for n in os.listdir(SYSTEMD) if n.endswith(DEB["UNIT_SUFFIXES"])]
    assert units == sorted(DEB["packaged_name"](n) for n in sources)
    # Debian's containernetworking-plugins owns the upstream dhcp unit names.
    assert "cni-dhcp.socket" not in units and "pycni-dhcp.socket" in units
    assert (unpacked / "usr/share/man/man8/cnitool.8.gz").exists()
    assert (unpacked / "usr/share/doc/pycni/copyright").exists()


def test_control_and_maintainer_scripts(deb):
    info = subprocess.run(["dpkg-deb", "-f", deb], capture_output=True, text=True).stdout
    assert "Package: pycni" in info and "Depends: libc6 (>= 2." in info
    postinst = subprocess.run(["dpkg-deb", "-I", deb, "postinst"], capture_output=True, text=True)
    enabled = postinst.stdout.split('UNITS="', 1)[1].split('"', 1)[0].split()
    assert enabled == ["pycni-dhcp.socket", "pycni.socket"]
    assert 'if [ -z "${DPKG_ROOT:-}" ] && [ -d /run/systemd/system ]' in postinst.stdout


def test_a_plugin_runs_from_the_unpacked_package(unpacked, netns):
    plugin_dir = str(unpacked / "opt" / "cni" / "bin")
    version = run_plugin(plugin_dir, "loopback", "VERSION", {"cniVersion": "1.0.0"})
    assert version.returncode == 0 and "1.1.0" in version.json["supportedVersions"]
    add = run_plugin(plugin_dir, "loopback", "ADD", LO, netns=netns, ifname="lo")
    assert add.returncode == 0, add
    assert "UP" in ip_json(netns, "link", "show", "lo")[0]["flags"]
    delete = run_plugin(plugin_dir, "loopback", "DEL", LO, netns=netns, ifname="lo")
    assert delete.returncode == 0, delete
    assert "UP" not in ip_json(netns, "link", "show", "lo")[0]["flags"]


def dpkg(root, *args) -> subprocess.CompletedProcess:
    # Scripts run on this machine with DPKG_ROOT=root (no shell inside the scratch root);
    # the scratch root has no libc6 in its status file, hence --force-depends.
    argv = ["dpkg", f"--root={root}", "--force-script-chrootless", "--force-depends", *args]
    env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
    return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=300)


def test_install_into_a_scratch_root_enables_the_sockets_and_purge_leaves_nothing(
    deb, tmp_path, netns
):
    root = tmp_path / "root"
    admin = root / "var" / "lib" / "dpkg"
    for sub in ("info", "updates", "triggers"):
        (admin / sub).mkdir(parents=True)
    (admin / "status").write_text("")
    (admin / "available").write_text("")
    before = tree(str(root))
    host_wants = sorted(os.listdir(HOST_WANTS)) if os.path.isdir(HOST_WANTS) else []

    installed = dpkg(root, "-i", deb)
    assert installed.returncode == 0, installed.stderr
    plugin_dir = str(root / "opt" / "cni" / "bin")
    add = run_plugin(plugin_dir, "loopback", "ADD", LO, netns=netns, ifname="lo")
    assert add.returncode == 0, add
    cnitool = subprocess.run(
        [str(root / "opt/cni/bin/cnitool"), "version"], capture_output=True, text=True
    )
    assert cnitool.returncode == 0 and "pycniVersion" in cnitool.stdout
    if shutil.which("deb-systemd-helper"):
        link = root / "etc/systemd/system/sockets.target.wants/pycni.socket"
        assert os.readlink(link) == "/lib/systemd/system/pycni.socket"

    purged = dpkg(root, "--purge", "pycni")
    assert purged.returncode == 0, purged.stderr
    left = {p for p in tree(str(root)) - before if not p.startswith("var/lib/dpkg")}
    # No file or link is left; only the empty directories deb-systemd-helper made (on a real
    # system they exist anyway).
    assert {p for p in left if os.path.islink(root / p) or not os.path.isdir(root / p)} == set()
    assert left <= {"etc", "etc/systemd", "etc/systemd/system", "var", "var/lib", "var/lib/systemd"}
    assert (sorted(os.listdir(HOST_WANTS)) if os.path.isdir(HOST_WANTS) else []) == host_wants


def test_lintian_reports_no_errors(deb):
    if shutil.which("lintian") is None:
        pytest.fail("lintian missing: make deps-test installs it (build/apt-packages-test.txt)")
    # binaries/spelling greps every string of every ELF file for typos: 40 s of the run, and it
    # only ever emits informational tags.
    proc = subprocess.run(
        ["lintian", "--tag-display-limit", "0", "-X", "binaries/spelling", deb],
        capture_output=True,
        text=True,
        timeout=120,
    )
    errors = [line for line in proc.stdout.splitlines() if line.startswith("E:")]
    assert errors == [], proc.stdout
    assert proc.returncode == 0, proc.stdout + proc.stderr
