"""Write source launchers, one per plugin, into a directory usable as CNI_PATH.

Each launcher runs the plugin from this checkout with the same interpreter that ran this
script, in isolated mode (-I: no user site, no PYTHON* variables, no cwd on sys.path), the way
a runtime execs a plugin binary. Usage: python3 build/srcbin.py OUTDIR
"""

import os
import runpy
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)

LAUNCHER = """#!{python} -I
import sys
sys.path.insert(0, {repo!r})
from {module} import main
sys.exit(main())
"""


def write_launchers(outdir: str) -> list:
    plugins = runpy.run_path(os.path.join(HERE, "multicall.py"))["PLUGINS"]
    os.makedirs(outdir, exist_ok=True)
    written = []
    for name, module in sorted(plugins.items()):
        path = os.path.join(outdir, name)
        with open(path + ".tmp", "w") as f:
            f.write(
                LAUNCHER.format(python=os.path.realpath(sys.executable), repo=REPO, module=module)
            )
        os.chmod(path + ".tmp", 0o755)
        os.replace(path + ".tmp", path)
        written.append(path)
    return written


if __name__ == "__main__":
    for p in write_launchers(sys.argv[1] if len(sys.argv) > 1 else os.path.join(HERE, "src-bin")):
        print(p)
