"""Shared test harness: real PostgreSQL + pgSTAC, a real S3 endpoint on loopback, a live API.

Fixtures other test modules reuse:

* ``pg_cluster`` (session): a project-local cluster in a temp dir, pgSTAC migrated once
  into the template database ``pgstac_template``.
* ``pg_dsn``: a fresh database cloned from the template for one test.
* ``s3_server`` (session) / ``s3``: moto in server mode on 127.0.0.1, with boto3 and GDAL
  (``/vsis3/``) configured through the environment; ``s3`` gives a fresh bucket per test.
  Ranged GETs are served from a copy of the object's bytes (``_ObjectBytesCache``).
* ``live_api``: serve a FastAPI app with uvicorn on a free loopback port, return its URL.
* ``stac_validate``: validate a STAC dict offline against core + every declared extension.
* ``build_once(name, build)``: session data built by one xdist worker for all of them (a
  folder the controller makes and removes, a file lock, the result as JSON).
* ``SHARED``: the ``../shared`` folder beside the checkout.
"""

from __future__ import annotations

import os
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

pytest_plugins = [
    "tests.fixtures_publisher",
    "tests.fixtures_catalog",
    "tests.fixtures_api",
    "tests.fixtures_corestack",
    "tests.fixtures_demo",
    "tests.fixtures_scale",
    "tests.fixtures_classes",
    "tests.fixtures_classify",
]

# ------------------------------------------------------------------ BLAS / OpenMP threads
#: One BLAS / OpenMP thread per process: ``make test`` runs one pytest worker per core, and a
#: worker's numpy, scipy and scikit-learn starting a thread per core as well only makes them
#: contend (a land-cover head's training, 51 L-BFGS fits: 59 s of CPU with 2 threads, 12.5 s
#: with 1, same head). The environment reaches the child processes the tests start (the CLI,
#: the demo, process pools); threadpoolctl limits the libraries this process has loaded
#: already. An explicit setting in the environment wins.
for _threads in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_threads, "1")
try:
    from threadpoolctl import threadpool_limits
except ImportError:  # scikit-learn's dependency; without it only the environment applies
    pass
else:
    _limit = os.environ["OPENBLAS_NUM_THREADS"]
    threadpool_limits(int(_limit) if _limit.isdigit() else 1)

# ------------------------------------------------------------------ HTTP client timeout
#: httpx's default timeout is 5 s, and most of the tests' requests to a live server give none:
#: on a loaded machine (2 cores at load 3-10 under ``make test``) an answer can take longer
#: (the first OpenAPI build, a 128-band tile, a classification), and the test failed with
#: ReadTimeout although the server was right. A request without a timeout of its own waits
#: up to ``HTTP_TIMEOUT``; a test that bounds a request on purpose ("answers, does not hang")
#: passes its own timeout, which is kept. Only httpx's module-level calls (the tests' own)
#: change; the package's code passes its timeouts explicitly.
HTTP_TIMEOUT = 120.0


def _patient(call: Callable[..., Any]) -> Callable[..., Any]:
    import functools

    @functools.wraps(call)
    def patient(*args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("timeout", HTTP_TIMEOUT)
        return call(*args, **kwargs)

    return patient


def _patient_httpx() -> None:
    import httpx

    for name in ("request", "stream", "get", "options", "head", "post", "put", "patch", "delete"):
        call = getattr(httpx, name)
        if not getattr(call, "_tessera_patient", False):
            wrapped = _patient(call)
            wrapped._tessera_patient = True  # type: ignore[attr-defined]
            setattr(httpx, name, wrapped)


_patient_httpx()

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"
TEMPLATE_DB = "pgstac_template"


# ------------------------------------------------------------------ parallel workers
#: Files that share an expensive session- or module-scoped fixture run on one worker under
#: ``pytest -n N`` (``make test``), so it is built once: group name -> files.
SHARED_FIXTURE_GROUPS = {
    "demo_run": (
        "tests/demo/test_demo_change.py",
        "tests/demo/test_demo_docs_cli.py",
        "tests/demo/test_demo_e2e.py",
        "tests/demo/test_demo_steps.py",
    ),
    "join_tiles_built": (
        "tests/api/test_api_tiles.py",
        "tests/api/test_api_kernel_tiles.py",
        "tests/api/test_api_tile_caches.py",
    ),
    "class_catalog": ("tests/api/test_api_classify.py", "tests/corestack/test_cs_classes.py"),
    "cli_catalog": ("tests/corestack/test_cs_change.py", "tests/corestack/test_cs_features.py"),
    "landcover_sample": (
        "tests/classify/test_cls_bad_inputs.py",
        "tests/classify/test_cls_cli.py",
        "tests/classify/test_cls_map.py",
        "tests/classify/test_cls_s3.py",
        "tests/classify/test_cls_train.py",
    ),
}
#: Seconds each file took in a full serial run (``scripts/test_durations.py`` refreshes it).
DURATIONS = Path(__file__).with_name("durations.json")


def _group(path: str) -> str:
    """The scheduling group of a test file: its shared-fixture group, else the file."""
    return next((g for g, files in SHARED_FIXTURE_GROUPS.items() if path in files), path)


@pytest.hookimpl(tryfirst=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """``--dist loadgroup``: each group (above) goes whole to one worker, in collection order.

    xdist's own loadgroup reads ``xdist_group`` marks into the node ids, which this pytest
    version ignores (every test was scheduled alone); its loadscope scheduler with our groups
    as the scopes does the job."""
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class SharedFixtureScheduling(LoadScopeScheduling):  # type: ignore[misc]
        def _split_scope(self, nodeid: str) -> str:
            return _group(nodeid.split("::", 1)[0])

    config.option.loadscopereorder = False  # keep the longest-first order of the collection
    return SharedFixtureScheduling(config, log)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """On the workers, the groups in order of their serial time, longest first, so the workers
    finish together (the longest-processing-time rule); a file missing from durations.json
    counts 30 s. The controller hands groups out in this order."""
    if not hasattr(config, "workerinput"):
        return
    import json
    from collections import Counter

    seconds = json.loads(DURATIONS.read_text()) if DURATIONS.is_file() else {}
    paths = {item: item.nodeid.split("::", 1)[0] for item in items}
    cost: Counter[str] = Counter()
    for path in set(paths.values()):
        cost[_group(path)] += float(seconds.get(path, 30.0))
    items.sort(key=lambda item: -cost[_group(paths[item])])  # stable: file order kept


# ------------------------------------------------------- built once for all the workers
#: ``workerinput`` key: a folder of the controller shared by the run's workers (see below).
SHARED_BUILDS = "tessera_stac_shared_builds"


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    """``pytest -n N``: give every worker the same folder for ``build_once`` (made here, by the
    controller, so it can be removed when the run ends)."""
    import tempfile

    config = node.config
    folder = getattr(config, "_tessera_shared_builds", None)
    if folder is None:
        folder = tempfile.mkdtemp(prefix="tessera-stac-shared-")
        os.chmod(folder, 0o755)  # the PostgreSQL server user reads files under it
        config._tessera_shared_builds = folder
    node.workerinput[SHARED_BUILDS] = folder


def pytest_unconfigure(config: pytest.Config) -> None:
    import shutil

    folder = getattr(config, "_tessera_shared_builds", None)
    if folder is not None:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session")
def build_once(
    request: pytest.FixtureRequest, open_tmp: Callable[[str], Path]
) -> Callable[[str, Callable[[Path], Any]], Any]:
    """``build_once(name, build)``: ``build(folder)``'s result, built by one worker of the run
    for all of them (the others wait for it, then read the result, kept as JSON): for session data
    that tests only read. Without workers it is built in a folder of this session."""
    import fcntl
    import json
    import shutil

    workerinput = getattr(request.config, "workerinput", {})
    shared = workerinput.get(SHARED_BUILDS)
    kept: dict[str, Any] = {}

    def get(name: str, build: Callable[[Path], Any]) -> Any:
        if name in kept:
            return kept[name]
        if shared is None:
            kept[name] = build(open_tmp(name))
            return kept[name]
        folder = Path(shared) / name
        done = Path(shared) / f"{name}.json"
        with open(Path(shared) / f"{name}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # the first worker builds, the others wait here
            if not done.is_file():
                shutil.rmtree(folder, ignore_errors=True)  # what a failed build left
                folder.mkdir()
                os.chmod(folder, 0o755)
                result = build(folder)
                tmp = done.with_suffix(".tmp")
                tmp.write_text(json.dumps(_plain(result)))
                tmp.replace(done)
        kept[name] = _unplain(json.loads(done.read_text()))
        return kept[name]

    return get


def _plain(value: Any) -> Any:
    """A shared build's result as JSON data: dataclasses (tagged with their class), paths,
    datetimes, tuples, dicts with string keys, lists and scalars; anything else is refused
    (what the workers exchange stays plain data, never a pickle)."""
    import dataclasses
    from datetime import datetime

    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        kind = f"{type(value).__module__}:{type(value).__qualname__}"
        fields = {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
        return {"__class__": kind, "fields": fields}
    if isinstance(value, Path):
        return {"__path__": str(value)}
    if isinstance(value, datetime):
        return {"__datetime__": value.isoformat()}
    if isinstance(value, tuple):
        return {"__tuple__": [_plain(v) for v in value]}
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        return {"__dict__": {k: _plain(v) for k, v in value.items()}}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    raise TypeError(f"a shared build holds a {type(value).__name__}: not plain data")


def _unplain(value: Any) -> Any:
    """:func:`_plain`'s data back as the objects it came from (classes of this project only)."""
    import importlib
    from datetime import datetime

    if isinstance(value, list):
        return [_unplain(v) for v in value]
    if not isinstance(value, dict):
        return value
    if "__path__" in value:
        return Path(value["__path__"])
    if "__datetime__" in value:
        return datetime.fromisoformat(value["__datetime__"])
    if "__tuple__" in value:
        return tuple(_unplain(v) for v in value["__tuple__"])
    if "__dict__" in value:
        return {k: _unplain(v) for k, v in value["__dict__"].items()}
    module, _, name = value["__class__"].partition(":")
    if not module.startswith(("tessera_stac.", "tests.")):
        raise TypeError(f"a shared build names {module}:{name}, not a class of this project")
    kind = getattr(importlib.import_module(module), name)
    return kind(**{k: _unplain(v) for k, v in value["fields"].items()})


# --------------------------------------------------------------------------- PostgreSQL
@pytest.fixture(scope="session")
def open_tmp() -> Iterator[Callable[[str], Path]]:
    """Factory of temp dirs the PostgreSQL server user can enter (pytest's are 0700)."""
    import shutil
    import tempfile

    made: list[Path] = []

    def make(prefix: str) -> Path:
        path = Path(tempfile.mkdtemp(prefix=f"tessera-stac-{prefix}-"))
        os.chmod(path, 0o755)
        made.append(path)
        return path

    yield make
    for path in made:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_cluster(open_tmp: Callable[[str], Path]) -> Iterator[Any]:
    """A session-wide local cluster with pgSTAC migrated into a template database."""
    from tessera_stac.catalog.pgstac.cluster import LocalCluster

    home = open_tmp("pg")
    cluster = LocalCluster(home, dbname=TEMPLATE_DB, fast=True)
    cluster.init()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def pg_dsn(pg_cluster: Any) -> Iterator[str]:
    """DSN of a fresh pgSTAC database cloned from the template for this test."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    with pg_cluster.template_clone(TEMPLATE_DB, name) as dsn:
        yield dsn


# --------------------------------------------------------------------------------- S3
@dataclass
class S3Server:
    """A moto S3 server on loopback and the settings that reach it."""

    endpoint_url: str
    port: int

    def client(self) -> Any:
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )

    def storage_settings(self) -> Any:
        from tessera_stac.catalog.store_settings import StorageSettings

        return StorageSettings(
            endpoint_url=self.endpoint_url,
            region="us-east-1",
            access_key_id="testing",
            secret_access_key="testing",
        )


class _ObjectBytesCache:
    """Keep the bytes of the objects read last, so a ranged GET does not re-read the object.

    moto answers every GET, ranged or not, by reading the object's whole body out of its
    spooled temp file (``FakeKey.value``) and then slicing the range: a Zarr shard (~120 MB)
    read chunk by chunk (thousands of ranged GETs) cost minutes of memory copies. This wraps
    ``FakeKey.value``: reads are served from a copy of the bytes kept until the object is
    written again (the setter drops it); at most ``limit`` bytes are kept, least recently read
    dropped first. What a GET returns is unchanged: the same bytes, status and headers.
    """

    def __init__(self, limit: int = 512 * 1024 * 1024) -> None:
        self.limit = limit
        self.lock = threading.Lock()
        self.kept: dict[int, tuple[Any, bytes]] = {}  # id(key) -> (key, bytes), LRU order

    def install(self) -> Callable[[], None]:
        from moto.s3.models import FakeKey

        original = FakeKey.value
        cache = self

        def get(key: Any) -> bytes:
            with cache.lock:
                hit = cache.kept.pop(id(key), None)
                if hit is not None and hit[0] is key:
                    cache.kept[id(key)] = hit
                    return hit[1]
            data: bytes = original.fget(key)
            with cache.lock:
                cache.kept[id(key)] = (key, data)
                while sum(len(d) for _k, d in cache.kept.values()) > cache.limit:
                    cache.kept.pop(next(iter(cache.kept)))
            return data

        def put(key: Any, value: bytes) -> None:
            with cache.lock:
                cache.kept.pop(id(key), None)
            original.fset(key, value)

        FakeKey.value = property(get, put)  # type: ignore[method-assign,assignment]

        def uninstall() -> None:
            FakeKey.value = original  # type: ignore[method-assign]
            self.kept.clear()

        return uninstall


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """moto's S3 in server mode on a free loopback port; env set for boto3 and GDAL."""
    from moto.server import ThreadedMotoServer

    uninstall = _ObjectBytesCache().install()
    # port 0: the server binds a port the kernel picks, then says which (a port chosen free
    # beforehand can be taken by another process before the server binds it, and moto's
    # start() then waits forever for a server that failed)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    port = server.get_host_and_port()[1]
    endpoint = f"http://127.0.0.1:{port}"
    env = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": endpoint,  # boto3
        "AWS_S3_ENDPOINT": f"127.0.0.1:{port}",  # GDAL /vsis3/
        "AWS_HTTPS": "NO",
        "AWS_VIRTUAL_HOSTING": "FALSE",
        "TESSERA_STAC_S3_ENDPOINT_URL": endpoint,
        "TESSERA_STAC_S3_ACCESS_KEY_ID": "testing",
        "TESSERA_STAC_S3_SECRET_ACCESS_KEY": "testing",
    }
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield S3Server(endpoint, port)
    finally:
        server.stop()
        uninstall()
        for key, value in old.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture
def s3(s3_server: S3Server) -> Iterator[tuple[S3Server, str]]:
    """A fresh bucket on the loopback S3 server: ``(server, bucket_name)``."""
    bucket = f"b-{uuid.uuid4().hex[:12]}"
    client = s3_server.client()
    client.create_bucket(Bucket=bucket)
    yield s3_server, bucket


# -------------------------------------------------------------------------------- API
class LiveServer:
    """uvicorn serving an ASGI app in a thread on a free 127.0.0.1 port.

    The listening socket is bound here and handed to uvicorn: a port found free and bound
    later by uvicorn could be taken by another process (the other test worker) meanwhile."""

    def __init__(self, app: Any) -> None:
        import socket

        import uvicorn

        self.socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.socket.bind(("127.0.0.1", 0))
        self.port = int(self.socket.getsockname()[1])
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.socket]}, daemon=True
        )

    def start(self) -> LiveServer:
        self.thread.start()
        # only bounds a failure: the app's startup (its database pool) is slow under load
        deadline = time.monotonic() + 120
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)
        self.socket.close()


@pytest.fixture
def live_api() -> Iterator[Callable[[Any], str]]:
    """Factory: ``url = live_api(app)`` serves ``app`` over real HTTP until the test ends."""
    servers: list[LiveServer] = []

    def start(app: Any) -> str:
        server = LiveServer(app).start()
        servers.append(server)
        return server.url

    yield start
    for server in servers:
        server.stop()


# --------------------------------------------------------------------- STAC validation
def _offline_module() -> Any:
    tools = str(SHARED / "tools")
    if tools not in sys.path:
        sys.path.insert(0, tools)
    import stac_offline

    return stac_offline


def our_schemas() -> dict[str, str]:
    """Our extension schema(s) by identifier URL, for the offline mirror."""
    try:
        from tessera_stac.catalog import embedding
    except ImportError:
        return {}
    return {embedding.SCHEMA_URI: str(embedding.schema_path())}


@pytest.fixture(scope="session")
def stac_offline() -> Any:
    """The shared offline schema mirror, installed (our own schema included)."""
    if not SHARED.is_dir():
        pytest.skip(f"{SHARED} (the shared folder beside the checkout) is missing")
    module = _offline_module()
    module.install(extra=our_schemas())
    return module


@pytest.fixture(scope="session")
def stac_validate(stac_offline: Any) -> Callable[[dict[str, Any]], None]:
    """``stac_validate(d)`` raises if ``d`` breaks core STAC or any declared extension."""
    import pystac

    validator = stac_offline.pystac_validator()

    def validate(obj: dict[str, Any]) -> None:
        pystac.validation.validate_dict(obj, validator=validator)

    return validate
