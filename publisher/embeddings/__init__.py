"""TESSERA tiles to COGs + STAC items: source readers, georeferencing, COG writer, the run."""
