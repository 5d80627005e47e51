"""A stand-in CNI plugin that records exactly what the runtime sent it.

Installed under several names (its CNI `type` is the name it was run as). Every call appends
one JSON line to $FAKE_LOG: the plugin name, the CNI_* variables, FAKE_MARK (to see that the
caller's environment is inherited) and stdin verbatim. Behaviour knobs, all environment:

* FAKE_FAIL="name:VERB,…"   fail that call with code $FAKE_FAIL_CODE (default 11)
* FAKE_RESULT_VERSION=v     ADD answers in version v instead of the config's
* FAKE_RESULT_NO_VERSION=1  ADD answers without cniVersion
* FAKE_VERSIONS="a,b"       VERSION answers these; FAKE_NO_VERSION_CMD=1: unknown command

ADD with a prevResult returns it with an interface named after this plugin appended, so a
test can read the chain order from the final result. Standard library only: it runs as a
separate process, like any plugin.
"""

import json
import os
import shutil
import sys

ALL = ["0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]


def install(directory: str, *names: str) -> str:
    """Write the plugin into `directory` under each name; returns the directory."""
    os.makedirs(directory, exist_ok=True)
    source = os.path.abspath(__file__)
    with open(source) as f:
        body = f.read()
    for name in names:
        path = os.path.join(directory, name)
        with open(path, "w") as f:
            f.write(f"#!{os.path.realpath(sys.executable)} -I\n{body}")
        shutil.copymode(source, path)
        os.chmod(path, 0o755)
    return directory


def read_log(path: str) -> list:
    """The recorded calls, oldest first; stdin decoded as JSON where it is JSON."""
    if not os.path.exists(path):
        return []
    calls = []
    with open(path) as f:
        for line in f:
            call = json.loads(line)
            try:
                call["conf"] = json.loads(call["stdin"])
            except ValueError:
                call["conf"] = None
            calls.append(call)
    return calls


def _fresh_result(name: str, version: str) -> dict:
    if version in ("0.1.0", "0.2.0"):
        return {"cniVersion": version, "ip4": {"ip": "10.99.0.2/24"}, "dns": {}}
    ip = {"interface": 0, "address": "10.99.0.2/24", "gateway": "10.99.0.1"}
    if version in ("0.3.0", "0.3.1", "0.4.0"):
        ip["version"] = "4"
    return {"cniVersion": version, "interfaces": [{"name": name}], "ips": [ip]}


def _fail(code: int, msg: str) -> int:
    sys.stdout.write(json.dumps({"code": code, "msg": msg}))
    return 1


def main() -> int:
    name = os.path.basename(sys.argv[0])
    command = os.environ.get("CNI_COMMAND", "")
    stdin = sys.stdin.read()
    log = os.environ.get("FAKE_LOG")
    if log:
        record = {
            "plugin": name,
            "env": {k: v for k, v in os.environ.items() if k.startswith("CNI_")},
            "mark": os.environ.get("FAKE_MARK"),
            "stdin": stdin,
        }
        with open(log, "a") as f:
            f.write(json.dumps(record) + "\n")
    if command == "VERSION":
        if os.environ.get("FAKE_NO_VERSION_CMD"):
            return _fail(4, "unknown CNI_COMMAND: VERSION")
        versions = os.environ.get("FAKE_VERSIONS")
        supported = versions.split(",") if versions else ALL
        sys.stdout.write(json.dumps({"cniVersion": "1.1.0", "supportedVersions": supported}))
        return 0
    failing = os.environ.get("FAKE_FAIL", "").split(",")
    if f"{name}:{command}" in failing:
        sys.stderr.write(f"{name}: failing {command} on request\n")
        return _fail(int(os.environ.get("FAKE_FAIL_CODE", "11")), f"{name} refuses {command}")
    if command != "ADD":
        return 0
    conf = json.loads(stdin)
    prev = conf.get("prevResult")
    if prev is not None:
        result = dict(prev)
        if "interfaces" in result or "ips" in result:
            result["interfaces"] = [*result.get("interfaces", []), {"name": name}]
    else:
        version = os.environ.get("FAKE_RESULT_VERSION") or conf.get("cniVersion", "")
        result = _fresh_result(name, version)
    if os.environ.get("FAKE_RESULT_NO_VERSION"):
        result.pop("cniVersion", None)
    sys.stdout.write(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
