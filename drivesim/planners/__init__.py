"""Planners: the protocol (`base`), the built-ins (`builtin`), and loading user planners."""
