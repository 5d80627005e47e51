"""Where the node-wide pycni defaults live (/etc/cni/pycni.json, or $PYCNI_CONFIG).

Its own module so that the skeleton (which only asks whether the file exists) and the call log
(which reads it) share the path without importing each other."""

NODE_CONFIG = "/etc/cni/pycni.json"


def node_config_path(env) -> str:
    return env.get("PYCNI_CONFIG") or NODE_CONFIG
