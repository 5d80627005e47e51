"""Kernel helpers plugins share: the rtnetlink client, links, veths, netns entry, sysctls, and
configuring a container interface from an IPAM result."""
