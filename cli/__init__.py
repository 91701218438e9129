"""/work/main/cli."""
