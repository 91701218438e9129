"""api/browser.py: STAC Browser served under /browser/ by the live API over real HTTP."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tessera_stac.api.app import create_app
from tessera_stac.api.browser import mount_browser
from tessera_stac.api.settings import ApiSettings
from tessera_stac.catalog.errors import ConfigurationError


@pytest.fixture
def fake_build(tmp_path: Path) -> Path:
    """A tiny stand-in for a STAC Browser build (same layout as browser/dist)."""
    build = tmp_path / "dist"
    (build / "js").mkdir(parents=True)
    (build / "index.html").write_text(
        '<!doctype html><script src="/browser/config.js"></script><div id="stac-browser"></div>'
    )
    (build / "js" / "app.0123abcd.js").write_text("console.log('app');")
    (build / "config.js").write_text("window.STAC_BROWSER_CONFIG = {};")
    (tmp_path / "secret.txt").write_text("outside the build")
    return build


def _app_with_browser(dsn: str, build: Path) -> Any:
    app = create_app(ApiSettings(), dsn)
    if not any(getattr(r, "path", "").startswith("/browser") for r in app.router.routes):
        mount_browser(app, build)
    return app


def test_browser_routes(pg_dsn: str, fake_build: Path, live_api: Callable[[Any], str]) -> None:
    base = live_api(_app_with_browser(pg_dsn, fake_build))
    with httpx.Client(base_url=base, timeout=10) as client:
        redirect = client.get("/browser")
        assert redirect.status_code == 307
        assert redirect.headers["location"] == f"{base}/browser/"

        index = client.get("/browser/")
        assert index.status_code == 200
        assert 'id="stac-browser"' in index.text
        assert index.headers["content-type"].startswith("text/html")

        # deep links (item ids contain dots) get the app, whose router shows the page
        deep = client.get("/browser/collections/c/items/grid_86.05_24.55_2024")
        assert deep.status_code == 200 and 'id="stac-browser"' in deep.text

        bundle = client.get("/browser/js/app.0123abcd.js")
        assert bundle.status_code == 200 and "console.log" in bundle.text
        assert "immutable" in bundle.headers["cache-control"]
        assert "javascript" in bundle.headers["content-type"]
        assert client.head("/browser/js/app.0123abcd.js").status_code == 200

        # a missing bundle is a real 404, not the index page
        assert client.get("/browser/js/missing.js").status_code == 404
        # nothing outside the build is reachable
        escaped = client.get("/browser/%2e%2e/secret.txt")
        assert "outside the build" not in escaped.text


def test_runtime_config_points_at_this_api(
    pg_dsn: str, fake_build: Path, live_api: Callable[[Any], str]
) -> None:
    base = live_api(_app_with_browser(pg_dsn, fake_build))
    with httpx.Client(base_url=base, timeout=10) as client:
        config_js = client.get("/browser/config.js")
        landing = client.get("/").json()
    assert config_js.status_code == 200
    assert config_js.headers["content-type"].startswith("application/javascript")
    assert config_js.headers["cache-control"] == "no-cache"
    prefix = "window.STAC_BROWSER_CONFIG = "
    assert config_js.text.startswith(prefix)
    import json

    # the JSON config is the first statement (the tile-URL function follows it)
    config = json.loads(config_js.text[len(prefix) :].split(";\n", 1)[0])
    assert "buildTileUrlTemplate" in config_js.text
    # STAC Browser requires catalogUrl to equal the landing page's self link exactly
    self_href = next(link["href"] for link in landing["links"] if link["rel"] == "self")
    assert config["catalogUrl"] == self_href == f"{base}/"
    assert config["catalogTitle"]


def test_missing_build_is_a_clear_error(pg_dsn: str, tmp_path: Path) -> None:
    app = create_app(ApiSettings(), pg_dsn)
    with pytest.raises(ConfigurationError, match=r"no STAC Browser build in .*make browser"):
        mount_browser(app, tmp_path / "nothing-here")


@pytest.mark.slow
def test_real_build_is_configured_for_the_prefix(stac_browser_build: Path) -> None:
    """The cached build loads its bundles and the runtime config from /browser/."""
    index = (stac_browser_build / "index.html").read_text()
    assert 'src="/browser/config.js"' in index
    assert "/browser/js/app." in index
    assert (stac_browser_build / ".build-key").is_file()


def test_runtime_config_behind_a_path_prefix(
    pg_dsn: str, fake_build: Path, live_api: Callable[[Any], str]
) -> None:
    """Served under a proxy prefix (root_path), catalogUrl still equals the landing self link."""
    import json

    app = create_app(ApiSettings(root_path="/stac"), pg_dsn)
    if not any(getattr(r, "path", "").startswith("/browser") for r in app.router.routes):
        mount_browser(app, fake_build)
    base = live_api(app)
    with httpx.Client(base_url=base, timeout=10) as client:
        # a proxy strips /stac before the request reaches the app
        config_js = client.get("/browser/config.js").text
        landing = client.get("/").json()
    config = json.loads(config_js.split("=", 1)[1].split(";\n", 1)[0])
    self_href = next(link["href"] for link in landing["links"] if link["rel"] == "self")
    assert config["catalogUrl"] == self_href == f"{base}/stac/"
