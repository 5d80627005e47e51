"""The native front door (build/frontdoor.c): every name in build/dist/bin is one small C program
that answers VERSION itself, hands a call to the daemon, or execs the frozen program in
`_internal/`. Whichever way a call goes, its bytes and exit status are the same: front door ->
daemon, front door -> frozen program, and the source launchers.

Daemons run inside a test netns and a private mount namespace (conftest.Daemon); the stand-in
daemon below is a socket in the test's tmp_path served by a thread of this process.
"""

import json
import os
import runpy
import socket
import struct
import subprocess
import threading

import pytest
from conftest import REPO, run_plugin
from kit import require

pytestmark = pytest.mark.frozen

TABLE = runpy.run_path(os.path.join(REPO, "build", "multicall.py"))
PLUGINS = sorted(name for name in TABLE["PLUGINS"] if name not in TABLE["NOT_FORWARDED"])
FRONTDOOR = runpy.run_path(os.path.join(REPO, "build", "frontdoor.py"))
VERSION = runpy.run_path(os.path.join(REPO, "libcni", "__init__.py"))["PYCNI_VERSION"]
LOOPBACK = {"cniVersion": "1.0.0", "name": "lo-net", "type": "loopback"}
GNU_TIME = "/usr/bin/time"
SANITIZER_REPORTS = (b"AddressSanitizer", b"LeakSanitizer", b"runtime error:")


def frozen_program(frozen_bin: str) -> str:
    return os.path.join(frozen_bin, FRONTDOOR["RUNTIME"])


def run(argv, env, stdin=b"", executable=None, cwd=None):
    proc = subprocess.run(
        argv,
        executable=executable,
        env=env,
        input=stdin,
        capture_output=True,
        cwd=cwd,
        timeout=60,
    )
    return proc.returncode, proc.stdout, proc.stderr


def nowhere(tmp_path) -> dict:
    """An environment entry that points the fast path at a socket that does not exist."""
    return {"PYCNI_SOCKET": str(tmp_path / "no-daemon.sock")}


def build_id_of(path: str) -> str:
    st = os.stat(path)
    return f"{VERSION}:{st.st_dev}:{st.st_ino}:{st.st_size}:{st.st_mtime_ns}"


class FakeDaemon:
    """A socket where the daemon's would be: records each request (libcni.fastpath.client header,
    plus what the passed descriptors are) and answers it with `reply`: "refuse", "hang up"
    (close without a status) or an exit status."""

    def __init__(self, path, reply):
        from libcni.fastpath import client as fastpath

        self.decode = fastpath.decode_header
        self.reply = reply
        self.requests: list = []
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(str(path))
        self.listener.listen(8)
        self.listener.settimeout(0.2)
        self.path = str(path)
        self.stopped = False
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while not self.stopped:
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            with conn:
                conn.settimeout(10)
                msg, fds, _, _ = socket.recv_fds(conn, 1 << 20, 16)
                (length,) = struct.unpack_from("!I", msg)
                data = msg[4:]
                while len(data) < length:
                    chunk = conn.recv(length - len(data))
                    if not chunk:
                        break
                    data += chunk
                request = self.decode(data)
                request["fds"] = [os.fstat(fd) for fd in fds]
                for fd in fds:
                    os.close(fd)
                self.requests.append(request)
                if self.reply == "refuse":
                    conn.sendall(b"X")
                elif self.reply != "hang up":
                    conn.sendall(b"S" + struct.pack("!i", self.reply))

    def close(self):
        self.stopped = True
        self.thread.join(5)
        self.listener.close()


@pytest.fixture
def fake_daemon(tmp_path):
    made = []

    def make(reply):
        made.append(FakeDaemon(tmp_path / f"fake{len(made)}.sock", reply))
        return made[-1]

    try:
        yield make
    finally:
        for fake in made:
            fake.close()


# --- the install ---------------------------------------------------------------------------


def test_every_name_is_one_small_native_program_beside_the_runtime_folder(frozen_bin):
    names = sorted(TABLE["PLUGINS"])
    entries = sorted(os.listdir(frozen_bin))
    assert entries == sorted([*names, "_internal"])
    door = os.stat(os.path.join(frozen_bin, "loopback"))
    for name in names:
        st = os.stat(os.path.join(frozen_bin, name))
        assert (st.st_dev, st.st_ino) == (door.st_dev, door.st_ino), f"{name} is not a link"
    with open(os.path.join(frozen_bin, "loopback"), "rb") as f:
        assert f.read(4) == b"\x7fELF"
    frozen = os.stat(frozen_program(frozen_bin))
    assert frozen.st_ino != door.st_ino
    daemon = os.stat(os.path.join(frozen_bin, "_internal", TABLE["DAEMON"]))
    assert daemon.st_ino == frozen.st_ino  # the daemon is the frozen program under its name


def test_the_front_door_grows_the_install_by_less_than_a_mebibyte(frozen_bin):
    outside = {
        (st.st_dev, st.st_ino): st.st_size
        for st in (os.stat(e.path) for e in os.scandir(frozen_bin) if e.is_file())
    }
    assert sum(outside.values()) <= 1 << 20, outside


def test_built_with_hardening(frozen_bin):
    door = os.path.join(frozen_bin, "loopback")

    def readelf(*args):
        return subprocess.run(
            ["readelf", "-W", *args, door], capture_output=True, text=True, check=True
        ).stdout

    assert "DYN (Position-Independent Executable file)" in readelf("-h")  # -pie
    assert "GNU_RELRO" in readelf("-l")  # -z relro
    dynamic = readelf("-d")
    assert "BIND_NOW" in dynamic and "PIE" in dynamic  # -z now
    symbols = readelf("--dyn-syms")
    assert "__stack_chk_fail" in symbols  # -fstack-protector-strong
    assert "_chk@" in symbols.replace("__stack_chk_fail@", "")  # _FORTIFY_SOURCE


# --- VERSION ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", PLUGINS)
def test_version_is_byte_identical_to_the_frozen_programs_and_the_source_launchers(
    frozen_bin, source_bin, name, tmp_path
):
    env = {"CNI_COMMAND": "VERSION", **nowhere(tmp_path)}
    stdin = b'{"cniVersion": "1.0.0"}'
    door = run([os.path.join(frozen_bin, name)], env, stdin)
    frozen = run([name], env, stdin, executable=frozen_program(frozen_bin))
    source = run([os.path.join(source_bin, name)], env, stdin)
    assert door == frozen == source
    assert door[0] == 0 and door[2] == b""
    assert json.loads(door[1])["cniVersion"] == "1.1.0"


def test_version_is_answered_without_the_runtime_folder(frozen_bin, tmp_path):
    # A copy of the front door alone: VERSION needs no Python, anything else does.
    alone = tmp_path / "loopback"
    alone.write_bytes(open(os.path.join(frozen_bin, "loopback"), "rb").read())
    alone.chmod(0o755)
    version = {"CNI_COMMAND": "VERSION"}
    assert run([str(alone)], version) == run([os.path.join(frozen_bin, "loopback")], version)
    code, out, err = run([str(alone)], {"CNI_COMMAND": "ADD"})
    assert code == 127 and out == b""
    assert b"cannot run the frozen program" in err and b"_internal/pycni" in err


@pytest.mark.parametrize("name", sorted(TABLE.get("SUBCOMMANDS", {})))
def test_a_serving_subcommand_is_the_frozen_programs_even_with_version_set(
    frozen_bin, source_bin, fake_daemon, name
):
    # `dhcp daemon -bogus`: the explicit argument wins over CNI_COMMAND=VERSION, and the call
    # is never handed to the fork-server either; every path gives the frozen program's answer.
    fake = fake_daemon(0)
    env = {"CNI_COMMAND": "VERSION", "PYCNI_SOCKET": fake.path}
    argv = [TABLE["SUBCOMMANDS"][name], "-bogus"]
    door = run([os.path.join(frozen_bin, name), *argv], env)
    frozen = run([name, *argv], env, executable=frozen_program(frozen_bin))
    source = run([os.path.join(source_bin, name), *argv], env)
    assert door == frozen == source
    assert door[0] != 0 and door[1] == b"" and fake.requests == []


def test_version_never_goes_to_the_daemon(frozen_bin, fake_daemon):
    fake = fake_daemon(0)
    code, out, _ = run(
        [os.path.join(frozen_bin, "bridge")], {"CNI_COMMAND": "VERSION", "PYCNI_SOCKET": fake.path}
    )
    assert code == 0 and b"supportedVersions" in out and fake.requests == []


# --- calls: the three paths ------------------------------------------------------------------


def three_ways(frozen_bin, source_bin, daemon, tmp_path, make_netns, command, conf, **kw):
    """(exit status, stdout, stderr) of one call through front door -> daemon, front door ->
    frozen program and the source launcher, each in a fresh netns named NS in the output."""
    results = []
    for plugin_dir, env in (
        (frozen_bin, {"PYCNI_SOCKET": daemon.socket}),
        (frozen_bin, nowhere(tmp_path)),
        (source_bin, nowhere(tmp_path)),
    ):
        netns = make_netns()
        if command in ("CHECK", "DEL"):
            added = run_plugin(plugin_dir, conf["type"], "ADD", conf, netns=netns, env=env, **kw)
            assert added.returncode == 0, added
        done = run_plugin(plugin_dir, conf["type"], command, conf, netns=netns, env=env, **kw)
        results.append((done.returncode, done.stdout.replace(netns, "NS"), done.stderr))
    return results


@pytest.mark.parametrize("command", ["ADD", "CHECK", "DEL"])
def test_loopback_calls_are_byte_identical_on_all_three_paths(
    frozen_bin, source_bin, start_daemon, tmp_path, make_netns, command
):
    daemon = start_daemon(frozen_bin)
    via_daemon, via_frozen, via_source = three_ways(
        frozen_bin, source_bin, daemon, tmp_path, make_netns, command, LOOPBACK, ifname="lo"
    )
    assert via_daemon == via_frozen == via_source
    assert via_daemon[0] == 0
    assert daemon.served() == (2 if command != "ADD" else 1)  # the ADD before CHECK/DEL too


def test_errors_and_about_text_are_byte_identical_on_all_three_paths(
    frozen_bin, source_bin, start_daemon, tmp_path, make_netns
):
    daemon = start_daemon(frozen_bin)
    bad = dict(LOOPBACK, cniVersion="9.9.9")
    errors = three_ways(frozen_bin, source_bin, daemon, tmp_path, make_netns, "ADD", bad)
    assert errors[0] == errors[1] == errors[2]
    assert errors[0][0] == 1 and json.loads(errors[0][1])["code"] == 1
    about = three_ways(frozen_bin, source_bin, daemon, tmp_path, make_netns, None, LOOPBACK)
    assert about[0] == about[1] == about[2]
    assert about[0][0] == 0 and about[0][2].startswith("CNI loopback plugin")
    assert daemon.served() == 2


def test_host_local_is_byte_identical_on_all_three_paths(
    frozen_bin, source_bin, start_daemon, tmp_path, make_netns
):
    daemon = start_daemon(frozen_bin)
    outputs = []
    for number, (plugin_dir, env) in enumerate(
        [
            (frozen_bin, {"PYCNI_SOCKET": daemon.socket}),
            (frozen_bin, nowhere(tmp_path)),
            (source_bin, nowhere(tmp_path)),
        ]
    ):
        conf = {
            "cniVersion": "1.0.0",
            "name": "hl",
            "type": "host-local",
            "ipam": {
                "type": "host-local",
                "dataDir": str(tmp_path / f"ipam{number}"),
                "ranges": [[{"subnet": "10.66.0.0/24"}]],
                "routes": [{"dst": "0.0.0.0/0"}],
            },
        }
        netns = make_netns()
        steps = [
            run_plugin(plugin_dir, "host-local", verb, conf, netns=netns, env=env)
            for verb in ("ADD", "DEL")
        ]
        outputs.append([(s.returncode, s.stdout, s.stderr) for s in steps])
    assert outputs[0] == outputs[1] == outputs[2]
    assert json.loads(outputs[0][0][1])["ips"][0]["address"] == "10.66.0.2/24"
    assert daemon.served() == 2


def test_delegated_ipam_still_runs_in_process(frozen_bin, make_netns, tmp_path):
    # The frozen ptp finds host-local in CNI_PATH as a front door of its own install: that is
    # the same code, so it runs in-process (no exec of host-local).
    from kit.l3node import Node

    node = Node(make_netns, tmp_path, "ptp")
    conf = {
        "cniVersion": "1.0.0",
        "name": "ptpnet",
        "type": "ptp",
        "ipam": node.host_local("10.56.0.0/24"),
    }
    trace = tmp_path / "execs"
    env = {
        "PATH": os.environ["PATH"],
        "CNI_COMMAND": "ADD",
        "CNI_CONTAINERID": "c1",
        "CNI_NETNS": node.pod(),
        "CNI_IFNAME": "eth0",
        "CNI_PATH": frozen_bin,
        **nowhere(tmp_path),
    }
    code, out, err = run(
        [
            "ip",
            "netns",
            "exec",
            os.path.basename(node.host),
            "strace",
            "-f",
            "-qq",
            "-e",
            "trace=execve",
            "-o",
            str(trace),
            os.path.join(frozen_bin, "ptp"),
        ],
        env,
        json.dumps(conf).encode(),
    )
    assert code == 0, (out, err)
    assert json.loads(out)["ips"][0]["address"] == "10.56.0.2/24"
    execs = trace.read_text()
    assert frozen_program(frozen_bin) in execs  # the front door did exec the frozen program
    assert "host-local" not in execs


# --- the fast-path protocol against a stand-in daemon ------------------------------------------


def test_request_is_the_python_clients_and_carries_our_namespaces(
    frozen_bin, fake_daemon, tmp_path
):
    fake = fake_daemon(3)
    env = {"PYCNI_SOCKET": fake.path, "CNI_COMMAND": "DEL", "CNI_ARGS": "A=1;B=é", "EMPTY": ""}
    argv_tail = ["one", "two words", ""]
    door = run([os.path.join(frozen_bin, "loopback"), *argv_tail], env, cwd=tmp_path)
    frozen = run(["loopback", *argv_tail], env, executable=frozen_program(frozen_bin), cwd=tmp_path)
    assert door == frozen == (3, b"", b"")  # the worker's status is the exit status
    ours, pythons = fake.requests
    pythons_fds = pythons.pop("fds")
    fds = ours.pop("fds")
    assert ours == pythons
    assert ours["build"] == build_id_of(frozen_program(frozen_bin))
    assert ours["name"] == "loopback" and ours["argv"] == argv_tail and ours["env"] == env
    assert len(fds) == len(pythons_fds) == 6
    for got, path in zip(
        fds[3:], ("/proc/self/ns/net", "/proc/self/ns/mnt", tmp_path), strict=True
    ):
        st = os.stat(path)
        assert (got.st_dev, got.st_ino) == (st.st_dev, st.st_ino), path


@pytest.mark.parametrize("status", [0, 1, 255, -1, 256 + 7])
def test_exit_status_is_the_workers(frozen_bin, fake_daemon, status):
    fake = fake_daemon(status)
    door = run([os.path.join(frozen_bin, "tuning")], {"PYCNI_SOCKET": fake.path})
    assert door == (status & 0xFF, b"", b"")
    assert len(fake.requests) == 1


def test_a_refusal_runs_the_frozen_program(frozen_bin, fake_daemon, tmp_path, netns):
    fake = fake_daemon("refuse")
    refused = run_plugin(
        frozen_bin,
        "loopback",
        "ADD",
        LOOPBACK,
        netns=netns,
        ifname="lo",
        env={"PYCNI_SOCKET": fake.path},
    )
    assert refused.returncode == 0, refused
    # The front door's request, then the frozen program's own try (refused as well).
    assert [r["name"] for r in fake.requests] == ["loopback", "loopback"]
    plain = run_plugin(
        frozen_bin, "loopback", "ADD", LOOPBACK, netns=netns, ifname="lo", env=nowhere(tmp_path)
    )
    assert (refused.stdout, refused.stderr) == (plain.stdout, plain.stderr)


def test_a_worker_lost_without_status_is_reported_like_the_python_client(
    frozen_bin, source_bin, fake_daemon
):
    fake = fake_daemon("hang up")
    env = {"PYCNI_SOCKET": fake.path, "CNI_COMMAND": "ADD"}
    door = run([os.path.join(frozen_bin, "bridge")], env)
    source = run([os.path.join(source_bin, "bridge")], env)
    assert door == source
    assert door[0] == 1 and json.loads(door[1])["code"] == 11
    assert len(fake.requests) == 2


def test_a_stale_socket_file_runs_the_frozen_program(frozen_bin, tmp_path, netns):
    stale = tmp_path / "stale.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(stale))
    listener.close()
    done = run_plugin(
        frozen_bin,
        "loopback",
        "ADD",
        LOOPBACK,
        netns=netns,
        ifname="lo",
        env={"PYCNI_SOCKET": str(stale)},
    )
    assert done.returncode == 0 and done.json["ips"][0]["address"] == "127.0.0.1/8"


# --- how it is started --------------------------------------------------------------------------


def test_a_symlink_from_elsewhere_works(frozen_bin, tmp_path, make_netns):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    os.symlink(os.path.join(frozen_bin, "loopback"), elsewhere / "loopback")
    version = {"CNI_COMMAND": "VERSION"}
    assert run([str(elsewhere / "loopback")], version) == run(
        [os.path.join(frozen_bin, "loopback")], version
    )
    calls = []
    for directory in (str(elsewhere), frozen_bin):
        done = run_plugin(
            directory,
            "loopback",
            "ADD",
            LOOPBACK,
            netns=make_netns(),
            ifname="lo",
            env=nowhere(tmp_path),
        )
        calls.append((done.returncode, done.json["ips"]))
    assert calls[0] == calls[1] and calls[0][0] == 0


def test_an_empty_environment_works(frozen_bin):
    door = run([os.path.join(frozen_bin, "loopback")], {})
    frozen = run(["loopback"], {}, executable=frozen_program(frozen_bin))
    assert door == frozen
    assert door[0] == 0 and door[2].startswith(b"CNI loopback plugin")


def test_cnitool_is_the_frozen_program(frozen_bin, source_bin):
    # cnitool is no plugin: the front door always execs the frozen cnitool, which with
    # arguments runs as ever, and run like a plugin (CNI_COMMAND, no arguments) answers like one.
    for env in ({}, {"CNI_COMMAND": "VERSION"}):
        door = run([os.path.join(frozen_bin, "cnitool"), "--help"], env)
        frozen = run(["cnitool", "--help"], env, executable=frozen_program(frozen_bin))
        assert door == frozen and door[0] == 0 and b"usage: cnitool" in door[1]
    for command in ("VERSION", "ADD"):
        env = {"CNI_COMMAND": command}
        door = run([os.path.join(frozen_bin, "cnitool")], env)
        frozen = run(["cnitool"], env, executable=frozen_program(frozen_bin))
        source = run([os.path.join(source_bin, "cnitool")], env)
        assert door == frozen == source
    assert door[0] == 1 and json.loads(door[1])["msg"] == "cnitool is not a CNI plugin"


def test_everything_in_the_plugin_directory_answers_version_like_a_plugin(frozen_bin, tmp_path):
    # A runtime or a tool may probe every file there: each answers at once and serves nothing.
    env = {"CNI_COMMAND": "VERSION", **nowhere(tmp_path)}
    for entry in os.scandir(frozen_bin):
        if entry.is_dir():
            assert entry.name == "_internal"
            continue
        code, out, err = run([entry.path], env, b'{"cniVersion": "1.0.0"}')
        assert code == 0 and err == b"", (entry.name, err)
        assert json.loads(out)["cniVersion"] == "1.1.0", entry.name


def test_peak_rss_is_at_most_two_mebibytes(frozen_bin, start_daemon, netns, tmp_path):
    require(os.access(GNU_TIME, os.X_OK), f"GNU time is not installed at {GNU_TIME} (Debian time)")
    daemon = start_daemon(frozen_bin)
    peaks = {}
    for label, command, env in (
        ("VERSION", "VERSION", {}),
        ("ADD via the daemon", "ADD", {"PYCNI_SOCKET": daemon.socket}),
    ):
        report = tmp_path / "rss"
        done = run_plugin(
            frozen_bin,
            "loopback",
            command,
            LOOPBACK,
            netns=netns,
            ifname="lo",
            env=env,
            wrapper=[GNU_TIME, "-f", "%M", "-o", str(report)],
        )
        assert done.returncode == 0, done
        peaks[label] = int(report.read_text().split()[-1])
    assert daemon.served() == 1
    assert max(peaks.values()) <= 2048, peaks


# --- under the sanitizers (ASan, UBSan) -----------------------------------------------------


def test_sanitized_build_runs_every_path_cleanly(
    frozen_bin, start_daemon, fake_daemon, tmp_path, make_netns
):
    # The front door built with -fsanitize=address,undefined (warnings as errors), beside the
    # real runtime folder; each path once, and no sanitizer may report anything.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    FRONTDOOR["build"](str(bin_dir / "loopback"), sanitize=True)
    os.symlink(os.path.join(frozen_bin, "_internal"), bin_dir / "_internal")
    sanitizers = {
        "ASAN_OPTIONS": "detect_leaks=1:abort_on_error=0",
        "UBSAN_OPTIONS": "print_stacktrace=1:halt_on_error=1",
    }
    daemon = start_daemon(frozen_bin)
    refuse, hang_up, status = fake_daemon("refuse"), fake_daemon("hang up"), fake_daemon(5)

    def call(command, socket_path, netns=""):
        env = dict(sanitizers, PYCNI_SOCKET=socket_path)
        done = run_plugin(
            str(bin_dir), "loopback", command, LOOPBACK, netns=netns, ifname="lo", env=env
        )
        report = [word for word in SANITIZER_REPORTS if word in done.stderr.encode()]
        assert report == [], done.stderr
        return done

    assert call("VERSION", daemon.socket).stdout.startswith('{"cniVersion":"1.1.0"')
    served = call("ADD", daemon.socket, make_netns())
    assert served.returncode == 0 and daemon.served() == 1, served
    alone = call("ADD", str(tmp_path / "none.sock"), make_netns())
    assert (alone.returncode, alone.json["ips"]) == (0, served.json["ips"])
    assert call("ADD", refuse.path, make_netns()).returncode == 0
    assert json.loads(call("ADD", hang_up.path).stdout)["code"] == 11
    assert call("DEL", status.path).returncode == 5
    assert call(None, str(tmp_path / "none.sock")).stderr.startswith("CNI loopback plugin")
