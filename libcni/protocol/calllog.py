"""Per-call logs: one JSON line per plugin call, appended when the call is over.

Off by default. The skeleton imports this module only when the call's config names a
`logFile` or the node-wide defaults file exists (/etc/cni/pycni.json, or $PYCNI_CONFIG), so a
node without logging pays one stat() per call and no import. Settings, config keys first,
the node-wide file filling in what the config leaves out:

- `logFile`: the file to append to (no file: no log).
- `logLevel`: `debug` (every call, with its stdin and stdout), `info` (every call; the
  default), `error` (failed calls only), `off`.
- `logMaxSize`: bytes before the file is rotated to `<logFile>.1` (one rotation kept).
- `logTrace`: true adds `phases`, the call's per-phase timestamps (libcni.protocol.phases;
  also PYCNI_TRACE=1 in the plugin's environment).

Each line carries the OpenTelemetry trace context the runtime passed in `TRACEPARENT` and
`TRACESTATE` (W3C Trace Context; libcni sets them): `trace_id`, `span_id`, `traceparent` and
`tracestate`, so a pod's network set-up can be found from its trace. A malformed traceparent
is left out (no `trace_id`), with the raw text kept as `traceparentInvalid` for debugging.

A log that cannot be written never fails the call: the plugin's answer is already on stdout
when this runs; what went wrong goes to stderr in one line.
"""

import json
import os
import re
import sys
import time

from libcni.protocol import phases
from libcni.protocol.nodeconfig import node_config_path

DEFAULT_MAX_SIZE = 10 << 20
LEVELS = {"off": 0, "none": 0, "error": 1, "warning": 1, "warn": 1, "info": 2, "debug": 3}


# W3C Trace Context, version-traceid-spanid-flags in lowercase hex; an all-zero trace or span id
# and version ff are invalid. Later versions may append fields after a '-'.
_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?")
_TRACESTATE_MAX = 512


def trace_context(env) -> dict:
    """The log fields for the trace context in TRACEPARENT/TRACESTATE ({} when none)."""
    fields: dict = {}
    parent = str(env.get("TRACEPARENT", "") or "").strip()
    if parent:
        match = _TRACEPARENT.fullmatch(parent)
        valid = (
            match is not None
            and match.group(1) != "ff"
            and (match.group(1) != "00" or match.group(5) is None)
            and match.group(2) != "0" * 32
            and match.group(3) != "0" * 16
        )
        if valid and match is not None:
            fields["trace_id"] = match.group(2)
            fields["span_id"] = match.group(3)
            fields["traceparent"] = parent
        else:
            fields["traceparentInvalid"] = parent[:128]
    state = str(env.get("TRACESTATE", "") or "").strip()
    if state and "trace_id" in fields:  # tracestate means nothing without a valid parent
        fields["tracestate"] = state[:_TRACESTATE_MAX]
    return fields


def settings(conf: dict, env) -> dict:
    """logFile, logLevel and logMaxSize for this call: the config's, else the node's."""
    merged: dict = {}
    try:
        with open(node_config_path(env), "rb") as f:
            node = json.load(f)
        if isinstance(node, dict):
            merged.update(node)
    except (OSError, ValueError):
        pass
    for key in ("logFile", "logLevel", "logMaxSize", "logTrace"):
        if conf.get(key) not in (None, ""):
            merged[key] = conf[key]
    return merged


def execution_path() -> str:
    """How this call runs: in a daemon worker, in a frozen executable, or from source."""
    if "libcni.fastpath.daemon" in sys.modules:
        return "daemon"
    return "frozen" if getattr(sys, "frozen", False) else "source"


def _decoded(text):
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    try:
        return json.loads(text)
    except ValueError:
        return text


def entry(
    plugin: str,
    env,
    conf: dict,
    stdin_data: bytes,
    stdout_text: str,
    code: int,
    started: float,
    debug: bool = False,
) -> dict:
    """The log line's fields for one call (a dict; `record` writes it)."""
    now = time.time()
    line = {
        "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now))
        + f".{int(now % 1 * 1000):03d}Z",
        "plugin": plugin,
        "verb": env.get("CNI_COMMAND", ""),
        "network": conf.get("name", "") if isinstance(conf.get("name"), str) else "",
        "containerID": env.get("CNI_CONTAINERID", ""),
        "ifname": env.get("CNI_IFNAME", ""),
        "netns": env.get("CNI_NETNS", ""),
        "path": execution_path(),
        "pid": os.getpid(),
        "durationMs": round((time.monotonic() - started) * 1000, 2),
        "outcome": "ok" if code == 0 else "error",
    }
    line.update(trace_context(env))
    if code != 0:
        error = _decoded(stdout_text)
        if isinstance(error, dict):
            line["code"] = error.get("code")
            line["msg"] = error.get("msg", "")
            if error.get("details"):
                line["details"] = error["details"]
        else:
            line["code"], line["msg"] = None, f"exit status {code}"
    if debug:
        line["stdin"] = _decoded(stdin_data)
        line["stdout"] = _decoded(stdout_text) if stdout_text else ""
    return line


def append(path: str, text: str, max_size: int) -> None:
    """Append one line, first rotating a full file to `<path>.1`.

    Many plugin calls run at once: the rotation is done under an flock of the full file and
    only if `path` still is that file, so two callers never rotate twice; O_APPEND keeps each
    line whole."""
    data = text.encode("utf-8")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
    try:
        st = os.fstat(fd)
        if st.st_size > 0 and st.st_size + len(data) > max_size:
            import fcntl  # only a rotating call pays for it

            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                current = os.stat(path)
                if (current.st_dev, current.st_ino) == (st.st_dev, st.st_ino):
                    os.replace(path, path + ".1")
            except FileNotFoundError:
                pass
            os.close(fd)
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
        os.write(fd, data)
    finally:
        os.close(fd)


def record(
    plugin: str, env, stdin_data: bytes, stdout_text: str, code: int, started: float, stderr
) -> None:
    """Log one finished call if its settings ask for it. Never raises."""
    path = ""
    try:
        try:
            conf = json.loads(stdin_data)
        except ValueError:
            conf = {}
        if not isinstance(conf, dict):
            conf = {}
        wanted_settings = settings(conf, env)
        target = wanted_settings.get("logFile")
        if not isinstance(target, str) or not target:
            return
        path = target
        level = LEVELS.get(str(wanted_settings.get("logLevel") or "info").lower(), 2)
        if level == 0 or (level == 1 and code == 0):
            return
        max_size = wanted_settings.get("logMaxSize")
        if not isinstance(max_size, int) or isinstance(max_size, bool) or max_size <= 0:
            max_size = DEFAULT_MAX_SIZE
        line = entry(plugin, env, conf, stdin_data, stdout_text, code, started, level >= 3)
        if phases.wanted(env, wanted_settings):
            line["phases"] = phases.elapsed(plugin=started, pluginDone=time.monotonic())
            if phases.held is not None:  # a daemon worker writes it once the status is sent
                phases.held.append((path, line, max_size))
                return
        append(path, json.dumps(line, separators=(",", ":")) + "\n", max_size)
    except Exception as err:  # the call's answer is out already; a log must not change it
        try:
            print(f"pycni: call log {path or '?'} not written: {err}", file=stderr)
        except Exception:
            pass
