"""Engines that run tasks (tiles, join cells): serial, process pool, Dask."""
