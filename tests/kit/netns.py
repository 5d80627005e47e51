"""Network namespaces a test owns: unique names, created and deleted by the test, and commands
run inside them (never in the machine's own namespace)."""

import itertools
import json
import os
import subprocess

NETNS_DIR = "/var/run/netns"

_counter = itertools.count()


def unique_name(prefix: str = "pyt") -> str:
    """A netns/link-safe unique name (≤ 15 chars)."""
    return f"{prefix}{os.getpid() % 100000}x{next(_counter)}"[:15]


class NetnsFactory:
    def __init__(self):
        self.created = []

    def __call__(self, prefix: str = "pyt") -> str:
        name = unique_name(prefix)
        subprocess.run(["ip", "netns", "add", name], check=True)
        self.created.append(name)
        return os.path.join(NETNS_DIR, name)

    def cleanup(self):
        for name in reversed(self.created):
            subprocess.run(["ip", "netns", "del", name], check=False, stderr=subprocess.DEVNULL)


def ns_exec(netns_path: str, *argv, check=True) -> str:
    """Run a command inside a netns the test owns; returns stdout."""
    name = os.path.basename(netns_path)
    proc = subprocess.run(["ip", "netns", "exec", name, *argv], capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(f"{argv} failed in {name}: {proc.stderr}")
    return proc.stdout


def ip_json(netns_path: str, *argv):
    """`ip -j ...` inside the netns, decoded."""
    out = ns_exec(netns_path, "ip", "-j", *argv)
    return json.loads(out) if out.strip() else []
