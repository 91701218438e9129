"""Hrefs: the one resolver of relative hrefs, and what may be published.

Every layer resolves hrefs the same way (``resolve_href``): against a local path, an
``http(s)://`` URL or an ``s3://`` URI of the document holding them. ``is_public`` tells a
href a reader elsewhere can follow (http(s), s3, gs) from a private local path, which must
never be published (``source_identity`` keeps a short name for it instead).
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Sequence
from typing import Any
from urllib.parse import urljoin, urlsplit

PUBLIC_SCHEMES = ("http", "https", "s3", "gs")


def is_url(href: str) -> bool:
    """True for ``http(s)://`` URLs."""
    return urlsplit(href).scheme in ("http", "https")


def is_public(href: str) -> bool:
    """True when ``href`` can be followed from another machine (http(s), s3, gs)."""
    return urlsplit(href).scheme in PUBLIC_SCHEMES


def resolve_href(href: str, base: str | None) -> str:
    """Resolve a possibly relative ``href`` against the document at ``base``.

    Absolute hrefs (any scheme, or a path starting with ``/``) come back as they are; a
    relative one is joined to ``base``'s folder: URL joining for http(s), posix joining for
    ``s3://`` and local paths (``file://`` bases are read as paths).

    Examples:
        >>> resolve_href("../x/a.tif", "s3://b/p/c/item.json")
        's3://b/p/x/a.tif'
    """
    if urlsplit(href).scheme or href.startswith("/") or not base:
        return href
    parts = urlsplit(base)
    if parts.scheme == "s3":
        key = posixpath.normpath(posixpath.join(posixpath.dirname(parts.path), href))
        return f"s3://{parts.netloc}{key}"
    if parts.scheme in ("http", "https"):
        return urljoin(base, href)
    base_path = parts.path if parts.scheme == "file" else base
    return posixpath.normpath(posixpath.join(posixpath.dirname(base_path), href))


def source_identity(href: str, root: str | None = None) -> str:
    """What may be published about a source: its URL when public, else a relative key.

    A local path becomes its key below ``root`` (the source tree), or its file name when it
    lies outside ``root`` or no root is given: never the publisher's file system.
    """
    if is_public(href):
        return href
    path = urlsplit(href).path if href.startswith("file://") else href
    if root:
        base = root.rstrip("/") + "/"
        if path.startswith(base):
            return path[len(base) :]
    return posixpath.basename(path.rstrip("/"))


# an absolute local path inside a string: a "/" that starts a token (not a URL's or a key's)
_LOCAL_PATH = re.compile(r"(?<![\w.:/~-])/(?:[^\s/:'\"]+/)*[^\s/:'\"]+")


def scrub_local_paths(value: Any, roots: Sequence[str] = ()) -> Any:
    """A copy of a JSON-like value in which no string holds a local absolute path.

    Paths below one of ``roots`` become their key below it (``roots`` themselves ``.``); any
    other absolute path becomes its file name. URLs and relative keys are left as they are.
    """
    if isinstance(value, dict):
        return {k: scrub_local_paths(v, roots) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [scrub_local_paths(v, roots) for v in value]
    if not isinstance(value, str):
        return value
    text = value
    for root in sorted((r.rstrip("/") for r in roots if r.startswith("/")), key=len, reverse=True):
        text = text.replace(root + "/", "")
        text = re.sub(rf"{re.escape(root)}(?![\w./-])", ".", text)
    return _LOCAL_PATH.sub(lambda m: posixpath.basename(m.group(0)), text)
