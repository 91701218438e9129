"""Foundation: the local database CLI, its failure modes, and the shared test harness."""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
CLI = [sys.executable, "-m", "tessera_stac.cli.main"]


def run_cli(args: list[str], home: Path, **env: str) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "TESSERA_STAC_"))}
    full_env.update({"TESSERA_STAC_HOME": str(home), **env})
    return subprocess.run(
        [*CLI, *args], capture_output=True, text=True, env=full_env, cwd=home.parent, timeout=180
    )


@pytest.fixture(scope="module")
def db_home(open_tmp: Any) -> Any:
    base = open_tmp("dbcli")
    home = base / ".tessera-stac"
    yield home
    run_cli(["db", "stop"], home)


def test_db_lifecycle_keeps_data(db_home: Path) -> None:
    started = run_cli(["db", "start"], db_home)
    assert started.returncode == 0, started.stderr
    again = run_cli(["db", "start"], db_home)
    assert again.returncode == 0 and "already running" in again.stdout

    url = run_cli(["db", "url"], db_home).stdout.strip()
    assert url.startswith("postgresql://")
    from pypgstac.version import __version__

    psql = shutil.which("psql")
    if psql:
        out = subprocess.run(
            [psql, url, "-At", "-c", "select version from pgstac.migrations"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert __version__ in out.split()
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE public.keepme (x int)")
        conn.execute("INSERT INTO public.keepme VALUES (42)")

    status = run_cli(["db", "status", "--json"], db_home)
    assert status.returncode == 0 and '"running": true' in status.stdout
    assert __version__ in status.stdout

    assert run_cli(["db", "stop"], db_home).returncode == 0
    stopped = run_cli(["db", "status"], db_home)
    assert stopped.returncode == 1 and "stopped" in stopped.stdout
    assert "not running" in run_cli(["db", "stop"], db_home).stdout

    assert run_cli(["db", "start"], db_home).returncode == 0
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT x FROM public.keepme").fetchone() == (42,)


def test_port_in_use_is_one_clear_line(db_home: Path) -> None:
    assert run_cli(["db", "start"], db_home).returncode == 0
    assert run_cli(["db", "stop"], db_home).returncode == 0
    port = int(run_cli(["db", "url"], db_home).stdout.split("@127.0.0.1:")[1].split("/")[0])
    with socket.socket() as blocker:
        blocker.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        blocker.bind(("127.0.0.1", port))
        blocker.listen(1)
        out = run_cli(["db", "start"], db_home)
    assert out.returncode == 3
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and f"port {port}" in lines[0] and "TESSERA_STAC_DB_PORT" in lines[0]
    assert (db_home / "pg" / "PG_VERSION").is_file()  # nothing destroyed
    assert run_cli(["db", "start"], db_home).returncode == 0


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to hand a directory to another user")
def test_foreign_owned_data_dir_is_refused(open_tmp: Any) -> None:
    home = open_tmp("foreign") / ".tessera-stac"
    (home / "pg").mkdir(parents=True)
    (home / "pg" / "precious").write_text("keep")
    nobody = pwd.getpwnam("nobody")
    os.chown(home / "pg", nobody.pw_uid, nobody.pw_gid)
    out = run_cli(["db", "init"], home)
    assert out.returncode == 3, out.stderr
    line = out.stderr.strip()
    assert "\n" not in line and "owned by 'nobody'" in line and "chown" in line
    assert (home / "pg" / "precious").read_text() == "keep"


def test_missing_postgis_names_the_package(tmp_path: Path) -> None:
    fake = tmp_path / "bin"
    fake.mkdir()
    for name in ("initdb", "pg_ctl"):
        (fake / name).write_text("#!/bin/sh\nexit 1\n")
    (fake / "postgres").write_text("#!/bin/sh\necho 'postgres (PostgreSQL) 99.1'\n")
    for f in fake.iterdir():
        f.chmod(0o755)
    out = run_cli(["db", "init"], tmp_path / "home", TESSERA_STAC_PG_BINDIR=str(fake))
    assert out.returncode == 3
    assert out.stderr.strip() == (
        "error: PostGIS is not installed for PostgreSQL 99: install it with "
        "`apt-get install postgresql-99-postgis-3`"
    )
    assert not (tmp_path / "home").exists()


def test_external_database_from_pg_variables(pg_dsn: str, tmp_path: Path) -> None:
    from urllib.parse import urlsplit

    parts = urlsplit(pg_dsn)
    env = {
        "PGHOST": parts.hostname or "",
        "PGPORT": str(parts.port),
        "PGUSER": parts.username or "",
        "PGPASSWORD": parts.password or "",
        "PGDATABASE": parts.path.lstrip("/"),
    }
    out = run_cli(["db", "status", "--json"], tmp_path / "unused", **env)
    assert out.returncode == 0, out.stderr
    assert '"external": true' in out.stdout
    assert not (tmp_path / "unused").exists()


def test_cloned_databases_are_independent(pg_cluster: Any) -> None:
    import psycopg

    with (
        pg_cluster.template_clone("pgstac_template", "clone_a") as a,
        pg_cluster.template_clone("pgstac_template", "clone_b") as b,
    ):
        with psycopg.connect(a, autocommit=True) as conn:
            conn.execute(
                """SELECT pgstac.create_collection('{"id": "only-in-a", "type": "Collection",
                "stac_version": "1.1.0", "description": "x", "license": "other", "links": [],
                "extent": {"spatial": {"bbox": [[0,0,1,1]]},
                "temporal": {"interval": [[null, null]]}}}'::jsonb)"""
            )
            assert conn.execute("SELECT count(*) FROM pgstac.collections").fetchone() == (1,)
        with psycopg.connect(b) as conn:
            assert conn.execute("SELECT count(*) FROM pgstac.collections").fetchone() == (0,)


def test_s3_fixture_serves_boto3_and_gdal(s3: Any, tmp_path: Path) -> None:
    import numpy as np
    import rasterio
    from rasterio.transform import from_origin

    server, bucket = s3
    path = tmp_path / "x.tif"
    data = np.arange(64, dtype="int16").reshape(8, 8)
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=8,
        height=8,
        count=1,
        dtype="int16",
        crs="EPSG:32643",
        transform=from_origin(500000, 2400000, 10, 10),
    ) as dst:
        dst.write(data, 1)
    server.client().upload_file(str(path), bucket, "a/x.tif")
    with rasterio.open(f"/vsis3/{bucket}/a/x.tif") as src:
        assert (src.read(1) == data).all()
        assert src.crs.to_epsg() == 32643


def test_live_api_answers_over_http(pg_dsn: str, live_api: Any) -> None:
    import httpx

    from tessera_stac.api.app import create_app
    from tessera_stac.api.settings import ApiSettings

    url = live_api(create_app(ApiSettings(), pg_dsn))
    landing = httpx.get(url + "/", timeout=60).json()
    assert landing["type"] == "Catalog"
    assert httpx.get(url + "/collections", timeout=60).json()["collections"] == []


def _walk(command: Any, path: list[str]) -> list[list[str]]:
    found = [path]
    if hasattr(command, "commands"):
        for name, sub in command.commands.items():
            found += _walk(sub, [*path, name])
    return found


def test_every_command_has_help() -> None:
    """Every command answers ``--help``: all of them in-process (Typer's runner, the same
    Click parsing), and the installed entry point in a child process for a nested one."""
    import typer.main
    from typer.testing import CliRunner

    from tessera_stac.cli.main import app

    root = typer.main.get_command(app)
    paths = _walk(root, [])
    assert ["db", "start"] in paths
    runner = CliRunner()
    for path in paths:
        out = runner.invoke(app, [*path, "--help"])
        assert out.exit_code == 0, (path, out.output, out.exception)
        assert "Usage" in out.output, (path, out.output)
    for path in ([], ["db", "start"]):
        child = subprocess.run([*CLI, *path, "--help"], capture_output=True, text=True)
        assert child.returncode == 0, (path, child.stderr)
        assert "Usage" in child.stdout


def test_shared_builds_cross_workers_as_json(published_sample: Any) -> None:
    """What one worker builds for the others (``build_once``) goes through JSON and comes back
    equal, field for field (tiles, assets, paths, datetimes); anything that is not plain data
    is refused rather than pickled, and a tag naming a class outside the project is refused."""
    import json

    from tests.conftest import _plain, _unplain

    text = json.dumps(_plain(published_sample))
    assert _unplain(json.loads(text)) == published_sample
    with pytest.raises(TypeError, match="not plain data"):
        _plain({"x": object()})
    with pytest.raises(TypeError, match="not a class of this project"):
        _unplain({"__class__": "os:system", "fields": {}})
