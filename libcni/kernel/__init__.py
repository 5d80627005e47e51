"""Kernel helpers plugins share. A verb opens one `session.Session` per network namespace it
touches (one rtnetlink socket, the netns fd) and hands it, with the Link objects it holds, to
the helpers here: links, veths, interface configuration from an IPAM result, CHECK
comparisons, sysctls, netns entry, and the rtnetlink client underneath."""
