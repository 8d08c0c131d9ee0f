"""Helpers for tests: the conformance suite every store passes, builders and strategies."""
