"""Start-up cost is a feature: VERSION (and the about text) must not import heavy modules.

Each plugin runs VERSION in a fresh interpreter, through build/multicall.py as an executable
would, and the test lists what got imported.
"""

import json
import os
import runpy
import subprocess
import sys

import pytest
from conftest import REPO

BUILD = os.path.join(REPO, "build")
TABLE = runpy.run_path(os.path.join(BUILD, "multicall.py"))
PLUGINS = sorted(name for name in TABLE["PLUGINS"] if name not in TABLE["NOT_FORWARDED"])
HEAVY = ("pyroute2", "netaddr", "subprocess", "asyncio", "dataclasses", "inspect")

PROBE = """
import io, json, sys
sys.path[:0] = [{repo!r}, {build!r}]
import multicall
captured, real = io.StringIO(), sys.stdout
sys.stdout = captured
code = multicall.run({name!r}, [])
sys.stdout = real
print(json.dumps({{"code": code, "out": captured.getvalue(), "modules": sorted(sys.modules)}}))
"""


def version_imports(name: str, command: str = "VERSION") -> dict:
    env = {"PATH": os.environ["PATH"], "CNI_COMMAND": command}
    proc = subprocess.run(
        [sys.executable, "-I", "-c", PROBE.format(repo=REPO, build=BUILD, name=name)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.splitlines()[-1])


@pytest.mark.parametrize("name", PLUGINS)
def test_version_imports_nothing_heavy(name):
    probe = version_imports(name)
    assert probe["code"] == 0
    assert json.loads(probe["out"])["cniVersion"] == "1.1.0"
    heavy = [m for m in probe["modules"] if m.split(".")[0] in HEAVY]
    assert heavy == [], f"{name} VERSION imported {heavy}"


def test_the_probe_lists_real_imports():
    # The listing is the interpreter's own: modules VERSION does need show up in it. VERSION
    # is answered before the plugin's module is imported at all.
    modules = version_imports("loopback")["modules"]
    assert "libcni.protocol.gojson" in modules and "multicall" in modules
    assert "plugins.loopback.loopback" not in modules and "libcni.protocol.skel" not in modules


@pytest.mark.parametrize("name", PLUGINS)
def test_early_version_answer_equals_the_plugins_own(name):
    """multicall's early VERSION (its MIN_VERSION table) says what the module's skel says."""
    import importlib
    import io

    from libcni.protocol import skel

    module = importlib.import_module(TABLE["PLUGINS"][name])
    out = io.StringIO()
    skel.dispatch(module.PLUGIN, {"CNI_COMMAND": "VERSION"}, io.BytesIO(b"{}"), out, io.StringIO())
    assert version_imports(name)["out"] == out.getvalue()
