"""What unmodified Python clients need from the search API.

* Conformance: stac-fastapi advertises the sort extension as ``v1.1.0``; pystac-client (0.9)
  recognises ``v1.0.*`` URIs only and warns "does not conform to SORT". The same classes are
  also advertised under their ``v1.0.0`` URI (their semantics did not change).
* ``numberMatched``: pgSTAC's search context in ``auto`` mode (an exact count when the query is
  cheap, the planner's estimate otherwise), so ``stac-client search --matched`` and
  ``ItemSearch.matched()`` get a number.
* A CQL2 *text* filter sent by POST (pystac-client does so for ``filter_lang="cql2-text"``) is
  translated to CQL2 JSON before it reaches pgSTAC, as GET requests already are.
"""

from __future__ import annotations

from typing import Any, Literal

import attr
from fastapi import HTTPException
from pydantic import Field
from stac_fastapi.extensions import SearchFilterExtension as _SearchFilterExtension
from stac_fastapi.extensions.filter.request import FilterExtensionPostRequest

STAC_API_PREFIX = "https://api.stacspec.org/"
#: Conformance fragments also advertised with their v1.0.0 URI.
V1_0_ALIASED = ("/item-search#sort",)
#: pgSTAC's ``context`` setting for searches (``off``, ``on``, ``auto``).
SEARCH_CONTEXT = "auto"


def with_v1_0_aliases(classes: list[str]) -> list[str]:
    """``classes`` plus the ``v1.0.0`` URI of each newer class listed in :data:`V1_0_ALIASED`."""
    out = list(classes)
    for uri in classes:
        if not uri.startswith(STAC_API_PREFIX) or not uri.endswith(V1_0_ALIASED):
            continue
        alias = STAC_API_PREFIX + "v1.0.0/" + uri[len(STAC_API_PREFIX) :].split("/", 1)[1]
        if alias not in out:
            out.append(alias)
    return out


class TextFilterPostRequest(FilterExtensionPostRequest):
    """The filter extension's POST model, also taking ``"filter-lang": "cql2-text"``.

    stac-fastapi merges extension models by their fields (validators are not carried over),
    so the text is translated by :func:`cql2_text_to_json`, called by the client.
    """

    filter_expr: dict[str, Any] | str | None = Field(  # type: ignore[assignment]
        None, alias="filter", description="A CQL2 filter: JSON, or text with cql2-text."
    )
    filter_lang: Literal["cql2-json", "cql2-text"] | None = Field(  # type: ignore[assignment]
        "cql2-json", alias="filter-lang", description="The encoding of 'filter'."
    )


@attr.s
class SearchFilterExtension(_SearchFilterExtension):
    """Item Search filter extension whose POST accepts CQL2 text as well as JSON.

    It keeps stac-fastapi's class name on purpose: the core client finds enabled extensions
    by class name (``extension_is_enabled("SearchFilterExtension")``) to add the landing
    page's ``queryables`` link.
    """

    POST = TextFilterPostRequest


TextFilterSearchExtension = SearchFilterExtension


def cql2_text_to_json(search_request: Any) -> None:
    """Translate a POSTed ``cql2-text`` filter to CQL2 JSON in place (400 when unparsable)."""
    text = getattr(search_request, "filter_expr", None)
    if not isinstance(text, str):
        return
    if getattr(search_request, "filter_lang", None) != "cql2-text":
        raise HTTPException(400, detail='a text filter needs "filter-lang": "cql2-text"')
    from cql2 import Expr

    try:
        expr = Expr(text)
        expr.validate()
    except Exception as exc:  # cql2 raises a bare Exception on parse errors
        raise HTTPException(status_code=400, detail=f"Invalid filter: {exc}") from None
    search_request.filter_expr = expr.to_json()
    search_request.filter_lang = "cql2-json"
