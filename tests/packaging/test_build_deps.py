"""`make build` installs only what building needs; the test stack comes with `make test`.

A node operator builds on the node: installing containerd, firewalld or podman there starts
services and may change the node's firewall. The build lists (build/apt-packages.txt,
build/requirements.txt) hold no service and no test tool; the test lists hold the rest; the
Makefile's build targets never run the test installer.
"""

import os
import re
import subprocess

import pytest
from conftest import REPO

BUILD = os.path.join(REPO, "build")

# Debian packages that are (or pull in) services, test harnesses or tools only tests use.
NOT_FOR_BUILDING = {
    "containerd",
    "runc",
    "firewalld",
    "podman",
    "crun",
    "conmon",
    "dnsmasq",
    "dnsmasq-base",
    "qemu-system-x86",
    "lintian",
    "containernetworking-plugins",
    "busybox-static",
    "strace",
    "curl",
    "debootstrap",
}
TEST_ONLY_PYPI = {"pytest", "hypothesis", "grpcio", "ruff", "mypy"}


def entries(name: str) -> list:
    with open(os.path.join(BUILD, name)) as f:
        lines = [line.split("#")[0].strip() for line in f]
    return [line for line in lines if line]


def pypi_names(name: str) -> set:
    return {re.split(r"[=<>\s]", line)[0].lower() for line in entries(name)}


def test_the_build_lists_hold_no_service_and_no_test_tool():
    apt = set(entries("apt-packages.txt"))
    assert not apt & NOT_FOR_BUILDING
    assert {"make", "gcc", "python3-dev", "python3-venv"} <= apt
    assert not pypi_names("requirements.txt") & TEST_ONLY_PYPI
    assert {"pyroute2", "pyinstaller"} <= pypi_names("requirements.txt")


def test_the_test_lists_hold_the_test_stack():
    apt = set(entries("apt-packages-test.txt"))
    assert {"containerd", "firewalld", "podman", "qemu-system-x86", "dnsmasq-base"} <= apt
    assert TEST_ONLY_PYPI <= pypi_names("requirements-test.txt")
    # one home per package
    assert not apt & set(entries("apt-packages.txt"))
    assert not pypi_names("requirements-test.txt") & pypi_names("requirements.txt")


def dry_run(target: str) -> str:
    proc = subprocess.run(
        ["make", "-n", "-B", target],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


@pytest.mark.parametrize("target", ["build", "deb", "release"])
def test_building_never_runs_the_test_installer(target):
    commands = dry_run(target)
    installs = re.findall(r"install-deps\.sh (\S+)", commands)
    assert installs and set(installs) == {"build"}, commands


@pytest.mark.parametrize("target", ["test", "lint"])
def test_testing_installs_the_test_stack(target):
    assert "install-deps.sh test" in dry_run(target)


def test_the_installer_refuses_an_unknown_mode():
    proc = subprocess.run(
        ["bash", os.path.join(BUILD, "install-deps.sh"), "everything"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 2 and "usage" in proc.stderr


def test_ci_installs_both_lists():
    with open(os.path.join(REPO, ".ci", "run")) as f:
        text = f.read()
    assert "build/apt-packages-test.txt" in text and "make deps-test" in text


def test_make_deb_freezes_only_when_a_source_changed(frozen_bin):
    # A current build (no source newer than it): packed as it is.
    current = subprocess.run(
        ["make", "-n", "deb", "FROZEN_SOURCES="], cwd=REPO, capture_output=True, text=True
    )
    assert current.returncode == 0, current.stderr
    assert "freeze.py" not in current.stdout and "deb.py" in current.stdout
    # A source file newer than the build: frozen again first.
    changed = subprocess.run(
        ["make", "-n", "deb", "-W", "libcni/__init__.py"], cwd=REPO, capture_output=True, text=True
    )
    assert changed.returncode == 0, changed.stderr
    assert changed.stdout.index("freeze.py") < changed.stdout.index("deb.py")
