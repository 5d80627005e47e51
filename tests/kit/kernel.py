"""What this machine's kernel can do, tried in a throwaway netns (for kit.variant skips)."""

import os
import subprocess


def kernel_has(kind: str, *args: str) -> bool:
    """Whether this kernel can create a `kind` link (tried in a throwaway netns)."""
    name = f"pyprobe{os.getpid()}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        ip = ["ip", "-n", name, "link"]
        subprocess.run([*ip, "add", "p0", "type", "veth", "peer", "p1"], check=True)
        made = subprocess.run(
            [*ip, "add", "x0", "link", "p0", "type", kind, *args], capture_output=True
        )
        return made.returncode == 0
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)
