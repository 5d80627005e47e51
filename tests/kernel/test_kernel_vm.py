"""vlan, ipvlan, dummy, bridge VLAN filtering and vrf against a real kernel that has them:
Debian's stock kernel booted under qemu (tests/vm/harness.py), running the tests/vm/inside_*.py
modules there with pytest, on our frozen executables and on Debian's Go plugins.

One VM boot serves the whole session; each test function of the inside module is reported
here as its own test. Without qemu the tests skip, except in CI where that is a failure.
"""

import os
import re
import shutil
import sys
import xml.etree.ElementTree as ET

import pytest
from conftest import FROZEN_BIN, REPO
from kit import require

sys.path.insert(0, os.path.join(REPO, "tests", "vm"))
import harness  # noqa: E402

INSIDE = [os.path.join("tests", "vm", name) for name in ("inside_kernel_links.py", "inside_vrf.py")]
NAMES = []
for inside in INSIDE:
    with open(os.path.join(REPO, inside)) as f:
        NAMES += re.findall(r"^def (test_\w+)", f.read(), re.M)


class Report:
    def __init__(self, run):
        self.run = run
        self.cases: dict = {}
        junit = run.files.get("junit.xml")
        if junit:
            for case in ET.fromstring(junit).iter("testcase"):
                name = case.get("name", "")
                problems = [
                    p.get("message") or p.text or p.tag
                    for p in list(case.findall("failure")) + list(case.findall("error"))
                ]
                skipped = case.find("skipped") is not None
                self.cases.setdefault(name.split("[")[0], []).append((name, problems, skipped))


@pytest.fixture(scope="session")
def vm_report():
    require(
        shutil.which("qemu-system-x86_64"),
        "qemu-system-x86_64 is not installed (Debian package qemu-system-x86)",
    )
    if not os.path.isfile(os.path.join(FROZEN_BIN, "vlan")):
        pytest.fail("frozen executables missing: run `make build` first")
    python = os.path.realpath(sys.executable)
    command = (
        f"{python} -m pytest -q -p no:cacheprovider {' '.join(INSIDE)} "
        "--junitxml=/results/junit.xml"
    )
    try:
        run = harness.run(command, timeout=1200, collect=("junit.xml",))
    except harness.VMError as err:
        pytest.fail(f"the test VM failed: {err}")
    print(f"\n[vm] boot {run.boot_seconds:.1f} s, in-VM suite {run.seconds:.1f} s in all")
    report = Report(run)
    if not report.cases:
        pytest.fail(
            f"no results from the VM (status {run.status}):\n{run.stdout[-3000:]}"
            f"\n{run.stderr[-3000:]}"
        )
    return report


@pytest.mark.parametrize("name", NAMES)
def test_in_vm(vm_report, name):
    cases = vm_report.cases.get(name)
    assert cases, f"{name} did not run in the VM"
    failed = [(case, problems) for case, problems, _ in cases if problems]
    assert not failed, "\n".join(f"{case}: {problems[0][:2000]}" for case, problems in failed)
    assert not all(skipped for _, _, skipped in cases), f"{name} was skipped in the VM"
