"""Operator tools (simulate, snapshot, replay, evaluate, bench) as thin wrappers."""
