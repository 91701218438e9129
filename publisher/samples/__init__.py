"""/work/main/publisher/samples."""
