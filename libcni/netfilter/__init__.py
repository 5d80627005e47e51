"""Netfilter work plugins share: one batched iptables-restore / nft transaction per call, and
the masquerade rules of bridge and ptp."""
