"""libcni: the shared skeleton every pycni plugin stands on, and the runtime side.

Kept empty of imports on purpose: a plugin's start-up cost is paid per call, so each
module is imported only by the verb that needs it.
"""

# The release version reported in every plugin's about text.
PYCNI_VERSION = "0.1.0"

# Executable name -> module of every plugin in this program (build/multicall.py fills it in).
# A delegation to a sibling that is this very executable runs in-process (libcni.delegation.invoke).
SIBLINGS: dict = {}
