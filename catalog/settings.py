"""Database settings (pydantic-settings): read from the environment / ``.env`` when built.

Never instantiated at import time: callers build ``DatabaseSettings()`` and pass it on.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class DatabaseSettings(BaseSettings):
    """Where the pgSTAC database is.

    Resolution order: ``TESSERA_STAC_DATABASE_URL`` (a DSN) if set; else the standard ``PG*``
    variables when ``PGHOST`` is set; else the project-local cluster under ``home``.
    """

    model_config = SettingsConfigDict(env_file=".env", extra="ignore", env_prefix="TESSERA_STAC_")

    database_url: str | None = Field(default=None, description="External database DSN.")
    home: Path = Field(
        default=Path(".tessera-stac"), description="Project-local state (database cluster...)."
    )
    db_port: int | None = Field(
        default=None, description="Port for the project-local cluster (default: a free port)."
    )
    db_name: str = Field(default="tessera", description="Database name in the local cluster.")


class PgEnvSettings(BaseSettings):
    """The libpq ``PG*`` variables, as an external database is usually described."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore", env_prefix="")

    pghost: str | None = None
    pgport: int = 5432
    pguser: str | None = None
    pgpassword: str | None = None
    pgdatabase: str | None = None

    def dsn(self) -> str | None:
        """Return a DSN built from the variables, or None when ``PGHOST`` is unset."""
        if not self.pghost:
            return None
        from urllib.parse import quote

        auth = ""
        if self.pguser:
            auth = quote(self.pguser)
            if self.pgpassword:
                auth += ":" + quote(self.pgpassword)
            auth += "@"
        db = self.pgdatabase or self.pguser or "postgres"
        return f"postgresql://{auth}{self.pghost}:{self.pgport}/{db}"
