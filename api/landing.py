"""The landing page: stac-fastapi-pgstac's, plus links to the collections that matter.

``TesseraClient`` extends (does not fork) ``CoreCrudClient``: the landing page gains ``child``
links to every collection, the TESSERA embedding collections, the model collection and the
CoRE Stack collections first, each titled, and links to our extension schema and embedding
routes.
"""

from __future__ import annotations

from typing import Any

import attr
from fastapi import Request
from stac_fastapi.pgstac.core import CoreCrudClient
from stac_fastapi.types.requests import get_base_url

#: Collection id prefixes listed first on the landing page, in this order.
FEATURED_PREFIXES: tuple[str, ...] = ("tessera-embeddings-", "tessera-models", "corestack-")
MAX_CHILD_LINKS = 500


def featured_rank(collection_id: str) -> tuple[int, str]:
    """Sort key: featured prefixes first (in their order), then the rest by id."""
    for rank, prefix in enumerate(FEATURED_PREFIXES):
        if collection_id.startswith(prefix):
            return rank, collection_id
    return len(FEATURED_PREFIXES), collection_id


@attr.s
class TesseraClient(CoreCrudClient):
    """CoreCrudClient with a landing page that lists and links the collections."""

    async def landing_page(self, **kwargs: Any) -> Any:
        """The landing page with titled ``child`` links to the collections."""
        page = await super().landing_page(**kwargs)
        request: Request = kwargs["request"]
        base_url = get_base_url(request)
        async with request.app.state.get_connection(request, "r") as conn:
            rows = await conn.fetch(
                "SELECT id, coalesce(content->>'title', id) AS title FROM pgstac.collections "
                "ORDER BY id LIMIT $1",
                MAX_CHILD_LINKS,
            )
        links = page["links"]
        for row in sorted(rows, key=lambda r: featured_rank(r["id"])):
            links.append(
                {
                    "rel": "child",
                    "type": "application/json",
                    "title": row["title"],
                    "href": f"{base_url}collections/{row['id']}",
                }
            )
        links.append(
            {
                "rel": "describedby",
                "type": "application/schema+json",
                "title": "TESSERA embedding extension schema",
                "href": f"{base_url}{request.app.state.embedding_schema_path.lstrip('/')}",
            }
        )
        return page
