"""Reusable pytest fixtures of the api area (registered in tests/conftest.py)."""
