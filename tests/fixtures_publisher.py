"""Reusable pytest fixtures of the publisher area (registered in tests/conftest.py)."""
