"""Executing other CNI plugins: delegation to IPAM (spec section 4) and the runtime's plugin calls.

A plugin is found by name in CNI_PATH, run with the caller's environment (CNI_COMMAND replaced)
and the same stdin bytes, and its JSON answer is parsed as a Result or a CNI error.
"""

import errno
import json
import os
import time

from libcni.protocol import gojson
from libcni.protocol.errors import INTERNAL, INVALID_NETWORK_CONFIG, CNIError

# Upstream retries exec while the binary is being replaced (ETXTBSY): 6 tries, 1 s apart.
TEXT_BUSY_TRIES = 6
TEXT_BUSY_WAIT = 1.0

# Variables a frozen (PyInstaller) executable sets for itself; a child must not inherit them,
# or a Go or system binary may load the bundle's libraries.
_FROZEN_VARIABLES = (
    "_MEIPASS2",
    "_PYI_APPLICATION_HOME_DIR",
    "_PYI_ARCHIVE_FILE",
    "_PYI_PARENT_PROCESS_LEVEL",
    "_PYI_SPLASH_IPC",
    "_PYI_LINUX_PROCESS_NAME",
)


def clean_environ(env) -> dict:
    """A copy of `env` fit for a child process of a frozen executable."""
    child = {
        k: v for k, v in env.items() if not k.startswith("_PYI_") and k not in _FROZEN_VARIABLES
    }
    if "LD_LIBRARY_PATH_ORIG" in child:
        child["LD_LIBRARY_PATH"] = child.pop("LD_LIBRARY_PATH_ORIG")
    elif "_MEIPASS2" in env or any(k.startswith("_PYI_") for k in env):
        child.pop("LD_LIBRARY_PATH", None)
    return child


def find_plugin(name: str, cni_path: str) -> str:
    """The path of plugin `name` in the `:`-separated CNI_PATH; errors say where we looked."""
    if not name:
        raise CNIError(INTERNAL, "no plugin name provided")
    if "/" in name or name in (".", ".."):
        raise CNIError(INTERNAL, f'invalid plugin name "{name}": it must not contain a path')
    dirs = [d for d in cni_path.split(":") if d]
    for directory in dirs:
        candidate = os.path.join(directory, name)
        if os.path.isfile(candidate):
            return candidate
    raise CNIError(
        INTERNAL,
        f'failed to find plugin "{name}" in path [{" ".join(dirs)}]',
        "install the plugin there or add its directory to CNI_PATH",
    )


def sibling_module(plugin_path: str) -> str | None:
    """The module behind `plugin_path` when it runs this very frozen program under another name:
    the front door of our own install (it sits one folder above us, in the plugin directory)
    or a hard link of our executable. Running it in-process is then the same code, minus the
    ~30 ms of an interpreter start. Anything else (Go plugins, a different pycni build, source
    launchers) is executed."""
    import sys

    import libcni

    if not getattr(sys, "frozen", False) or not libcni.SIBLINGS:
        return None
    name = os.path.basename(plugin_path)
    our_plugin_dir = os.path.dirname(os.path.dirname(os.path.realpath(sys.executable)))
    try:
        theirs = os.stat(plugin_path)
        ours = [os.stat(sys.executable)]
        if os.path.exists(os.path.join(our_plugin_dir, name)):
            ours.append(os.stat(os.path.join(our_plugin_dir, name)))
    except OSError:
        return None
    if not any((theirs.st_dev, theirs.st_ino) == (st.st_dev, st.st_ino) for st in ours):
        return None
    return libcni.SIBLINGS.get(name)


def _run_in_process(module_name: str, env: dict, stdin_data: bytes, stderr) -> tuple | None:
    import importlib
    import io

    from libcni.protocol import skel

    plugin = getattr(importlib.import_module(module_name), "PLUGIN", None)
    if plugin is None:
        return None
    out = io.StringIO()
    code = skel.dispatch(plugin, env, io.BytesIO(stdin_data), out, stderr or io.StringIO())
    return code, out.getvalue().encode()


def run(plugin_path: str, env: dict, stdin_data: bytes, stderr=None) -> bytes:
    """Execute a plugin; returns its stdout on success, raises the CNI error it reported."""
    import subprocess

    module_name = sibling_module(plugin_path)
    done = _run_in_process(module_name, env, stdin_data, stderr) if module_name else None
    if done is not None:
        code, stdout = done
        if code == 0:
            return stdout
        raise error_from_output(stdout, b"", code)

    for attempt in range(TEXT_BUSY_TRIES):
        try:
            proc = subprocess.run(
                [plugin_path],
                input=stdin_data,
                env=clean_environ(env),
                capture_output=True,
                check=False,
            )
            break
        except OSError as err:
            if err.errno == errno.ETXTBSY and attempt + 1 < TEXT_BUSY_TRIES:
                time.sleep(TEXT_BUSY_WAIT)
                continue
            raise CNIError(
                INTERNAL, f'failed to execute plugin "{plugin_path}": {err.strerror}'
            ) from None
    if proc.stderr and stderr is not None:
        stderr.write(proc.stderr.decode(errors="replace"))
    if proc.returncode == 0:
        return proc.stdout
    raise error_from_output(proc.stdout, proc.stderr, proc.returncode)


def error_from_output(stdout: bytes, stderr: bytes, returncode: int) -> CNIError:
    """The CNI error a failed plugin printed, or one describing how it failed."""
    status = f"exit status {returncode}" if returncode > 0 else f"signal {-returncode}"
    if not stdout.strip():
        text = stderr.decode(errors="replace").strip()
        if text:
            return CNIError(INTERNAL, f'netplugin failed: "{text}": {status}')
        return CNIError(INTERNAL, f"netplugin failed with no error message: {status}")
    try:
        obj = json.loads(stdout)
        code = obj["code"]
        if isinstance(code, bool) or not isinstance(code, int):
            raise ValueError("code is not a number")
        return CNIError(code, str(obj.get("msg", "")), str(obj.get("details", "") or ""))
    except (ValueError, KeyError, TypeError) as err:
        return CNIError(
            INTERNAL,
            "netplugin failed but error parsing its diagnostic message "
            f'"{stdout.decode(errors="replace")}": {err}',
        )


def delegate(call, plugin_type: str, command: str | None = None):
    """Run `plugin_type` (usually the IPAM) with this call's env and stdin.

    ADD returns its Result (parsed for the config's version); other verbs return None.
    """
    if plugin_type and plugin_type == getattr(call, "plugin_name", ""):
        raise CNIError(
            INVALID_NETWORK_CONFIG,
            f'"ipam.type" is "{plugin_type}", this plugin itself: the delegation would never end',
        )
    env = dict(call.env)
    if command is not None:
        env["CNI_COMMAND"] = command
    plugin_path = find_plugin(plugin_type, call.path)
    output = run(plugin_path, env, call.stdin_data, call.stderr)
    if env.get("CNI_COMMAND") != "ADD":
        return None
    from libcni.protocol.result import Result

    obj = gojson.loads(output, f'plugin "{plugin_type}" printed a result that is not JSON')
    if isinstance(obj, dict) and not obj.get("cniVersion"):
        obj["cniVersion"] = call.cni_version
    return Result.from_json(obj, call.cni_version)
