"""Where a plugin call's time goes: the per-phase breakdown, per plugin and verb (medians), of
the served path (front door -> pycni-daemon worker) and of the exec path (front door -> frozen
program), from the per-call log's `phases` (PYCNI_TRACE=1; libcni/protocol/phases.py).

Served path, each phase ending at the named point:
  connect   front door start -> a pre-forked worker has accepted the connection
  request   -> request read (header, argv, environment, descriptors)
  adopt     -> the caller's limits, nice value and cgroups taken on
  enter     -> in the caller's mount and network namespaces and cwd
  setup     -> streams, environment and limits set, the skeleton started
  plugin    -> the plugin's work done (its answer written)
  reply     -> exit status sent to the front door
  exit      the worker's exit after that (off the caller's path; CPU only), from the
            daemon's --trace log
  total     front door start -> status sent
Exec path:
  wall, cpu each exec from fork to exit, its own rusage (wait4)
  start     front door start -> CPython ready (bootloader, interpreter, PyInstaller bootstrap)
  load      -> the plugin's modules imported, the skeleton started
  plugin    -> the plugin's work done
  rest      what the wall time holds besides (fork and exec of the front door, exit)
--baseline DIR adds the exec path's wall and CPU of another build (e.g. an older one, which
has no trace), interleaved.

Runs the scenarios of benchmarks/bench.py (default: loopback, bridge+host-local, k8s-chain)
against a build, with a private daemon (netns and private mount namespace of its own). Needs
root. Usage: python3 benchmarks/phases.py [-n 10] [--bin DIR] [--baseline DIR]
[--daemon-args ARGS] [SCENARIO ...]
"""

import argparse
import contextlib
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402 - benchmarks/bench.py, beside this file

SERVED_PHASES = (
    ("connect", "frontdoor", "accepted"),
    ("request", "accepted", "request"),
    ("adopt", "request", "admitted"),
    ("enter", "admitted", "entered"),
    ("setup", "entered", "plugin"),
    ("plugin", "plugin", "pluginDone"),
    ("reply", "pluginDone", "statusSent"),
)
EXEC_PHASES = (
    ("start", "frontdoor", "interpreter"),
    ("load", "interpreter", "plugin"),
    ("plugin", "plugin", "pluginDone"),
)
DEFAULT_SCENARIOS = ("loopback", "bridge+host-local", "k8s-chain")


class RecordingSide(bench.Side):
    """A bench Side that keeps every exec's wall and CPU time by plugin and verb."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.execs: dict = {}

    def exec(self, name, command, conf, **kwargs):
        sample, out = super().exec(name, command, conf, **kwargs)
        self.execs.setdefault((name, command), []).append(sample)
        return sample, out


def median_ms(values: list) -> float | None:
    return statistics.median(values) if values else None


def breakdown(lines: list, phases: tuple) -> dict:
    """(plugin, verb) -> {phase: [ms, ...]} from call-log lines with `phases`."""
    table: dict = {}
    for line in lines:
        marks = line.get("phases")
        if not marks:
            continue
        row = table.setdefault((line["plugin"], line["verb"]), {})
        for phase, start, end in phases:
            if start in marks and end in marks:
                row.setdefault(phase, []).append(marks[end] - marks[start])
        first = next(iter(marks.values()))
        row.setdefault("total", []).append(max(marks.values()) - first)
        row.setdefault("_pids", []).append(line["pid"])
        row.setdefault("_done", []).append(marks.get("pluginDone", 0.0))
    return table


def exit_times(daemon_log: str) -> dict:
    """worker pid -> ms from its status to its exit (pycni-daemon --trace)."""
    found = {}
    for match in re.finditer(r"worker (\d+) exited ([\d.]+) ms after its status", daemon_log):
        found[int(match[1])] = float(match[2])
    return found


def fmt(value) -> str:
    return f"{value:7.2f}" if value is not None else "      -"


def print_served(table: dict, exits: dict) -> None:
    names = [p for p, _, _ in SERVED_PHASES] + ["exit", "total"]
    print("served path (ms, medians): " + " ".join(f"{n:>7}" for n in names))
    for (plugin, verb), row in sorted(table.items()):
        row["exit"] = [exits[pid] for pid in row["_pids"] if pid in exits]
        cells = " ".join(fmt(median_ms(row.get(n, []))) for n in names)
        print(f"  {plugin + ' ' + verb:<24} {cells}   n={len(row['total'])}")


def print_exec(table: dict, side, baseline) -> None:
    names = ["wall", "cpu"] + [p for p, _, _ in EXEC_PHASES] + ["rest"]
    extra = "  base wall  base cpu  cpu/base" if baseline else ""
    print("exec path (ms, medians):   " + " ".join(f"{n:>7}" for n in names) + extra)
    for key in sorted(set(side.execs) | set(table)):
        samples = side.execs.get(key, [])
        row = table.get(key, {})
        wall = median_ms([s.wall * 1000 for s in samples])
        cpu = median_ms([s.cpu * 1000 for s in samples])
        done = median_ms(row.get("_done", []))
        rest = wall - done if wall is not None and done is not None else None
        cells = [fmt(wall), fmt(cpu)] + [fmt(median_ms(row.get(p, []))) for p, _, _ in EXEC_PHASES]
        cells.append(fmt(rest))
        line = f"  {key[0] + ' ' + key[1]:<24} " + " ".join(cells)
        if baseline:
            base = baseline.execs.get(key, [])
            base_wall = median_ms([s.wall * 1000 for s in base])
            base_cpu = median_ms([s.cpu * 1000 for s in base])
            ratio = cpu / base_cpu if cpu is not None and base_cpu else None
            line += f"    {fmt(base_wall)}   {fmt(base_cpu)}   {fmt(ratio)}"
        print(line)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=10, help="repetitions (default 10)")
    parser.add_argument(
        "--bin", default=os.path.join(bench.REPO, "build", "dist", "bin"), help="the build"
    )
    parser.add_argument("--baseline", metavar="DIR", help="another build: exec wall and CPU")
    parser.add_argument("--daemon-args", default="", help="extra pycni-daemon arguments")
    parser.add_argument("only", nargs="*", metavar="SCENARIO", help="bench.py scenario names")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("phases.py needs root (it creates network namespaces)", file=sys.stderr)
        return 2
    wanted = args.only or DEFAULT_SCENARIOS
    scenarios = [bench.SCENARIOS[name] for name in wanted if name in bench.SCENARIOS]
    if len(scenarios) != len(wanted):
        print(f"unknown scenario; see bench.py --list: {wanted}", file=sys.stderr)
        return 2
    work = tempfile.mkdtemp(prefix="pycni-phases-")
    served_log, exec_log = os.path.join(work, "served.log"), os.path.join(work, "exec.log")
    daemon_log = os.path.join(work, "daemon.log")
    for path, log in ((served_log, "served"), (exec_log, "exec")):
        with open(os.path.join(work, f"{log}.json"), "w") as f:
            json.dump({"logFile": path, "logTrace": True}, f)
    nowhere = os.path.join(work, "no-daemon.sock")
    common = sorted(bench.plugins_in(args.bin) - bench.NOT_PLUGINS)
    with open(daemon_log, "w") as log:
        daemon = bench.Daemon(args.bin, ("--trace", *args.daemon_args.split()), log=log)
    trace = {"PYCNI_TRACE": "1"}
    served = RecordingSide(
        "served",
        args.bin,
        dict(trace, PYCNI_SOCKET=daemon.socket, PYCNI_CONFIG=os.path.join(work, "served.json")),
        common=common,
    )
    alone = RecordingSide(
        "exec",
        args.bin,
        dict(trace, PYCNI_SOCKET=nowhere, PYCNI_CONFIG=os.path.join(work, "exec.json")),
        common=common,
    )
    sides = [served, alone]
    baseline = None
    if args.baseline:
        baseline = RecordingSide(
            "baseline", args.baseline, {"PYCNI_SOCKET": nowhere}, common=common
        )
        sides.append(baseline)
    try:
        for rep in range(args.n):
            for sc in scenarios:
                for side in sides[rep % len(sides) :] + sides[: rep % len(sides)]:
                    sc.run(side)
    finally:
        daemon.stop()
    with contextlib.ExitStack():
        served_lines = [json.loads(line) for line in open(served_log)]
        exec_lines = [json.loads(line) for line in open(exec_log)]
    print(f"build {args.bin}, n = {args.n}, scenarios: {', '.join(wanted)}\n")
    print_served(breakdown(served_lines, SERVED_PHASES), exit_times(open(daemon_log).read()))
    print()
    print_exec(breakdown(exec_lines, EXEC_PHASES), alone, baseline)
    subprocess.run(["rm", "-rf", work], check=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
