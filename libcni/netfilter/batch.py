"""The node's iptables and nft, driven in batches: one read and one transaction per call.

Upstream execs `iptables` once per rule check and once per change (5-8 execs per address for
ipMasq). Here every change of a call goes into one `iptables-restore --noflush` (per family)
or one `nft -f -` script, after at most one read (`iptables-save -t <table>`, `nft -j list`).
The binaries are the node's own, found on PATH, so rules land in whichever iptables variant
(legacy or nft) the node and its other tools use.
"""

import json
import os
import shlex
import shutil

from libcni.protocol.errors import INTERNAL, CNIError

IPTABLES = {4: "iptables", 6: "ip6tables"}


def _run(argv: list, stdin: str = "") -> str:
    import subprocess

    try:
        proc = subprocess.run(argv, input=stdin, capture_output=True, text=True, env=_env())
    except FileNotFoundError:
        raise CNIError(
            INTERNAL,
            f"{argv[0]} not found",
            f"install the node's {argv[0].split('-')[0]} package or put it on PATH",
        ) from None
    if proc.returncode != 0:
        raise CNIError(INTERNAL, f"{' '.join(argv)} failed: {proc.stderr.strip()}")
    return proc.stdout


def tool_path() -> str:
    """PATH for the netfilter tools: a plugin's PATH may be empty (runtimes pass a minimal
    environment); the tools live in the sbin directories on every distribution."""
    path = os.environ.get("PATH") or ""
    extra = "/usr/local/sbin:/usr/sbin:/sbin:/usr/local/bin:/usr/bin:/bin"
    return f"{path}:{extra}" if path else extra


def _env() -> dict:
    return dict(os.environ, PATH=tool_path())


def have(binary: str) -> bool:
    return shutil.which(binary, path=tool_path()) is not None


# -- iptables ------------------------------------------------------------------------------


def iptables_works() -> bool:
    """Does iptables really work here, not just exist? (A binary for the other variant, a
    kernel without its tables, no CAP_NET_ADMIN: each fails this, as upstream's probe does.)"""
    return (
        have("iptables")
        and run_quietly(["iptables", "--wait", "-t", "filter", "-S", "INPUT"]) != ""
    )


def nft_works() -> bool:
    """nft is there and accepts a table in a dry run (`--check` changes nothing)."""
    if not have("nft"):
        return False
    import subprocess

    argv = ["nft", "--check", "add", "table", "ip", "supports_nftables_test"]
    try:
        return subprocess.run(argv, capture_output=True, env=_env()).returncode == 0
    except OSError:
        return False


class Table:
    """One table of `iptables-save`: chain names and rules, each rule as its saved line.

    A rule line reads like `-A POSTROUTING -s 10.1.0.2/32 -m comment --comment "..." -j X`;
    the same text with `-A` swapped for `-D` deletes it in iptables-restore.
    """

    def __init__(self, family: int, name: str, text: str) -> None:
        self.family = family
        self.name = name
        self.chains: set = set()
        self.rules: list = []
        for line in text.splitlines():
            if line.startswith(":"):
                self.chains.add(line[1:].split()[0])
            elif line.startswith("-A "):
                self.rules.append(line)

    def rules_of(self, chain: str) -> list:
        prefix = f"-A {chain} "
        return [r for r in self.rules if r.startswith(prefix)]


def save(family: int, table: str) -> Table:
    """The table as the kernel has it now (an empty Table if iptables is missing)."""
    binary = IPTABLES[family] + "-save"
    if not have(binary):
        return Table(family, table, "")
    return Table(family, table, _run([binary, "-t", table]))


def restore(family: int, table: str, lines: list) -> None:
    """Apply `lines` (`:CHAIN`, `-A`, `-D`, `-F`, `-X` ...) as one atomic transaction."""
    if not lines:
        return
    script = "\n".join([f"*{table}", *lines, "COMMIT", ""])
    _run([IPTABLES[family] + "-restore", "--noflush", "--wait"], script)


def try_restore(family: int, table: str, lines: list) -> bool:
    """The fast path of a call: apply `lines` if every one of them applies (`-C` of a rule
    that must be there, `-N` of a chain that must not, `-D` of a rule that must be there),
    else change nothing and return False so the caller takes its careful path. No read first:
    the transaction's cost does not grow with what other pods put in the table."""
    import subprocess

    script = "\n".join([f"*{table}", *lines, "COMMIT", ""])
    argv = [IPTABLES[family] + "-restore", "--noflush", "--wait"]
    try:
        proc = subprocess.run(argv, input=script, capture_output=True, text=True, env=_env())
    except OSError:
        return False
    return proc.returncode == 0


def quote(text: str) -> str:
    """A comment argument as iptables-save prints it (double quotes, inner quotes escaped)."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def comment_of(rule: str) -> str | None:
    """The `--comment` value of a saved rule line, unquoted."""
    try:
        words = shlex.split(rule)
    except ValueError:
        return None
    for i, word in enumerate(words[:-1]):
        if word == "--comment":
            return words[i + 1]
    return None


def target_of(rule: str) -> str | None:
    words = rule.split()
    for i, word in enumerate(words[:-1]):
        if word in ("-j", "-g"):
            return words[i + 1]
    return None


# -- nftables ------------------------------------------------------------------------------


def nft_script(script: str) -> None:
    """Run one nft transaction (all of it or nothing)."""
    _run(["nft", "-f", "-"], script)


def nft_try(script: str) -> bool:
    """Run one nft transaction if all of it applies; False (nothing changed) otherwise: the
    fast path of a call, whose failure sends it to a careful path that reads first."""
    import subprocess

    try:
        proc = subprocess.run(
            ["nft", "-f", "-"], input=script, capture_output=True, text=True, env=_env()
        )
    except OSError:
        return False
    return proc.returncode == 0


def nft_list(*what: str) -> list:
    """`nft -j list <what>` as a list of objects; [] when the table or chain does not exist."""
    if not have("nft"):
        return []
    try:
        out = _run(["nft", "-j", "list", *what])
    except CNIError:
        return []
    return json.loads(out).get("nftables", []) if out.strip() else []


def nft_rules(*what: str) -> list:
    """The rule objects of an `nft -j list` (each has family, table, chain, handle, comment)."""
    return [item["rule"] for item in nft_list(*what) if "rule" in item]


def nft_string(text: str) -> str:
    """A quoted string for an nft script (comments never hold quotes: callers strip them)."""
    return '"' + text.replace('"', "") + '"'


def exists(binary: str, table: str, chain: str, rule: list) -> bool:
    """`iptables -C`: is this exact rule in the chain? (CHECK only; one exec per rule.)"""
    import subprocess

    argv = [binary, "--wait", "-t", table, "-C", chain, *rule]
    proc = subprocess.run(argv, capture_output=True, env=_env())
    return proc.returncode == 0


def run_quietly(argv: list) -> str:
    """Run a best-effort helper command; its stdout, "" when it fails or is missing."""
    import subprocess

    try:
        proc = subprocess.run(argv, capture_output=True, text=True, env=_env())
    except OSError:
        return ""
    return proc.stdout if proc.returncode == 0 else ""


def run_checked(argv: list, stdin: str = "") -> str:
    """Run a command; its stdout, or a CNIError carrying its stderr."""
    return _run(argv, stdin)
