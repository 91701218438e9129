"""Hostile and careless requests against a live API process: never a crash, never a 5xx for bad
input, every request bounded (issue 12's corpus and its relatives).

The API runs as its own uvicorn process (one worker): a crash (the CQL2 parser overflowing its
stack on deep nesting) would kill it, so "the same process keeps serving" is checked by pid.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import numpy as np
import pytest

from tessera_stac.api.app import create_app
from tessera_stac.api.settings import ApiSettings
from tessera_stac.catalog.errors import ConfigurationError
from tessera_stac.catalog.pgstac.cluster import free_port
from tessera_stac.catalog.pgstac.load import load
from tests.fixtures_api import EMB_COLLECTION, make_collection, make_item

NESTED_PARENS = "(" * 2000 + "id='a'" + ")" * 2000
NOT_CHAIN = "NOT " * 10_000 + "id='a'"
SHORT_NOT_CHAIN = "NOT " * 40 + "id='a'"  # short, but gigabytes in the CQL2 validator
DEEP_TEXT = '{"op": "not", "args": [' * 3000 + '{"op": "=", "args": [{"property": "id"}, "a"]}'
DEEP_TEXT += "]}" * 3000


def _nested_json(depth: int) -> dict[str, Any]:
    expr: dict[str, Any] = {"op": "=", "args": [{"property": "id"}, "a"]}
    for _ in range(depth):
        expr = {"op": "not", "args": [expr]}
    return expr


class Served:
    """A process serving the API (``url``, ``proc``): uvicorn on the env-configured factory, or
    with ``workers`` the CLI's ``tessera-stac serve --workers N --data-dir DATA_DIR``."""

    def __init__(
        self,
        dsn: str,
        data_dir: Path,
        env_extra: dict[str, str],
        workers: int | None = None,
        port: int | None = None,
    ) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "TESSERA_STAC_"))}
        env.update({"TESSERA_STAC_DATABASE_URL": dsn, **env_extra})
        if workers is None:
            env["TESSERA_STAC_API_DATA_DIR"] = str(data_dir)
        self.env, self.workers, self.data_dir = env, workers, data_dir
        #: ports tried (a port found free can be taken before the server binds it: another
        #: port is tried then, see :meth:`wait`)
        self.ports: list[int] = []
        # the log goes to a file: an unread pipe fills at 64 KiB and then blocks the server
        self.log = tempfile.TemporaryFile()  # noqa: SIM115 (closed in stop)
        self._start(port or free_port())

    def _start(self, port: int) -> None:
        self.port = port
        self.ports.append(port)
        self.url = f"http://127.0.0.1:{port}"
        if self.workers is None:
            cmd = [sys.executable, "-m", "uvicorn", "--factory", "--port", str(port)]
            cmd += ["--log-level", "warning", "tessera_stac.api.app:create_app_from_env"]
        else:
            cmd = [sys.executable, "-m", "tessera_stac.cli.main", "serve", "--port", str(port)]
            cmd += ["--workers", str(self.workers), "--data-dir", str(self.data_dir)]
        self.log.seek(0)
        self.log.truncate()
        self.proc = subprocess.Popen(cmd, env=self.env, stdout=subprocess.DEVNULL, stderr=self.log)

    def wait(self, timeout: float = 120) -> Served:
        """Until ``/healthz`` answers 200 (``timeout`` only bounds a failure: the process
        imports the whole API stack, which takes seconds on a loaded machine). A server that
        could not bind its port (taken between ``free_port`` and the bind) is started again
        on another one, at most 3 times."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                if httpx.get(self.url + "/healthz", timeout=5).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            exited = self.proc.poll() is not None
            if exited and len(self.ports) < 4 and "already in use" in self.stderr().lower():
                self._start(free_port())
                continue
            assert self.proc.poll() is None, self.stderr()
            assert time.monotonic() < deadline, "the API did not start"
            time.sleep(0.3)

    def stderr(self) -> str:
        self.log.seek(0)
        return self.log.read().decode(errors="replace")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:  # pragma: no cover
            self.proc.kill()
        self.log.close()


@pytest.fixture
def served(pg_dsn: str, cog_catalog: dict[str, Any]) -> Iterator[Served]:
    """The API process over the two-tile COG catalog (items' hrefs through its /data)."""
    server = Served(pg_dsn, cog_catalog["root"], {"TESSERA_STAC_API_MAX_LIMIT": "5"})
    try:
        server.wait()
        load(pg_dsn, str(cog_catalog["catalog"]), base_url=server.url + "/data")
        yield server
    finally:
        server.stop()


def _is_error(response: httpx.Response) -> dict[str, Any]:
    body = response.json()
    assert isinstance(body, dict), response.text
    assert isinstance(body.get("code"), str) and body["code"], response.text
    assert isinstance(body.get("description"), str) and body["description"], response.text
    return body


@pytest.mark.slow  # two API start-ups
def test_served_moves_to_another_port_when_its_port_was_taken(
    pg_dsn: str, cog_catalog: dict[str, Any]
) -> None:
    """The port ``free_port`` found free can be taken before the server binds it (another
    test's server or client): ``Served.wait`` starts the server again on another port instead
    of failing the test. Here the port is held open on purpose."""
    import socket

    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen(1)
        taken = holder.getsockname()[1]
        server = Served(pg_dsn, cog_catalog["root"], {}, port=taken)
        try:
            server.wait()
            assert server.ports[0] == taken and server.port != taken, server.ports
            assert httpx.get(server.url + "/healthz", timeout=60).status_code == 200
        finally:
            server.stop()


def test_hostile_corpus(served: Served) -> None:
    url = served.url
    items = f"/collections/{EMB_COLLECTION}/items"
    point = {"points": [{"lon": 71.97, "lat": 23.03}], "year": 2024}
    corpus: list[tuple[str, str, dict[str, Any], int]] = []
    # the crash corpus: deep nesting and long NOT chains, both methods, both routes
    for text in (NESTED_PARENS, NOT_CHAIN, SHORT_NOT_CHAIN):
        for path in ("/search", items):
            # 414 where the query string as sent (percent-encoded) is past its bound
            long = len(urlencode({"filter": text})) > ApiSettings().max_query_chars
            corpus.append(("GET", path, {"params": {"filter": text}}, 414 if long else 400))
        corpus.append(
            ("POST", "/search", {"json": {"filter": text, "filter-lang": "cql2-text"}}, 400)
        )
    deep = _nested_json(40)
    corpus += [
        ("POST", "/search", {"json": {"filter": deep, "filter-lang": "cql2-json"}}, 400),
        ("POST", "/search", {"content": '{"filter": ' + DEEP_TEXT + "}"}, 400),
        (
            "GET",
            "/search",
            {"params": {"filter-lang": "cql2-json", "filter": json.dumps(deep)}},
            400,
        ),
        ("GET", items, {"params": {"filter-lang": "cql2-json", "filter": json.dumps(deep)}}, 400),
        # non-finite numbers, as parameters and in bodies (raw JSON text: NaN/Infinity literals)
        ("GET", "/search", {"params": {"bbox": "nan,nan,nan,nan"}}, 400),
        ("GET", "/search", {"params": {"limit": "NaN"}}, 400),
        ("GET", "/search", {"params": {"bbox": "0,0,inf,10"}}, 400),
        ("GET", "/embeddings/position", {"params": {"lon": "nan", "lat": 1, "year": 2024}}, 400),
        ("POST", "/search", {"content": '{"limit": NaN}'}, 400),
        ("POST", "/search", {"content": '{"bbox": [0, 0, Infinity, 1]}'}, 400),
        (
            "POST",
            "/embeddings/positions",
            {"content": '{"points": [{"lon": NaN, "lat": 1}], "year": 2024}'},
            400,
        ),
        # not JSON where JSON is expected
        ("GET", "/search", {"params": {"query": "{not json"}}, 400),
        ("GET", "/search", {"params": {"intersects": "POINT(1 2)"}}, 400),
        ("GET", "/search", {"params": {"query": "[1, 2]"}}, 400),
        ("GET", "/collections", {"params": {"q": "("}}, 400),
        # wrong body types and invalid Unicode
        ("POST", "/search", {"content": "[]"}, 400),
        ("POST", "/search", {"content": "null"}, 400),
        ("POST", "/search", {"content": '"x"'}, 400),
        ("POST", "/search", {"content": "1"}, 400),
        ("POST", "/search", {"content": "hello", "headers": {"content-type": "text/plain"}}, 400),
        ("POST", "/search", {"content": '{"ids": ["\\ud800"]}'}, 400),
        ("POST", "/search", {"content": b'{"ids": ["\xff\xfe"]}'}, 400),
        ("POST", "/embeddings/area", {"content": "[]"}, 400),
        # bounds: body size, points per batch
        ("POST", "/search", {"content": b'{"ids": ["' + b"a" * 3_000_000 + b'"]}'}, 413),
        (
            "POST",
            "/embeddings/positions",
            {"json": {**point, "points": point["points"] * (ApiSettings().max_points + 1)}},
            413,
        ),
        # /data: impossible paths are 404, not an outage
        ("GET", "/data/" + "a" * 6000, {}, 404),
        ("GET", "/data/a%00b.tif", {}, 404),
        ("GET", "/data/" + "a/" * 2000 + "x.tif", {}, 404),
    ]
    pid = served.proc.pid
    for method, path, kwargs, status in corpus:
        got = httpx.request(method, url + path, timeout=60, **kwargs)
        label = (method, path, str(kwargs)[:120])
        assert got.status_code == status, (label, got.status_code, got.text[:300])
        _is_error(got)
        assert served.proc.poll() is None, (label, served.stderr()[-2000:])
    # the same process still answers, and correctly
    assert served.proc.pid == pid and served.proc.poll() is None
    assert httpx.get(url + "/healthz").status_code == 200
    ok = httpx.get(url + "/search", params={"filter": "id LIKE '%'"})
    assert ok.status_code == 200 and len(ok.json()["features"]) == 2
    fine = httpx.post(url + "/search", json={"filter": _nested_json(3)})
    assert fine.status_code == 200, fine.text


def test_limit_is_capped_and_paging_links_follow(served: Served, pg_dsn: str) -> None:
    extra = [make_item(72.0 + 0.1 * i, 23.5, 2024, collection_id=EMB_COLLECTION) for i in range(7)]
    source = Path(served.url.split(":")[-1] + ".ndjson")
    try:
        source.write_text("".join(json.dumps(o) + "\n" for o in extra))
        load(pg_dsn, str(source))
    finally:
        source.unlink(missing_ok=True)
    total = 2 + len(extra)
    for method in ("GET", "POST"):
        seen: list[str] = []
        kwargs: dict[str, Any] = (
            {"params": {"limit": 1_000_000_000}}
            if method == "GET"
            else {"json": {"limit": 1_000_000_000}}
        )
        got = httpx.request(method, served.url + "/search", **kwargs)
        for _ in range(10):
            assert got.status_code == 200, got.text
            page = got.json()
            assert len(page["features"]) <= 5
            seen += [f["id"] for f in page["features"]]
            nxt = next((link for link in page["links"] if link["rel"] == "next"), None)
            if nxt is None:
                break
            if nxt.get("method", "GET") == "POST":
                got = httpx.post(nxt["href"], json=nxt["body"])
            else:
                assert "limit=5" in nxt["href"], nxt["href"]
                got = httpx.get(nxt["href"])
        assert sorted(seen) == sorted(set(seen)) and len(seen) == total, (method, seen)


def test_bearer_scheme_is_case_insensitive_and_blank_tokens_refused(
    pg_dsn: str, live_api: Any
) -> None:
    for blank in ("", "   ", "\t"):
        with pytest.raises(ConfigurationError):
            create_app(ApiSettings(enable_transactions=True, write_token=blank), pg_dsn)
    settings = ApiSettings(enable_transactions=True, write_token="s3cret")
    url = live_api(create_app(settings, pg_dsn))
    new = make_collection("tessera-case")
    for header, status in [
        ("bearer s3cret", 201),
        ("BEARER  s3cret", 409),
        ("Basic s3cret", 401),
        ("s3cret", 401),
        ("Bearer", 401),
        ("Bearer s3cre", 401),
    ]:
        got = httpx.post(url + "/collections", json=new, headers={"Authorization": header})
        assert got.status_code == status or (status == 201 and got.status_code == 200), (
            header,
            got.status_code,
            got.text,
        )


@pytest.mark.slow  # reads wide areas of real-size tiles
def test_area_budget_per_request_strips_and_wide_geometries(
    pg_dsn: str, live_api: Any, cog_catalog: dict[str, Any]
) -> None:
    from shapely.geometry import Polygon, box, mapping, shape

    from tests.api.test_api_embeddings import _expected_area

    root = cog_catalog["root"]
    # small strips: a two-tile area is read in many pieces and must still be exact
    url = live_api(
        create_app(
            ApiSettings(data_dir=root, zonal_block_pixels=20_000, zonal_max_pixels=3_000_000),
            pg_dsn,
        )
    )
    load(pg_dsn, str(cog_catalog["catalog"]), base_url=url + "/data")
    tight = live_api(create_app(ApiSettings(data_dir=root, zonal_max_pixels=1_000_000), pg_dsn))

    def area(base: str, geometry: Any) -> httpx.Response:
        return httpx.post(
            base + "/embeddings/area", json={"geometry": geometry, "year": 2024}, timeout=120
        )

    both = box(71.92, 23.0, 72.08, 23.09)
    for polygon in (both, box(-180, -90, 180, 90), box(0, 0, 179, 60)):
        got = area(url, mapping(polygon))
        assert got.status_code == 200, got.text
        count, valid, mean = _expected_area(cog_catalog, polygon)
        body = got.json()
        assert count > 1_000_000 and body["count"] == count and body["valid"] == valid
        assert np.allclose(np.array(body["mean"], dtype=np.float32), mean, rtol=1e-5, atol=1e-6)
        assert len(body["sources"]) == 2
        assert all(
            s["window"]["height"] * s["window"]["width"] >= s["count"] for s in body["sources"]
        )
        # each tile alone is under the tight budget, both together are over it: 413
        refused = area(tight, mapping(polygon))
        assert refused.status_code == 413, refused.text
        assert "1000000" in _is_error(refused)["description"]
        assert "ZONAL_MAX_PIXELS" in refused.json()["description"]
    one_tile = box(71.92, 23.0, 71.99, 23.09)
    assert area(tight, mapping(one_tile)).status_code == 200

    # a polygon across the antimeridian is read as the 20° box it is, not the 340° one
    crossing = Polygon([(170, -10), (-170, -10), (-170, 10), (170, 10)])
    from tessera_stac.api.bounds import split_antimeridian

    split = shape(split_antimeridian(mapping(crossing)))
    assert split.area == pytest.approx(400) and split.bounds == (-180, -10, 180, 10)
    got = area(url, mapping(crossing))
    assert got.status_code == 404 and _is_error(got)["code"] == "OutsideCoverage"


#: (operations, schemathesis options): the STAC and embedding operations get the full
#: stateless run; the 31 map-tile operations (titiler's, each request a render) a fuzzing run
#: on a real item and year (schemathesis.toml fixes the path identifiers, so the generated
#: sizes, zooms, bands and algorithms reach the renderer instead of a 404).
SCHEMATHESIS_RUNS = [
    (
        ["--exclude-path-regex", "^/tiles"],
        ["--phases", "examples,coverage,fuzzing", "--max-examples", "25"],
    ),
    (
        # fuzzing only: the examples phase crashes schemathesis itself on titiler's
        # ``expression`` example (a CPython AST recursion SystemError in the generator)
        ["--include-path-regex", "^/tiles"],
        ["--phases", "fuzzing", "--max-examples", "25"],
    ),
]


@pytest.mark.slow
@pytest.mark.parametrize(("select", "options"), SCHEMATHESIS_RUNS, ids=["stac", "tiles"])
def test_schemathesis_finds_no_server_error(
    served: Served,
    cog_catalog: dict[str, Any],
    tmp_path: Path,
    select: list[str],
    options: list[str],
) -> None:
    """A bounded, stateless schemathesis run over every operation of the OpenAPI document
    (two selections that together cover all): 0 responses >= 500, and the API process keeps
    serving throughout."""
    item_id = sorted(cog_catalog["tiles"])[0]
    (tmp_path / "schemathesis.toml").write_text(
        f'[parameters]\ncollection_id = "{EMB_COLLECTION}"\nitem_id = "{item_id}"\nyear = 2024\n'
    )
    cli = Path(sys.executable).parent / "schemathesis"
    report = tmp_path / "report.xml"
    args = [str(cli), "run", served.url + "/api", "--checks", "not_a_server_error"]
    args += [*select, *options, "--seed", "12"]
    args += ["--request-timeout", "60", "--workers", "2", "--suppress-health-check", "all"]
    args += ["--report", "junit", "--report-junit-path", str(report)]
    run = subprocess.run(args, capture_output=True, text=True, timeout=900, cwd=tmp_path)
    out = run.stdout + run.stderr
    print(out[-4000:])
    assert run.returncode == 0, out[-6000:]
    assert "not_a_server_error" in out or report.is_file(), out[-2000:]
    assert served.proc.poll() is None
    assert httpx.get(served.url + "/healthz").status_code == 200


def test_statement_timeout_is_504_and_keeps_the_pool(
    pg_dsn: str, live_api: Any, cog_catalog: dict[str, Any]
) -> None:
    """A statement past ``db_statement_timeout`` answers 504 (not 503), and neither it nor a
    burst of bad requests replaces the pool's healthy connections."""
    import psycopg

    load(pg_dsn, str(cog_catalog["catalog"]))
    settings = ApiSettings(db_statement_timeout=0.5, db_min_conn=3, db_max_conn=3)
    url = live_api(create_app(settings, pg_dsn))

    def backends() -> set[int]:
        with psycopg.connect(pg_dsn) as conn:
            rows = conn.execute(
                "SELECT pid FROM pg_stat_activity WHERE application_name = 'tessera-stac' "
                "AND datname = current_database()"
            ).fetchall()
        return {int(r[0]) for r in rows}

    assert httpx.get(url + "/collections").status_code == 200
    before = backends()
    assert before
    with psycopg.connect(pg_dsn) as locker:
        locker.execute("LOCK TABLE pgstac.collections IN ACCESS EXCLUSIVE MODE")
        slow = httpx.get(url + "/collections", timeout=60)
        assert slow.status_code == 504, slow.text
        assert _is_error(slow)["code"] == "GatewayTimeout"
        locker.rollback()
    for params in ({"q": "("}, {"filter": "NOT " * 50 + "id='a'"}, {"bbox": "nan,1,2,3"}):
        assert httpx.get(url + "/collections", params=params).status_code == 400
    assert httpx.get(url + "/collections").status_code == 200
    assert backends() == before
