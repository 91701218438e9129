"""The tessera-stac STAC API (stac-fastapi-pgstac, configured and extended)."""

from __future__ import annotations

import logging


class _DropDefaultSettingsWarning(logging.Filter):
    """stac-fastapi builds a default ``ApiSettings()`` at import time (``types.core``) and
    warns that it uses default titles; our app passes real ones, so that warning is noise."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Using default values for")


logging.getLogger("stac_fastapi.types.config").addFilter(_DropDefaultSettingsWarning())
