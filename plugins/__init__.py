"""Main plugins: each module is one plugin, named after its executable."""
