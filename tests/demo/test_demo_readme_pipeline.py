"""The README's "whole pipeline by hand", run as written, in both orders.

The commands are parsed from README.md (continuations joined, ``VAR=value`` prefixes kept) and
run with the CLI's entry point in the test process (on one tile of the README's area,
``TEST_BBOX``) in a scratch folder, against a fresh pgSTAC database (standing in for
``tessera-stac db start``), ``serve`` as a child process on a free port. The tiles are
generated and published once; then, on a copy each, the rest runs as written and with
``catalog build`` moved after the watershed commands, plus ``corestack import`` of the real
CoRE Stack sample. Each order must:

* leave every collection present linked from ``catalog.json`` (issue 11: ``catalog build``
  used to orphan the CoRE Stack collections);
* publish no JSON (static catalog, ``/data/_reports``, API responses) holding a local
  absolute path;
* return, for a year-filtered bbox search over the block, the MWS layer next to that year's
  embeddings and join (the MWS item is valid for the TESSERA years, not its publish time).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]
SECTION = "The whole pipeline by hand"
FENCE = re.compile(r"^```bash\n(.*?)^```", re.S | re.M)
CORESTACK_SAMPLE = ROOT.parent / "shared" / "data" / "corestack" / "static-catalog-sample"
#: a local absolute path inside a string (URLs and relative keys do not match)
LOCAL_PATH = re.compile(r"(?<![\w.:/~-])/(?:home|tmp|root|work|var|srv|mnt|opt|Users)/")
WATERSHED_COMMANDS = (("watersheds", "publish"), ("watersheds", "join"), ("corestack", "import"))
#: The README's area is the demo's block (4 tiles x 2 years); the test runs its commands on one
#: tile of it (the same watersheds' sample over a smaller box): the order of the commands and
#: what they link is what is tested here, and each command's work is a quarter.
README_BBOX = "86.0,24.5,86.2,24.7"
TEST_BBOX = "86.0,24.5,86.1,24.6"


def readme_pipeline(bbox: str | None = None) -> list[tuple[dict[str, str], list[str]]]:
    """``(env, argv)`` of each command in the README's by-hand block, argv without the
    ``tessera-stac`` word; ``bbox`` replaces the README's area in ``--bbox``."""
    text = (ROOT / "README.md").read_text()
    block = FENCE.search(text, text.index(SECTION))
    assert block is not None, f"no bash block after {SECTION!r} in README.md"
    commands = []
    for line in block.group(1).replace("\\\n", " ").splitlines():
        words = shlex.split(line)
        env = {}
        while words and re.match(r"^[A-Z_][A-Z0-9_]*=", words[0]):
            key, _, value = words.pop(0).partition("=")
            env[key] = value
        if words:
            assert words[0] == "tessera-stac", f"not a tessera-stac command: {line!r}"
            argv = words[1:]
            if bbox is not None and "--bbox" in argv:
                at = argv.index("--bbox") + 1
                assert argv[at] == README_BBOX, f"the README's area changed: {argv[at]}"
                argv[at] = bbox
            commands.append((env, argv))
    return commands


def _is(argv: list[str], *path: str) -> bool:
    return tuple(argv[: len(path)]) == path


def _run(argv: list[str], cwd: Path, env: dict[str, str]) -> None:
    """``tessera-stac ARGV`` in ``cwd`` with ``env`` added, in this process: the CLI's own
    entry point (``tessera_stac.cli.main.main``, what the console script calls) without a
    Python start-up and the CLI's imports per command (~2 s each, 18 commands here); ``serve``
    and the demo's tests run it as a child process."""
    from tessera_stac.cli.main import main

    old = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    try:
        with contextlib.chdir(cwd):
            code = main(argv)
    finally:
        for key, value in old.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    assert code == 0, f"tessera-stac {' '.join(argv)}: exit code {code} (its stderr is above)"


def test_readme_block_is_parsed() -> None:
    commands = [argv[:2] for _env, argv in readme_pipeline()]
    assert commands[0] == ["db", "start"] and commands[-1][0] == "serve"
    assert ["sample", "mws"] in commands and ["watersheds", "publish"] in commands
    names = [c for c in commands if c[0] in ("catalog", "watersheds", "sample")]
    # as written, the catalog is built before the watershed commands: the order that broke
    assert names.index(["catalog", "build"]) < names.index(["watersheds", "publish"])


@pytest.fixture(scope="module")
def tiles_published(tmp_path_factory: Any) -> Path:
    """The README's commands up to ``publish`` (the slow part), run once."""
    work = tmp_path_factory.mktemp("readme")
    for env, argv in readme_pipeline(TEST_BBOX):
        if _is(argv, "db", "start"):
            continue
        _run(argv, work, env)
        if _is(argv, "publish"):
            return work
    raise AssertionError("the README pipeline has no publish step")


def _ordered(catalog_last: bool) -> list[tuple[dict[str, str], list[str]]]:
    """The commands after ``publish``, ``corestack import`` added beside the watershed ones."""
    commands = readme_pipeline(TEST_BBOX)
    after = next(i for i, (_e, a) in enumerate(commands) if _is(a, "publish")) + 1
    rest = commands[after:]
    if CORESTACK_SAMPLE.is_dir():
        join = next(i for i, (_e, a) in enumerate(rest) if _is(a, "watersheds", "join"))
        rest.insert(
            join + 1, ({}, ["corestack", "import", str(CORESTACK_SAMPLE), "--out", "published/"])
        )
    if catalog_last:
        build = next(c for c in rest if _is(c[1], "catalog", "build"))
        rest.remove(build)
        last = max(
            i for i, (_e, a) in enumerate(rest) if any(_is(a, *p) for p in WATERSHED_COMMANDS)
        )
        rest.insert(last + 1, build)
    return rest


@pytest.fixture(params=[False, True], ids=["as-written", "catalog-build-last"])
def pipeline(
    request: pytest.FixtureRequest, tiles_published: Path, tmp_path: Path, pg_cluster: Any
) -> Iterator[tuple[Path, str, list[list[str]]]]:
    """Run the rest of the README in a copy; yield (work dir, API URL, commands run)."""
    from tessera_stac.catalog.pgstac.cluster import free_port
    from tests.conftest import TEMPLATE_DB

    work = tmp_path / "w"
    shutil.copytree(tiles_published, work, symlinks=True)
    if (ROOT / "browser" / "dist").is_dir():
        (work / "browser").symlink_to(ROOT / "browser")
    ran: list[list[str]] = []
    with pg_cluster.template_clone(TEMPLATE_DB, f"t_readme_{uuid.uuid4().hex[:10]}") as dsn:
        base = {"TESSERA_STAC_DATABASE_URL": dsn}
        server = None
        try:
            for env, argv in _ordered(catalog_last=request.param):
                ran.append(argv)
                if not _is(argv, "serve"):
                    _run(argv, work, {**base, **env})
                    continue
                if not (work / env.get("TESSERA_STAC_API_BROWSER_DIR", ".")).is_dir():
                    env = {}  # no STAC Browser build in this checkout: serve without it
                port = free_port()
                with (tmp_path / "serve.log").open("wb") as log:  # not a pipe nobody reads
                    server = subprocess.Popen(
                        [sys.executable, "-m", "tessera_stac.cli.main", *argv, "--port", str(port)],
                        cwd=work,
                        env={**os.environ, **base, **env},
                        stdout=subprocess.DEVNULL,
                        stderr=log,
                    )
                url = f"http://127.0.0.1:{port}"
                _wait(url, server, tmp_path / "serve.log")
            assert server is not None, "the README pipeline does not serve"
            yield work, url, ran
        finally:
            if server is not None:
                server.terminate()
                server.wait(timeout=30)


def _wait(url: str, server: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise AssertionError(f"serve exited: {log.read_text()[-2000:]}")
        try:
            if httpx.get(f"{url}/", timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise AssertionError("serve did not answer within 120 s")


def _local_paths(doc: Any, where: str, work: Path) -> list[str]:
    text = json.dumps(doc)
    found = [m.group(0) for m in LOCAL_PATH.finditer(text)]
    if str(work.resolve()) in text or str(work) in text:
        found.append(str(work))
    return [f"{where}: {f}" for f in found]


def _get(url: str, **params: Any) -> Any:
    response = httpx.get(url, params=params, timeout=60)
    assert response.status_code == 200, f"{url}: {response.status_code} {response.text[:300]}"
    return response.json()


@pytest.mark.slow  # end to end: every README command after publish, twice, on a database
def test_readme_pipeline_in_both_orders(pipeline: tuple[Path, str, list[list[str]]]) -> None:
    work, url, ran = pipeline
    published = work / "published"

    # every collection present is linked from the root, whichever order built it
    present = {p.parent.name for p in published.glob("*/collection.json")}
    root = json.loads((published / "catalog.json").read_text())
    linked = {
        link["href"].removeprefix("./").removesuffix("/collection.json")
        for link in root["links"]
        if link["rel"] == "child"
    }
    assert {"corestack-mws", "corestack-mws-embeddings", "tessera-models"} <= present
    assert any(c.startswith("tessera-embeddings-") for c in present)
    if CORESTACK_SAMPLE.is_dir():
        assert len([c for c in present if c.startswith("corestack-") and c.count("-") >= 3]) == 3
    assert linked == present, f"orphaned: {present - linked}, dangling: {linked - present}"

    # no published JSON holds a local absolute path: the static tree, the reports, the API
    leaks: list[str] = []
    for path in sorted(published.rglob("*.json")):
        leaks += _local_paths(json.loads(path.read_text()), str(path.relative_to(work)), work)
    reports = sorted((published / "_reports").glob("*.json"))
    assert reports, "publish wrote no run report"
    for report in reports:
        served = _get(f"{url}/data/_reports/{report.name}")
        leaks += _local_paths(served, f"/data/_reports/{report.name}", work)
    leaks += _local_paths(_get(f"{url}/"), "/", work)
    collections = _get(f"{url}/collections")["collections"]
    assert {"corestack-mws", "corestack-mws-embeddings"} <= {c["id"] for c in collections}
    for coll in collections:
        leaks += _local_paths(coll, f"/collections/{coll['id']}", work)
        items = _get(f"{url}/collections/{coll['id']}/items", limit=200)
        leaks += _local_paths(items, f"/collections/{coll['id']}/items", work)
    assert not leaks, "\n".join(leaks[:20])

    # a year-filtered search over the block: the MWS layer next to that year's products
    bbox = next(a[a.index("--bbox") + 1] for a in ran if _is(a, "sample", "mws"))
    year = next(a[a.index("--year") + 1] for a in ran if _is(a, "watersheds", "join"))
    box = [float(v) for v in bbox.split(",")]
    body = httpx.post(
        f"{url}/search",
        json={
            "bbox": box,
            "datetime": f"{year}-01-01T00:00:00Z/{year}-12-31T23:59:59Z",
            "limit": 100,
        },
        timeout=60,
    )
    assert body.status_code == 200, body.text
    found = {(f["collection"], f["id"]) for f in body.json()["features"]}
    by_collection = {c for c, _i in found}
    assert "corestack-mws" in by_collection, found
    assert "corestack-mws-embeddings" in by_collection, found
    assert any(c.startswith("tessera-embeddings-") for c in by_collection), found
    # the MWS layer is valid for every TESSERA year, the join only for its own
    other = httpx.post(
        f"{url}/search",
        json={"bbox": box, "datetime": "2019-01-01T00:00:00Z/2019-12-31T23:59:59Z", "limit": 100},
        timeout=60,
    ).json()
    assert {f["collection"] for f in other["features"]} == {"corestack-mws"}
