"""/work/main/publisher/join."""
