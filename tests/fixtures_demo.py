"""Reusable pytest fixtures of the demo area (registered in tests/conftest.py)."""
