"""cnitool run as an operator runs it: configs in a NETCONFPATH of the test's, plugins from a
CNI_PATH, a private cache directory (the `netconf` and `cnitool` fixtures in conftest)."""

import json
import os
import subprocess

from kit.plugins import PluginRun

PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def netconf_dir(directory):
    """A NETCONFPATH directory (created); call the answer with (filename, obj or text) to add
    a config, `.dir` is the path."""
    directory.mkdir()

    def add(filename, obj):
        path = directory / filename
        path.write_text(obj if isinstance(obj, str) else json.dumps(obj))
        return str(path)

    add.dir = str(directory)
    return add


def cnitool_runner(netconf_path: str, cache_dir: str):
    """Runs <bin_dir>/cnitool with NETCONFPATH, CNI_PATH (the bin_dir unless given) and
    `cache_dir`; the PluginRun carries cnitool's pid. `.cache_dir` is the cache."""

    def run(bin_dir, *argv, cni_path=None, env=None) -> PluginRun:
        full_env = {
            "PATH": PATH,
            "NETCONFPATH": netconf_path,
            "CNI_PATH": cni_path or bin_dir,
            **(env or {}),
        }
        proc = subprocess.Popen(
            [os.path.join(bin_dir, "cnitool"), *argv, "--cache-dir", cache_dir],
            env=full_env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        stdout, stderr = proc.communicate(timeout=60)
        done = subprocess.CompletedProcess([], proc.returncode, stdout, stderr)
        return PluginRun(done, pid=proc.pid)

    run.cache_dir = cache_dir
    return run
