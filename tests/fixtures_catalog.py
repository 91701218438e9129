"""Reusable pytest fixtures of the catalog area (registered in tests/conftest.py)."""
