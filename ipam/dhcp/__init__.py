"""dhcp IPAM plugin and its daemon."""
