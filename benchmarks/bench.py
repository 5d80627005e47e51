"""Side-by-side timing of two plugin directories, the way a runtime execs plugins.

Runs each scenario against directory A (default: Debian's Go plugins in /usr/lib/cni) and B
(default: our frozen build/dist/bin), interleaved A/B in one run so machine noise hits both,
and prints median wall times and the B/A ratio. Every namespace it makes is its own, with a
unique name, and is deleted afterwards.

Usage: python3 benchmarks/bench.py [-n 30] [--a DIR] [--b DIR] [--daemon] [scenario ...]
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
ENV_BASE = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}


def exec_plugin(plugin_dir, name, command, conf, netns="", ifname="eth0", extra=None):
    env = dict(ENV_BASE, CNI_COMMAND=command, CNI_CONTAINERID="bench1", CNI_NETNS=netns,
               CNI_IFNAME=ifname, CNI_PATH=plugin_dir, **(extra or {}))
    started = time.perf_counter()
    proc = subprocess.run([os.path.join(plugin_dir, name)], input=json.dumps(conf).encode(),
                          env=env, capture_output=True)
    took = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(f"{plugin_dir}/{name} {command} failed: {proc.stdout!r} {proc.stderr!r}")
    return took


class Netns:
    counter = 0

    def __enter__(self):
        Netns.counter += 1
        self.name = f"pcb{os.getpid() % 100000}n{Netns.counter}"
        subprocess.run(["ip", "netns", "add", self.name], check=True)
        return f"/var/run/netns/{self.name}"

    def __exit__(self, *exc):
        subprocess.run(["ip", "netns", "del", self.name], check=False)


LOOPBACK = {"cniVersion": "1.0.0", "name": "bench-lo", "type": "loopback"}


def version_scenario(name):
    def run(plugin_dir, extra):
        return {"VERSION": exec_plugin(plugin_dir, name, "VERSION", {"cniVersion": "1.0.0"},
                                       extra=extra)}
    return run


def loopback_scenario(plugin_dir, extra):
    times = {}
    with Netns() as netns:
        for command in ("ADD", "CHECK", "DEL"):
            times[command] = exec_plugin(plugin_dir, "loopback", command, LOOPBACK, netns, "lo",
                                         extra)
    return times


def scenarios(a_dir, b_dir):
    found = {}
    common = sorted(set(os.listdir(a_dir)) & set(os.listdir(b_dir)))
    for name in common:
        if os.access(os.path.join(a_dir, name), os.X_OK) and not name.startswith("_"):
            found[f"{name} VERSION"] = version_scenario(name)
    found["loopback ADD/CHECK/DEL"] = loopback_scenario
    return found


class Daemon:
    """Our pycni-daemon on a private socket, for measuring the preloaded fast path."""

    def __init__(self, plugin_dir):
        self.dir = tempfile.mkdtemp(prefix="pycni-bench-")
        self.socket = os.path.join(self.dir, "run", "pycni.sock")
        self.proc = subprocess.Popen([os.path.join(plugin_dir, "pycni-daemon"), self.socket],
                                     stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while not os.path.exists(self.socket):
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError("pycni-daemon did not start")
            time.sleep(0.05)

    def stop(self):
        self.proc.terminate()
        self.proc.wait(10)
        subprocess.run(["rm", "-rf", self.dir], check=False)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=20, help="repetitions (default 20)")
    parser.add_argument("--a", default="/usr/lib/cni", help="baseline plugin dir")
    parser.add_argument("--b", default=os.path.join(REPO, "build", "dist", "bin"))
    parser.add_argument("--daemon", action="store_true", help="B calls go through pycni-daemon")
    parser.add_argument("only", nargs="*", help="scenario name substrings to run")
    args = parser.parse_args()
    table = scenarios(args.a, args.b)
    if args.only:
        table = {k: v for k, v in table.items() if any(o in k for o in args.only)}
    daemon = Daemon(args.b) if args.daemon else None
    b_extra = {"PYCNI_SOCKET": daemon.socket} if daemon else None
    try:
        print(f"A = {args.a}\nB = {args.b}{' (via pycni-daemon)' if daemon else ''}\n"
              f"n = {args.n}, medians in ms\n")
        print(f"{'scenario':<34} {'verb':<8} {'A':>8} {'B':>8} {'B/A':>7}")
        for label, scenario in table.items():
            samples: dict = {}
            for _ in range(args.n):
                for side, plugin_dir, extra in (("A", args.a, None), ("B", args.b, b_extra)):
                    for verb, took in scenario(plugin_dir, extra).items():
                        samples.setdefault(verb, {"A": [], "B": []})[side].append(took)
            for verb, sides in samples.items():
                a_ms = statistics.median(sides["A"]) * 1000
                b_ms = statistics.median(sides["B"]) * 1000
                print(f"{label:<34} {verb:<8} {a_ms:8.1f} {b_ms:8.1f} {b_ms / a_ms:7.1f}")
    finally:
        if daemon:
            daemon.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
