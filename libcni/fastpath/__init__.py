"""The optional fast path: a client that hands a call to the preloaded daemon, and the daemon."""
