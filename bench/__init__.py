"""Benchmarks: each module measures our code against the reference tool in the same run."""
