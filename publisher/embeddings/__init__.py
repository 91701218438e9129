"""/work/main/publisher/embeddings."""
