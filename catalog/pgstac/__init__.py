"""/work/main/catalog/pgstac."""
