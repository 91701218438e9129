"""Packaged copy of the tessera-stac embedding STAC extension schema (see README.md here)."""
