"""Undo for ADD: the one idiom every plugin uses so that a failed ADD leaves nothing behind.

    with Session() as host, Session(call.netns) as container, Rollback() as undo:
        host_veth, container_veth = veth.create(host, container, call.ifname)
        undo.push(container.delete_link, container_veth)
        allocated = ipam.allocate(call, kind, undo)   # pushes the IPAM release itself
        ...

Each step that changes the kernel or node state pushes its undo right after it succeeds. When
the block raises, the steps run newest first, each on its own: one failing undo (logged on
stderr) does not stop the others, and the original error is what the caller sees. When the
block completes, nothing runs. Start the block before the first change, so that every change
has somewhere to register its undo, and after the kernel sessions (libcni.kernel.session) its
steps use: kernel changes are undone through the same session, with the Link objects held.
"""

import sys


class Rollback:
    """An ordered stack of undo steps, run newest first if the `with` block fails."""

    def __init__(self) -> None:
        self._steps: list = []

    def push(self, undo, *args, **kwargs) -> None:
        """Register `undo(*args, **kwargs)` to run if the block fails from here on."""
        self._steps.append((undo, args, kwargs))

    def __enter__(self) -> "Rollback":
        return self

    def __exit__(self, kind, value, tb) -> None:
        steps, self._steps = self._steps, []
        if kind is not None:
            for undo, args, kwargs in reversed(steps):
                _run_quietly(undo, args, kwargs)


def _run_quietly(undo, args, kwargs) -> None:
    try:
        undo(*args, **kwargs)
    except Exception as err:  # the ADD's own error is the one to report
        name = getattr(undo, "__qualname__", repr(undo))
        print(f"rollback: {name} failed too: {err}", file=sys.stderr)
