"""Reusable pytest fixtures of the scale area (registered in tests/conftest.py)."""
