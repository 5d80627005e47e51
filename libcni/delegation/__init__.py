"""Running other plugins: exec (or, for a sibling of this program, an in-process call) and
the IPAM delegation every main plugin does."""
