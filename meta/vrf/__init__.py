"""The vrf plugin: its config and verbs, and what only it uses."""
