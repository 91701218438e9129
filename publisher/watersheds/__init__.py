"""/work/main/publisher/watersheds."""
