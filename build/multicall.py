"""The one program behind every pycni executable: it runs the plugin its file is named after.

Frozen, `build/dist/bin/<name>` are hard links of one PyInstaller executable sharing one
`_internal/` runtime; from source, `build/srcbin.py` writes small launchers that call `run()`.
Only the chosen plugin's module is imported, so start-up stays small.
"""

import os
import sys

# Executable name -> module with a main(). Add a plugin here and it is frozen and launched.
PLUGINS = {
    "loopback": "plugins.loopback",
    "cnitool": "libcni.cnitool",
}


def run(name: str) -> int:
    module_name = PLUGINS.get(name)
    if module_name is None:
        known = ", ".join(sorted(PLUGINS))
        print(
            f"pycni: unknown program name {name!r}; this executable runs one of: {known}",
            file=sys.stderr,
        )
        return 2
    __import__(module_name)
    return sys.modules[module_name].main()


def main() -> int:
    return run(os.path.basename(sys.argv[0]))


if __name__ == "__main__":
    sys.exit(main())
