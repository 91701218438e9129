"""stac-api-validator and pystac-client against the live API with the published sample loaded."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import pytest

from tessera_stac.api.app import create_app
from tessera_stac.api.settings import ApiSettings
from tessera_stac.catalog.load import load
from tests.conftest import SHARED, our_schemas
from tests.fixtures_api import EMB_COLLECTION

LiveApi = Callable[[Any], str]
CONFORMANCE = [
    "core",
    "collections",
    "features",
    "item-search",
    "filter",
    "item-search#sort",
    "item-search#fields",
    "item-search#query",
]


@pytest.fixture
def sample_api(
    pg_dsn: str, live_api: LiveApi, cog_catalog: dict[str, Any]
) -> tuple[str, list[dict[str, Any]]]:
    """The API with the sample loaded; returns (url, the published items)."""
    url = live_api(create_app(ApiSettings(data_dir=cog_catalog["root"]), pg_dsn))
    load(pg_dsn, str(cog_catalog["catalog"]), base_url=url + "/data")
    return url, [t[0] for t in cog_catalog["tiles"].values()]


def run_validator(url: str, collection: str, geometry: dict[str, Any], *extra: str) -> str:
    tools = str(SHARED / "tools")
    code = (
        "import sys, json; sys.path.insert(0, sys.argv[1]); import stac_offline; "
        "stac_offline.install(extra=json.loads(sys.argv[2])); "
        # pystac-client's own IO bypasses the mirror: give pystac the pre-cached validator
        "import pystac.validation as v; v.set_validator(stac_offline.pystac_validator()); "
        "sys.exit(stac_offline.main(sys.argv[3:]))"
    )
    args = ["stac-api-validator", "--root-url", url + "/", "--collection", collection]
    args += ["--geometry", json.dumps(geometry), "--log-level", "INFO"]
    for c in CONFORMANCE:
        args += ["--conformance", c]
    proc = subprocess.run(
        [sys.executable, "-c", code, tools, json.dumps(our_schemas()), *args, *extra],
        capture_output=True,
        text=True,
        timeout=300,
    )
    return proc.stdout + proc.stderr


def test_stac_api_validator_reports_no_errors(
    sample_api: tuple[str, list[dict[str, Any]]],
) -> None:
    url, items = sample_api
    geometry = items[0]["geometry"]
    output = run_validator(
        url,
        EMB_COLLECTION,
        geometry,
        "--query-comparison-field",
        "embedding:dimensions",
        "--query-eq-value",
        "8",
        "--query-neq-value",
        "3",
        "--query-lt-value",
        "9",
        "--query-lte-value",
        "8",
        "--query-gt-value",
        "7",
        "--query-gte-value",
        "8",
        "--query-substring-field",
        "proj:code",
        "--query-starts-with-value",
        "EPSG:326",
        "--query-ends-with-value",
        "42",
        "--query-contains-value",
        "3264",
        # the validator checks "in" answers by set(property value) & values: for a string
        # property that is its characters, so one single-character value is listed too
        "--query-in-field",
        "proj:code",
        "--query-in-values",
        "EPSG:32642,E",
        "--fields-nested-property",
        "properties.proj:code",
    )
    assert re.search(r"^Errors: none", output, re.M), output
    for name in [
        "Core",
        "Collections",
        "Features",
        "Item Search",
        "Item Search - Filter Extension",
    ]:
        assert f"Validating STAC API - {name} conformance class" in output, name
    for ext in ["Fields", "Sort", "Query"]:
        assert f"Item Search - {ext} extension conformance class found" in output, ext
