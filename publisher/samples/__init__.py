"""Deterministic sample generators: TESSERA tiles, landmasks, MWS layers, items, catalogues."""
