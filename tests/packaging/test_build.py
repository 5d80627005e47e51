"""The frozen layout `make build` produces, and the release tarball made from it.

build/dist/bin holds the native front door (build/frontdoor.c) hard-linked under every program
name of build/multicall.py, next to the `_internal/` runtime folder holding the one PyInstaller
executable (and pycni-daemon, a link of it); tests/fastpath/test_frontdoor.py tests the front
door itself.
These tests need that build (marker `frozen`); the bundle-environment unit test at the end runs
without it.
"""

import json
import os
import re
import runpy
import subprocess
import sys
import tarfile

import pytest
from conftest import REPO

TABLE = runpy.run_path(os.path.join(REPO, "build", "multicall.py"))
PLUGINS = TABLE["PLUGINS"]
PROGRAMS = sorted(PLUGINS)
CNI_PLUGINS = sorted(name for name in PLUGINS if name != "cnitool")
VERSION = runpy.run_path(os.path.join(REPO, "libcni", "__init__.py"))["PYCNI_VERSION"]

# What PyInstaller 6.22's bootloader puts into a frozen process's environment on Linux (seen in
# /proc/<pid>/environ of a running frozen program), plus the pre-6.0 name.
BUNDLE_VARIABLES = (
    "_PYI_ARCHIVE_FILE",
    "_PYI_APPLICATION_HOME_DIR",
    "_PYI_PARENT_PROCESS_LEVEL",
    "_PYI_LINUX_PROCESS_NAME",
    "_PYI_SPLASH_IPC",
    "LD_LIBRARY_PATH_ORIG",
)

ENV_DUMP_PLUGIN = """#!/bin/sh
# Records the environment it was started with, answers like a plugin with nothing to do.
env > "{log}"
[ "$CNI_COMMAND" = ADD ] && printf '{{"cniVersion":"1.0.0"}}'
exit 0
"""


def run(argv, env=None, stdin=b"", cwd=None):
    return subprocess.run(
        argv, env={} if env is None else env, input=stdin, capture_output=True, cwd=cwd, timeout=60
    )


def about(program, env=None, cwd=None):
    """Run a plugin without CNI_COMMAND: it prints what it is on stderr and exits 0."""
    proc = run([program], env=env, cwd=cwd)
    assert proc.returncode == 0, proc
    return proc.stderr.decode()


def env_dump_plugin(directory, name="envdump") -> str:
    log = os.path.join(directory, f"{name}.env")
    path = os.path.join(directory, name)
    with open(path, "w") as f:
        f.write(ENV_DUMP_PLUGIN.format(log=log))
    os.chmod(path, 0o755)
    return log


def read_env(log) -> dict:
    with open(log) as f:
        return dict(line.rstrip("\n").split("=", 1) for line in f if "=" in line)


def assert_no_bundle_leak(child_env: dict, bundle_dir: str) -> None:
    leaked = sorted(k for k in child_env if k.startswith("_PYI_") or k in BUNDLE_VARIABLES)
    assert not leaked, f"bundle variables reached the child: {leaked}"
    assert bundle_dir not in child_env.get("LD_LIBRARY_PATH", ""), child_env


@pytest.mark.frozen
def test_one_executable_hard_linked_under_every_program_name(frozen_bin):
    missing = [name for name in PROGRAMS if not os.path.exists(os.path.join(frozen_bin, name))]
    assert not missing, f"build/dist/bin predates build/multicall.py, run `make build`: {missing}"
    door = os.stat(os.path.join(frozen_bin, PROGRAMS[0]))
    for name in PROGRAMS:
        st = os.lstat(os.path.join(frozen_bin, name))
        assert (st.st_dev, st.st_ino) == (door.st_dev, door.st_ino), f"{name} is not a link"
        assert os.access(os.path.join(frozen_bin, name), os.X_OK)
    frozen = os.stat(os.path.join(frozen_bin, "_internal", "pycni"))
    daemon = os.lstat(os.path.join(frozen_bin, "_internal", TABLE["DAEMON"]))
    assert (daemon.st_dev, daemon.st_ino) == (frozen.st_dev, frozen.st_ino)


@pytest.mark.frozen
def test_one_shared_runtime_dir(frozen_bin):
    dirs = sorted(e.name for e in os.scandir(frozen_bin) if e.is_dir(follow_symlinks=False))
    assert dirs == ["_internal"]
    files = sorted(e.name for e in os.scandir(frozen_bin) if e.is_file(follow_symlinks=False))
    assert files == PROGRAMS
    internal = os.listdir(os.path.join(frozen_bin, "_internal"))
    assert any(name.startswith("libpython3") for name in internal)
    assert {"pycni", TABLE["DAEMON"]} <= set(internal)


@pytest.mark.frozen
@pytest.mark.parametrize("name", CNI_PLUGINS)
def test_version_output(frozen_bin, name):
    proc = run(
        [os.path.join(frozen_bin, name)],
        env={"CNI_COMMAND": "VERSION"},
        stdin=b'{"cniVersion": "1.0.0"}',
    )
    assert proc.returncode == 0, proc
    assert proc.stderr == b""
    answer = json.loads(proc.stdout)
    assert sorted(answer) == ["cniVersion", "supportedVersions"]
    assert answer["cniVersion"] == "1.1.0"
    assert "1.1.0" in answer["supportedVersions"]
    for version in answer["supportedVersions"]:
        assert [int(n) for n in version.split(".")] and version.count(".") == 2


@pytest.mark.frozen
@pytest.mark.parametrize("name", CNI_PLUGINS)
def test_about_text_names_plugin_and_version_with_empty_environment(frozen_bin, name):
    lines = about(os.path.join(frozen_bin, name), env={}).splitlines()
    assert lines[0].startswith(f"CNI {name} plugin ") and VERSION in lines[0], lines
    lowest = TABLE["MIN_VERSION"].get(name, "0.1.0")  # bandwidth and firewall start later
    assert lines[1].startswith(f"CNI protocol versions supported: {lowest}"), lines


@pytest.mark.frozen
def test_runs_from_another_cwd(frozen_bin, tmp_path):
    assert "CNI loopback plugin" in about(os.path.join(frozen_bin, "loopback"), cwd=tmp_path)
    # and by a relative path from there
    relative = os.path.relpath(os.path.join(frozen_bin, "loopback"), "/")
    assert "CNI loopback plugin" in about(relative, cwd="/")


@pytest.mark.frozen
def test_runs_through_a_symlink_from_another_directory(frozen_bin, tmp_path):
    for name in ("loopback", "cnitool"):
        os.symlink(os.path.join(frozen_bin, name), tmp_path / name)
    assert "CNI loopback plugin" in about(str(tmp_path / "loopback"))
    proc = run([str(tmp_path / "cnitool"), "--help"])
    assert proc.returncode == 0 and b"usage: cnitool" in proc.stdout, proc


@pytest.mark.frozen
def test_unknown_program_name_says_what_it_runs(frozen_bin, tmp_path):
    os.symlink(os.path.join(frozen_bin, "loopback"), tmp_path / "nosuchplugin")
    proc = run([str(tmp_path / "nosuchplugin")])
    assert proc.returncode == 2
    assert b"loopback" in proc.stderr and b"nosuchplugin" in proc.stderr


@pytest.mark.frozen
@pytest.mark.parametrize("callers_library_path", [None, "/opt/site-libs"])
def test_cnitool_starts_plugins_with_the_callers_environment(
    frozen_bin, tmp_path, callers_library_path
):
    plugins = tmp_path / "bin"
    netconf = tmp_path / "net.d"
    plugins.mkdir()
    netconf.mkdir()
    log = env_dump_plugin(str(plugins))
    (netconf / "10-envdump.conflist").write_text(
        json.dumps({"cniVersion": "1.0.0", "name": "envdump", "plugins": [{"type": "envdump"}]})
    )
    env = {"PATH": "/usr/bin:/bin", "NETCONFPATH": str(netconf), "CNI_PATH": str(plugins)}
    if callers_library_path:
        env["LD_LIBRARY_PATH"] = callers_library_path
    proc = run(
        [
            os.path.join(frozen_bin, "cnitool"),
            "--cache-dir",
            str(tmp_path / "cache"),
            "add",
            "envdump",
            "/proc/self/ns/net",
        ],
        env=env,
    )
    assert proc.returncode == 0, proc
    child = read_env(log)
    assert_no_bundle_leak(child, os.path.join(frozen_bin, "_internal"))
    assert child.get("LD_LIBRARY_PATH") == callers_library_path
    assert child["CNI_COMMAND"] == "ADD" and child["NETCONFPATH"] == str(netconf)


@pytest.mark.frozen
def test_delegated_ipam_gets_the_callers_environment(frozen_bin, tmp_path, netns):
    log = env_dump_plugin(str(tmp_path), "envdump-ipam")
    conf = {
        "cniVersion": "1.0.0",
        "name": "envnet",
        "type": "dummy",
        "ipam": {"type": "envdump-ipam"},
    }
    env = {
        "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
        "CNI_COMMAND": "DEL",
        "CNI_CONTAINERID": "ctr-env",
        "CNI_NETNS": netns,
        "CNI_IFNAME": "eth0",
        "CNI_PATH": str(tmp_path),
        "LD_LIBRARY_PATH": "/opt/site-libs",
    }
    run([os.path.join(frozen_bin, "dummy")], env=env, stdin=json.dumps(conf).encode())
    child = read_env(log)
    assert_no_bundle_leak(child, os.path.join(frozen_bin, "_internal"))
    assert child["LD_LIBRARY_PATH"] == "/opt/site-libs"
    assert child["CNI_COMMAND"] == "DEL"


@pytest.mark.frozen
def test_release_tarball_extracts_and_runs(frozen_bin, tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            os.path.join(REPO, "build", "release.py"),
            "--dist",
            frozen_bin,
            "--outdir",
            str(tmp_path / "out"),
        ],
        capture_output=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc
    (tarball,) = os.listdir(tmp_path / "out")
    assert re.fullmatch(rf"cni-plugins-linux-[a-z0-9_]+-v{re.escape(VERSION)}\.tgz", tarball)
    with tarfile.open(tmp_path / "out" / tarball) as tar:
        top = {m.name.removeprefix("./").split("/")[0] for m in tar.getmembers()}
        links = {m.name.removeprefix("./") for m in tar.getmembers() if m.islnk()}
    assert set(PROGRAMS) <= top and "_internal" in top
    assert len(links) >= len(PROGRAMS)  # stored once, every other name a hard link
    fresh = tmp_path / "opt-cni-bin"
    fresh.mkdir()
    subprocess.run(["tar", "-C", str(fresh), "-xzf", str(tmp_path / "out" / tarball)], check=True)
    assert os.stat(fresh / "loopback").st_ino == os.stat(fresh / "bridge").st_ino
    assert os.path.isfile(fresh / "_internal" / "pycni")
    for unit in ("pycni.socket", "pycni.service"):  # the daemon's socket activation
        assert os.path.isfile(fresh / "_internal" / "systemd" / unit)
    text = about(str(fresh / "loopback"), cwd=tmp_path)
    assert "CNI loopback plugin" in text and VERSION in text
    proc = run(
        [str(fresh / "loopback")], env={"CNI_COMMAND": "VERSION"}, stdin=b'{"cniVersion": "1.0.0"}'
    )
    assert proc.returncode == 0 and json.loads(proc.stdout)["cniVersion"] == "1.1.0", proc


def test_dropping_the_bundle_environment_restores_the_callers():
    drop = TABLE["drop_bundle_environment"]
    frozen_env = {name: "x" for name in BUNDLE_VARIABLES}
    frozen_env.update(
        PATH="/bin",
        CNI_COMMAND="ADD",
        LD_LIBRARY_PATH="/opt/cni/bin/_internal:/opt/site-libs",
        LD_LIBRARY_PATH_ORIG="/opt/site-libs",
    )
    drop(frozen_env)
    assert frozen_env == {"PATH": "/bin", "CNI_COMMAND": "ADD", "LD_LIBRARY_PATH": "/opt/site-libs"}

    frozen_env = {
        "_PYI_ARCHIVE_FILE": "/opt/cni/bin/loopback",
        "LD_LIBRARY_PATH": "/opt/cni/bin/_internal",
        "PATH": "/bin",
    }
    drop(frozen_env)
    assert frozen_env == {"PATH": "/bin"}
