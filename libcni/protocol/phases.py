"""Per-phase timestamps of one plugin call, for the per-call log's `phases` field.

Opt-in: PYCNI_TRACE=1 in the plugin's environment, or `"logTrace": true` in the call's config
or the node-wide log settings (libcni.protocol.calllog), with a `logFile` to write to. Whoever
runs the call marks its phases here (the front door's start arrives as PYCNI_TRACE_T0, a
CLOCK_MONOTONIC time in ns; the daemon worker marks accept, request, adoption and namespace
entry; the skeleton's own start and end are the plugin's); the call log turns them into
milliseconds since the first mark. CLOCK_MONOTONIC is one clock for every process of the
machine, so marks taken in the front door, the frozen program and a daemon worker line up.

Marking costs one time.monotonic() per phase; nothing is written unless a trace is asked for.
"""

import time

ORIGIN_VARIABLE = "PYCNI_TRACE_T0"
TRACE_VARIABLE = "PYCNI_TRACE"

# Phase name -> time.monotonic() seconds, in the order they happened; None when not tracing.
marks: dict | None = None
# Call-log lines (path, line, max_size) a daemon worker holds back until its caller has the
# exit status, so that the trace covers the status too; None: write at once.
held: list | None = None


def begin(env=None) -> None:
    """Start marking; the front door's start time (PYCNI_TRACE_T0) becomes the first mark."""
    global marks
    marks = {}
    origin = (env or {}).get(ORIGIN_VARIABLE, "")
    if origin.isdigit():
        marks["frontdoor"] = int(origin) / 1e9


def mark(name: str, when: float | None = None) -> None:
    if marks is not None:
        marks[name] = time.monotonic() if when is None else when


def wanted(env, settings: dict) -> bool:
    """Whether this call's log line carries its phases."""
    if marks is None:
        return False
    if env.get(TRACE_VARIABLE, "") not in ("", "0"):
        return True
    return settings.get("logTrace") is True


def elapsed(**extra: float) -> dict:
    """{phase: ms since the first mark}, in time order, with `extra` marks (monotonic seconds)
    of this call only (a delegated plugin run in the same process has its own)."""
    taken = dict(marks or {}, **extra)
    if not taken:
        return {}
    first = min(marks.values()) if marks else min(taken.values())
    ordered = sorted(taken.items(), key=lambda item: item[1])
    return {name: round((at - first) * 1000, 3) for name, at in ordered}
