"""What a per-call log line costs (libcni.protocol.calllog).

Two figures, both loopback CHECK in a scratch netns (as root; the netns is removed at the end):
- exec: median wall time of the frozen executable with `logFile` set minus without, over
  interleaved runs (what a node pays per call: import, settings, one append);
- first call: in a fresh interpreter, after a warm-up call, one skel.dispatch with `logFile`
  minus one without (what an exec pays, without the noise of process start);
- in-process: skel.dispatch with and without `logFile` (the steady-state cost, no import).

Usage: python3 benchmarks/calllog.py [-n 200] [--bin build/dist/bin]
"""

import argparse
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)


def exec_once(binary: str, env: dict, stdin: bytes) -> float:
    started = time.perf_counter()
    subprocess.run([binary], input=stdin, env=env, stdout=subprocess.DEVNULL, check=True)
    return (time.perf_counter() - started) * 1000


FIRST_CALL = """
import io, json, sys, time
sys.path.insert(0, {repo!r})
from libcni.protocol import skel
from plugins.loopback.loopback import PLUGIN
env = json.loads(sys.argv[1])
def once(conf):
    started = time.perf_counter()
    skel.dispatch(PLUGIN, env, io.BytesIO(json.dumps(conf).encode()), io.StringIO(), io.StringIO())
    return (time.perf_counter() - started) * 1000
once(json.loads(sys.argv[2]))  # the verb's own first-call imports
off = once(json.loads(sys.argv[2]))
print(json.dumps([off, once(json.loads(sys.argv[3]))]))
"""


def first_calls(env: dict, plain: dict, logged: dict, runs: int) -> tuple:
    """Median (off, on) of a process's first logged call against its first plain one.

    The modules come from their bytecode caches, as a frozen program's come from its archive
    (PYTHONDONTWRITEBYTECODE would make every run compile calllog.py again: ~3 ms)."""
    import py_compile

    py_compile.compile(os.path.join(REPO, "libcni", "protocol", "calllog.py"), doraise=True)
    offs, ons = [], []
    for _ in range(runs):
        out = subprocess.run(
            [
                sys.executable,
                "-c",
                FIRST_CALL.format(repo=REPO),
                json.dumps(env),
                json.dumps(plain),
                json.dumps(logged),
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        off, on = json.loads(out.splitlines()[-1])
        offs.append(off)
        ons.append(on)
    return statistics.median(offs), statistics.median(ons)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=200)
    parser.add_argument("--bin", default=os.path.join(REPO, "build", "dist", "bin"))
    opts = parser.parse_args()
    netns_name = f"pycnilogb{os.getpid()}"
    netns = f"/var/run/netns/{netns_name}"
    subprocess.run(["ip", "netns", "add", netns_name], check=True)
    workdir = tempfile.mkdtemp(prefix="pycni-bench-log-")
    try:
        log = os.path.join(workdir, "calls.jsonl")
        plain = {"cniVersion": "1.0.0", "name": "bench", "type": "loopback"}
        logged = dict(plain, logFile=log)
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "CNI_COMMAND": "CHECK",
            "CNI_CONTAINERID": "bench",
            "CNI_NETNS": netns,
            "CNI_IFNAME": "lo",
            "CNI_PATH": opts.bin,
            "PYCNI_CONFIG": os.path.join(workdir, "absent.json"),
        }
        binary = os.path.join(opts.bin, "loopback")
        add = json.dumps(dict(plain, cniVersion="1.0.0")).encode()
        subprocess.run(
            [binary],
            input=add,
            env=dict(env, CNI_COMMAND="ADD"),
            stdout=subprocess.DEVNULL,
            check=True,
        )
        off, on = [], []
        for _ in range(opts.n):
            off.append(exec_once(binary, env, json.dumps(plain).encode()))
            on.append(exec_once(binary, env, json.dumps(logged).encode()))
        exec_off, exec_on = statistics.median(off), statistics.median(on)

        first_off, first_on = first_calls(env, plain, logged, max(10, opts.n // 10))
        from libcni.protocol import skel
        from plugins.loopback.loopback import PLUGIN

        def in_process(conf: dict) -> float:
            data = json.dumps(conf).encode()
            started = time.perf_counter()
            for _ in range(opts.n):
                skel.dispatch(PLUGIN, env, io.BytesIO(data), io.StringIO(), io.StringIO())
            return (time.perf_counter() - started) * 1000 / opts.n

        in_process(logged)  # imports calllog once
        proc_off, proc_on = in_process(plain), in_process(logged)
        with open(log) as f:
            lines = sum(1 for _ in f)
        print(f"loopback CHECK, {opts.n} runs each, {lines} lines logged")
        print(
            f"exec (frozen, median): off {exec_off:.2f} ms, on {exec_on:.2f} ms, "
            f"cost {exec_on - exec_off:+.2f} ms per call"
        )
        print(
            f"first call of a process (median): off {first_off:.2f} ms, then on "
            f"{first_on:.2f} ms, cost {first_on - first_off:+.2f} ms per exec"
        )
        print(
            f"in-process (mean):     off {proc_off:.3f} ms, on {proc_on:.3f} ms, "
            f"cost {proc_on - proc_off:+.3f} ms per call"
        )
    finally:
        subprocess.run(["ip", "netns", "del", netns_name], check=False)
        subprocess.run(["rm", "-rf", workdir], check=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
