"""Write source launchers, one per program, into a directory usable as CNI_PATH.

Each launcher runs build/multicall.py's `run(name)` from this checkout with the interpreter that
ran this script, in isolated mode (-I: no user site, no PYTHON* variables, no cwd on sys.path),
the way a runtime execs a plugin binary. Usage: python3 build/srcbin.py OUTDIR
"""

import os
import runpy
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)

LAUNCHER = """#!{python} -I
import sys
sys.path[:0] = [{repo!r}, {build!r}]
import multicall
sys.exit(multicall.run({name!r}))
"""


def program_names() -> list:
    table = runpy.run_path(os.path.join(HERE, "multicall.py"))
    return sorted([*table["PLUGINS"], table["DAEMON"]])


def write_launchers(outdir: str) -> list:
    os.makedirs(outdir, exist_ok=True)
    python = os.path.realpath(sys.executable)
    written = []
    for name in program_names():
        path = os.path.join(outdir, name)
        with open(path + ".tmp", "w") as f:
            f.write(LAUNCHER.format(python=python, repo=REPO, build=HERE, name=name))
        os.chmod(path + ".tmp", 0o755)
        os.replace(path + ".tmp", path)
        written.append(path)
    return written


if __name__ == "__main__":
    default = os.path.join(HERE, "src-bin")
    for p in write_launchers(sys.argv[1] if len(sys.argv) > 1 else default):
        print(p)
