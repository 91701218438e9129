"""Embeddings x micro-watersheds: the zonal join and its PCA map."""
