"""Per-call logs carry the OpenTelemetry trace context a runtime passes (TRACEPARENT, TRACESTATE).

The runtime (libcni since 2026-08) sets both in each plugin's environment; the log line gets
trace_id, span_id, traceparent and tracestate, through the exec path and through the daemon (the
front door forwards the whole environment).
"""

import json

import pytest

from libcni.protocol import calllog
from libcni.runtime import conflist
from libcni.runtime.netlist import Runtime, RuntimeConf

PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN_ID = "00f067aa0ba902b7"
PARENT = f"00-{TRACE_ID}-{SPAN_ID}-01"
STATE = "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE"


def test_a_valid_traceparent_gives_its_ids():
    fields = calllog.trace_context({"TRACEPARENT": PARENT, "TRACESTATE": STATE})
    assert fields == {
        "trace_id": TRACE_ID,
        "span_id": SPAN_ID,
        "traceparent": PARENT,
        "tracestate": STATE,
    }


def test_no_trace_context_adds_no_fields():
    assert calllog.trace_context({}) == {}
    assert calllog.trace_context({"TRACEPARENT": "", "TRACESTATE": ""}) == {}


@pytest.mark.parametrize(
    "bad",
    [
        PARENT.upper(),  # hex must be lowercase
        f"00-{TRACE_ID}-{SPAN_ID}",  # no flags
        f"00-{'0' * 32}-{SPAN_ID}-01",  # all-zero trace id
        f"00-{TRACE_ID}-{'0' * 16}-01",  # all-zero span id
        f"ff-{TRACE_ID}-{SPAN_ID}-01",  # version ff is forbidden
        f"00-{TRACE_ID}-{SPAN_ID}-01-extra",  # version 00 has exactly four fields
        f"0-{TRACE_ID}-{SPAN_ID}-01",
        "not a traceparent",
    ],
)
def test_a_malformed_traceparent_gives_no_ids(bad):
    fields = calllog.trace_context({"TRACEPARENT": bad, "TRACESTATE": STATE})
    assert "trace_id" not in fields and "span_id" not in fields and "traceparent" not in fields
    assert "tracestate" not in fields  # meaningless without a parent
    assert fields["traceparentInvalid"] == bad


def test_a_later_version_may_carry_more_fields():
    parent = f"01-{TRACE_ID}-{SPAN_ID}-01-future"
    assert calllog.trace_context({"TRACEPARENT": parent})["trace_id"] == TRACE_ID


def test_the_entry_holds_the_trace_fields():
    env = {"CNI_COMMAND": "ADD", "TRACEPARENT": PARENT, "TRACESTATE": STATE}
    line = calllog.entry("loopback", env, {"name": "n"}, b"{}", "{}", 0, 0.0)
    assert (line["trace_id"], line["span_id"], line["tracestate"]) == (TRACE_ID, SPAN_ID, STATE)
    line = calllog.entry("loopback", {"CNI_COMMAND": "ADD"}, {}, b"{}", "{}", 0, 0.0)
    assert "trace_id" not in line and "traceparent" not in line


@pytest.fixture
def call_path(request, plugin_dir, start_daemon):
    if request.param == "exec":
        return {}
    return {"PYCNI_SOCKET": start_daemon(plugin_dir).socket}


@pytest.mark.parametrize("call_path", ["exec", "daemon"], indirect=True)
def test_the_runtime_trace_context_reaches_the_log(plugin_dir, call_path, netns, tmp_path):
    log = tmp_path / "calls.jsonl"
    environ = {"PATH": PATH, "TRACEPARENT": PARENT, "TRACESTATE": STATE, **call_path}
    runtime = Runtime([plugin_dir], cache_dir=str(tmp_path / "cache"), environ=environ)
    obj = {
        "cniVersion": "1.0.0",
        "name": "traced",
        "plugins": [{"type": "loopback", "logFile": str(log)}],
    }
    netlist = conflist.list_from_bytes(json.dumps(obj).encode())
    rt = RuntimeConf(container_id="ctr-trace", netns=netns, ifname="lo")
    runtime.add(netlist, rt)
    runtime.delete(netlist, rt)
    lines = [json.loads(text) for text in log.read_text().splitlines()]
    assert [line["verb"] for line in lines] == ["ADD", "DEL"]
    for line in lines:
        assert (line["path"] == "daemon") == bool(call_path)
        assert line["trace_id"] == TRACE_ID and line["span_id"] == SPAN_ID
        assert line["traceparent"] == PARENT and line["tracestate"] == STATE
