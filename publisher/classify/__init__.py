"""Heads on the embeddings: labels, training, class maps, land cover per micro-watershed."""
