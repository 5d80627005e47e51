"""The runtime side of CNI: network lists, list ADD/CHECK/DEL/GC/STATUS, the result cache and
cnitool."""
