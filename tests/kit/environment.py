"""What a test needs from the machine, and what it does when that is missing.

A broken environment must not look like a green run: `require` skips on a developer's machine
(with the reason, so `pytest -rs` lists what did not run) and fails under CI=true, where .ci/run
installs everything. `variant` is for the other kind: a test of one shape of machine (a kernel
without ipvlan, a host without a virtio NIC) that has nothing to do on another; it skips
everywhere, and each use is named in tests/kit/README.md.
"""

import os

import pytest


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() not in ("", "0", "false", "no")


def require(condition, reason: str) -> None:
    """Go on if `condition`; else skip locally, fail under CI, naming `reason`."""
    if condition:
        return
    if in_ci():
        pytest.fail(f"CI=true and this machine cannot run the test: {reason}", pytrace=False)
    pytest.skip(reason)


def variant(condition, reason: str):
    """A skipif mark for a test of one machine shape (see the module docstring)."""
    return pytest.mark.skipif(condition, reason=f"not this machine's shape: {reason}")
