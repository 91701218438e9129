"""/work/main/publisher/engines."""
