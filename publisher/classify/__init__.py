"""Heads on the embeddings: training, class maps, land cover per micro-watershed."""
