"""Error hierarchy shared by every part of tessera-stac.

Every error a user can cause or fix derives from :class:`TesseraStacError`; the CLI prints
its message as one line (the traceback only with ``--debug``) and exits with ``exit_code``.
"""

from __future__ import annotations


class TesseraStacError(Exception):
    """Base class for errors with a message meant for the person running the tool."""

    exit_code: int = 3


class ConfigurationError(TesseraStacError):
    """The environment or settings are wrong (missing binary, bad DSN, port in use...)."""


class InputError(TesseraStacError):
    """An input file or object is malformed; the message names the file and the problem."""


class DatabaseError(TesseraStacError):
    """The database could not be reached or refused an operation."""
