"""What every plugin speaks: the CNI skeleton, results, versions, errors, config decoding.

Imports nothing from the rest of libcni: the kernel helpers, netfilter, delegation and the
runtime side build on it, never the other way round."""
