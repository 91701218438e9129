"""Reusable pytest fixtures of the corestack area (registered in tests/conftest.py)."""
