"""Heads on the embeddings: labels, training, class maps."""
