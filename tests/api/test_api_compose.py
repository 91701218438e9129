"""docker-compose.yml matches the code: settings names and the pinned pgSTAC version."""

from __future__ import annotations

from typing import Any

import yaml

from tests.conftest import ROOT


def _settings_env_names() -> set[str]:
    from tessera_stac.api.settings import ApiSettings
    from tessera_stac.catalog.settings import DatabaseSettings
    from tessera_stac.catalog.store_settings import StorageSettings

    names = set()
    for cls in (ApiSettings, DatabaseSettings, StorageSettings):
        prefix = cls.model_config.get("env_prefix", "")
        names |= {(prefix + field).upper() for field in cls.model_fields}
    return names


def _compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return data


def test_every_tessera_variable_is_a_settings_field() -> None:
    known = _settings_env_names()
    used = {
        name
        for service in _compose()["services"].values()
        for name in (service.get("environment") or {})
        if name.startswith("TESSERA_STAC_")
    }
    assert used, "the API service sets no TESSERA_STAC_* variable"
    assert used <= known, f"not settings fields: {sorted(used - known)}"
    assert {"TESSERA_STAC_DATABASE_URL", "TESSERA_STAC_API_PORT"} <= used


def test_pgstac_image_matches_pinned_pypgstac() -> None:
    from pypgstac.version import __version__

    images = [s["image"] for s in _compose()["services"].values() if "pgstac" in s["image"]]
    assert images == [f"ghcr.io/stac-utils/pgstac:v{__version__}"]


def test_api_port_and_database_agree() -> None:
    services = _compose()["services"]
    api = services["api"]
    port = api["environment"]["TESSERA_STAC_API_PORT"]
    assert any(p.endswith(f":{port}") for p in api["ports"])
    url = api["environment"]["TESSERA_STAC_DATABASE_URL"]
    db = services["database"]["environment"]
    assert (
        f"{db['POSTGRES_USER']}:{db['POSTGRES_PASSWORD']}@database:5432/{db['POSTGRES_DB']}" in url
    )


def test_api_memory_limit_holds_every_worker_budget() -> None:
    """The API container's ``mem_limit`` holds ``workers`` x the declared per-worker bound
    computed from the very settings the compose file sets (no reverse proxy in the file: the
    budgets are the API's own)."""
    from tessera_stac.api.settings import ApiSettings

    api = _compose()["services"]["api"]
    env = {k: v for k, v in api["environment"].items() if k.startswith("TESSERA_STAC_API_")}
    settings = ApiSettings(
        **{k.removeprefix("TESSERA_STAC_API_").lower(): v for k, v in env.items()}
    )
    limit = str(api["mem_limit"]).lower()
    units = {"g": 2**30, "m": 2**20}
    limit_bytes = int(float(limit[:-1]) * units[limit[-1]])
    assert settings.workers * settings.memory_bound_mb() * 2**20 < limit_bytes
    assert not any("nginx" in str(s.get("image", "")) for s in _compose()["services"].values())
