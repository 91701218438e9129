"""pgSTAC: loading items (pypgstac Loader) and the project-local PostgreSQL cluster."""
