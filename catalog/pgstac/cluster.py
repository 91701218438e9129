"""A project-local PostgreSQL + PostGIS + pgSTAC cluster the user never has to think about.

The cluster lives under ``<home>/pg`` (``home`` defaults to ``.tessera-stac/``), listens on
127.0.0.1 only, on a free port chosen at ``init`` and remembered in ``<home>/state.json``.
PostgreSQL refuses to run as root, so when invoked as root the server runs as an
unprivileged OS user (``postgres`` by default, ``TESSERA_STAC_PG_OS_USER`` to change it).
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import re
import secrets
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from tessera_stac.catalog.errors import ConfigurationError, DatabaseError
from tessera_stac.catalog.settings import DatabaseSettings, PgEnvSettings

SUPERUSER = "postgres"


def pgstac_version() -> str:
    """Return the pgSTAC schema version the installed pypgstac migrates to."""
    from pypgstac.version import __version__

    return str(__version__)


def find_pg_bindir() -> Path:
    """Locate the PostgreSQL server binaries (``initdb``, ``pg_ctl``, ``postgres``).

    Raises:
        ConfigurationError: when no server binaries are installed.
    """
    env = os.environ.get("TESSERA_STAC_PG_BINDIR")
    candidates: list[Path] = [Path(env)] if env else []
    found = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"),
        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
        reverse=True,
    )
    candidates += [p.parent for p in found]
    which = shutil.which("initdb")
    if which:
        candidates.append(Path(which).resolve().parent)
    for bindir in candidates:
        if (bindir / "initdb").is_file() and (bindir / "pg_ctl").is_file():
            return bindir
    raise ConfigurationError(
        "PostgreSQL server binaries not found (initdb, pg_ctl): install them with "
        "`apt-get install postgresql-15 postgresql-15-postgis-3`, or set "
        "TESSERA_STAC_PG_BINDIR to their directory"
    )


def pg_major_version(bindir: Path) -> str:
    """Return the major version of the server in ``bindir`` (e.g. ``"15"``)."""
    out = subprocess.run(
        [str(bindir / "postgres"), "--version"], capture_output=True, text=True, check=False
    ).stdout
    match = re.search(r"(\d+)(?:\.\d+)?", out)
    if not match:
        raise ConfigurationError(f"cannot tell the PostgreSQL version of {bindir}/postgres")
    return match.group(1)


def check_postgis(bindir: Path) -> None:
    """Raise a ConfigurationError naming the package to install when PostGIS is missing."""
    version = pg_major_version(bindir)
    sharedirs = [Path(f"/usr/share/postgresql/{version}")]
    pg_config = bindir / "pg_config"
    if pg_config.is_file():
        out = subprocess.run(
            [str(pg_config), "--sharedir"], capture_output=True, text=True, check=False
        )
        if out.returncode == 0 and out.stdout.strip():
            sharedirs.insert(0, Path(out.stdout.strip()))
    if not any((d / "extension" / "postgis.control").is_file() for d in sharedirs):
        raise ConfigurationError(
            f"PostGIS is not installed for PostgreSQL {version}: install it with "
            f"`apt-get install postgresql-{version}-postgis-3`"
        )


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """Return True when nothing listens on ``host:port``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port that is free on ``host`` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class ServerUser:
    """The OS user the PostgreSQL server runs as."""

    name: str
    uid: int
    gid: int

    @classmethod
    def resolve(cls) -> ServerUser:
        """The invoking user, or an unprivileged one when invoked as root."""
        if os.geteuid() != 0:
            entry = pwd.getpwuid(os.geteuid())
            return cls(entry.pw_name, entry.pw_uid, entry.pw_gid)
        name = os.environ.get("TESSERA_STAC_PG_OS_USER", "postgres")
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            raise ConfigurationError(
                f"running as root, PostgreSQL needs an unprivileged OS user to run as and "
                f"'{name}' does not exist: install PostgreSQL's packages (`apt-get install "
                f"postgresql-15`) or create one (`useradd --system {name}`), or set "
                f"TESSERA_STAC_PG_OS_USER"
            ) from None
        if entry.pw_uid == 0:
            raise ConfigurationError(f"TESSERA_STAC_PG_OS_USER={name} is root: name another user")
        return cls(entry.pw_name, entry.pw_uid, entry.pw_gid)

    @property
    def is_self(self) -> bool:
        """True when the server runs as the invoking user."""
        return self.uid == os.geteuid()


class LocalCluster:
    """The project-local cluster: ``init``, ``start``, ``stop``, ``status``, ``dsn``.

    Args:
        home: project-local state directory (``.tessera-stac`` by default).
        port: port to listen on; default is the one chosen at ``init``.
        dbname: the database holding pgSTAC.
        fast: trade durability for speed (fsync off): for test clusters only.
    """

    def __init__(
        self, home: Path, port: int | None = None, dbname: str = "tessera", fast: bool = False
    ) -> None:
        self.home = home.absolute()
        self.pgdata = self.home / "pg"
        self.state_file = self.home / "state.json"
        self.logfile = self.home / "postgresql.log"
        self._port_override = port
        self.dbname = dbname
        self.fast = fast

    # ------------------------------------------------------------------ state
    def _state(self) -> dict[str, Any]:
        if not self.state_file.is_file():
            return {}
        data: dict[str, Any] = json.loads(self.state_file.read_text())
        return data

    def _write_state(self, state: dict[str, Any]) -> None:
        tmp = self.state_file.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(state, fh, indent=2)
        os.replace(tmp, self.state_file)

    @property
    def initialised(self) -> bool:
        """True when the cluster's data directory exists."""
        return (self.pgdata / "PG_VERSION").is_file() and bool(self._state())

    @property
    def port(self) -> int:
        """The port the cluster listens on."""
        if self._port_override:
            return self._port_override
        port = self._state().get("port")
        if not port:
            raise ConfigurationError(
                f"the local database in {self.home} is not initialised: run `tessera-stac db init`"
            )
        return int(port)

    def dsn(self, dbname: str | None = None) -> str:
        """Return the libpq URL of ``dbname`` (default: the pgSTAC database)."""
        password = self._state().get("password", "")
        return (
            f"postgresql://{SUPERUSER}:{quote(password)}@127.0.0.1:{self.port}/"
            f"{dbname or self.dbname}"
        )

    # -------------------------------------------------------------- processes
    def _run(
        self, user: ServerUser, args: Sequence[str], check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        kwargs: dict[str, Any] = {}
        if not user.is_self:
            kwargs = {"user": user.uid, "group": user.gid, "extra_groups": []}
        env = {**os.environ, "LC_ALL": "C.UTF-8", "LANG": "C.UTF-8"}
        proc = subprocess.run(
            list(args), capture_output=True, text=True, env=env, cwd="/", check=False, **kwargs
        )
        if check and proc.returncode != 0:
            detail = (proc.stderr or proc.stdout).strip().splitlines()
            raise DatabaseError(f"{Path(args[0]).name} failed: {' | '.join(detail[-3:])}")
        return proc

    def _check_ownership(self, user: ServerUser) -> None:
        if not self.pgdata.exists():
            return
        owner = self.pgdata.stat().st_uid
        if owner != user.uid:
            try:
                owner_name = pwd.getpwuid(owner).pw_name
            except KeyError:
                owner_name = str(owner)
            raise ConfigurationError(
                f"data directory {self.pgdata} is owned by '{owner_name}', but the server runs "
                f"as '{user.name}': fix it with `chown -R {user.name} {self.pgdata}` or use "
                f"another TESSERA_STAC_HOME"
            )

    def _check_traversable(self, user: ServerUser) -> None:
        if user.is_self:
            return
        for parent in [self.home, *self.home.parents]:
            mode = parent.stat().st_mode
            if parent.stat().st_uid != user.uid and not mode & 0o001:
                raise ConfigurationError(
                    f"the server user '{user.name}' cannot enter {parent}: "
                    f"`chmod o+x {parent}`, or put TESSERA_STAC_HOME somewhere it can reach"
                )

    def init(self) -> bool:
        """Create the cluster (if needed), start it and migrate pgSTAC. Returns True if new."""
        bindir = find_pg_bindir()
        check_postgis(bindir)
        user = ServerUser.resolve()
        self._check_ownership(user)
        created = False
        if not self.initialised:
            self.home.mkdir(parents=True, exist_ok=True)
            os.chmod(self.home, 0o755)
            self._check_traversable(user)
            if self.pgdata.exists() and any(self.pgdata.iterdir()):
                raise ConfigurationError(
                    f"{self.pgdata} exists but is not a complete cluster (no state.json): "
                    f"move it away and run `tessera-stac db init` again"
                )
            self.pgdata.mkdir(exist_ok=True)
            if not user.is_self:
                os.chown(self.pgdata, user.uid, user.gid)
            os.chmod(self.pgdata, 0o700)
            password = secrets.token_urlsafe(18)
            pwfile = self.home / ".pwfile"
            pwfile.write_text(password + "\n")
            if not user.is_self:
                os.chown(pwfile, user.uid, user.gid)
            os.chmod(pwfile, 0o600)
            try:
                self._run(
                    user,
                    [
                        str(bindir / "initdb"),
                        "-D",
                        str(self.pgdata),
                        "-U",
                        SUPERUSER,
                        "--pwfile",
                        str(pwfile),
                        "--auth-host=scram-sha-256",
                        "--auth-local=scram-sha-256",
                        "-E",
                        "UTF8",
                        "--locale=C.UTF-8",
                    ],
                )
            finally:
                pwfile.unlink(missing_ok=True)
            self._write_conf()
            # chosen just before the server binds it (start, below), not before initdb's
            # seconds: meanwhile another process can be given the same free port
            port = self._port_override or free_port()
            self._write_state({"port": port, "password": password, "bindir": str(bindir)})
            created = True
        self.start()
        self._ensure_database()
        self.migrate(self.dsn())
        return created

    def _write_conf(self) -> None:
        lines = [
            "listen_addresses = '127.0.0.1'",
            "unix_socket_directories = ''",
            "shared_buffers = '256MB'",
            "work_mem = '32MB'",
            "maintenance_work_mem = '256MB'",
            "max_connections = 200",
            "synchronous_commit = off",
        ]
        if self.fast:
            lines += ["fsync = off", "full_page_writes = off"]
        conf = self.pgdata / "postgresql.conf"
        with open(conf, "a") as fh:
            fh.write("\n# tessera-stac\n" + "\n".join(lines) + "\n")

    def is_running(self) -> bool:
        """Return True when the cluster's server process is up."""
        if not self.initialised:
            return False
        bindir = Path(self._state().get("bindir") or find_pg_bindir())
        user = ServerUser.resolve()
        proc = self._run(user, [str(bindir / "pg_ctl"), "status", "-D", str(self.pgdata)], False)
        return proc.returncode == 0

    def start(self) -> bool:
        """Start the server; a no-op when it already runs. Returns True if it was started."""
        if not self.initialised:
            self.init()
            return True
        user = ServerUser.resolve()
        self._check_ownership(user)
        if self.is_running():
            return False
        port = self.port
        if not port_is_free(port):
            raise ConfigurationError(
                f"port {port} on 127.0.0.1 is in use by another program: stop it, or start on "
                f"another port with `TESSERA_STAC_DB_PORT=<port> tessera-stac db start`"
            )
        bindir = Path(self._state().get("bindir") or find_pg_bindir())
        if not self.logfile.exists():
            self.logfile.touch()
        if not user.is_self:
            os.chown(self.logfile, user.uid, user.gid)
        self._run(
            user,
            [
                str(bindir / "pg_ctl"),
                "start",
                "-w",
                "-t",
                "60",
                "-D",
                str(self.pgdata),
                "-l",
                str(self.logfile),
                "-o",
                f"-p {port}",
            ],
        )
        if self._port_override and self._port_override != self._state().get("port"):
            self._write_state({**self._state(), "port": self._port_override})
        self._wait_ready()
        return True

    def _wait_ready(self, timeout: float = 30.0) -> None:
        import psycopg

        deadline = time.monotonic() + timeout
        while True:
            try:
                with psycopg.connect(self.dsn("postgres"), connect_timeout=3):
                    return
            except psycopg.OperationalError as exc:
                if time.monotonic() > deadline:
                    raise DatabaseError(f"the local database did not come up: {exc}") from exc
                time.sleep(0.2)

    def stop(self) -> bool:
        """Stop the server (fast shutdown); a no-op when stopped. Returns True if stopped."""
        if not self.is_running():
            return False
        bindir = Path(self._state().get("bindir") or find_pg_bindir())
        user = ServerUser.resolve()
        self._run(
            user, [str(bindir / "pg_ctl"), "stop", "-w", "-m", "fast", "-D", str(self.pgdata)]
        )
        return True

    def _ensure_database(self, dbname: str | None = None) -> None:
        import psycopg
        from psycopg import sql

        name = dbname or self.dbname
        with psycopg.connect(self.dsn("postgres"), autocommit=True) as conn:
            exists = conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (name,)
            ).fetchone()
            if not exists:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))

    @staticmethod
    def migrate(dsn: str) -> str:
        """Install or upgrade the pgSTAC schema in ``dsn``; return the version now there."""
        return migrate(dsn)

    def status(self) -> dict[str, Any]:
        """Describe the cluster: initialised, running, port, dsn, pgSTAC version."""
        info: dict[str, Any] = {
            "home": str(self.home),
            "initialised": self.initialised,
            "running": self.is_running(),
        }
        if self.initialised:
            info["port"] = self.port
            info["url"] = self.dsn()
        if info["running"]:
            info["pgstac_version"] = installed_pgstac_version(self.dsn())
        return info

    @contextlib.contextmanager
    def template_clone(self, template: str, name: str) -> Iterator[str]:
        """Create database ``name`` from ``template``, yield its DSN, then drop it."""
        import psycopg
        from psycopg import sql

        with psycopg.connect(self.dsn("postgres"), autocommit=True) as conn:
            # a template must have no sessions: close stragglers (e.g. a pool closing lazily)
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                (template,),
            )
            conn.execute(
                sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                    sql.Identifier(name), sql.Identifier(template)
                )
            )
        try:
            yield self.dsn(name)
        finally:
            with psycopg.connect(self.dsn("postgres"), autocommit=True) as conn:
                conn.execute(
                    sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
                )


def migrate(dsn: str) -> str:
    """Install or upgrade the pgSTAC schema at ``dsn`` with pypgstac; return its version."""
    from pypgstac.db import PgstacDB
    from pypgstac.migrate import Migrate

    try:
        db = PgstacDB(dsn=dsn)
        try:
            Migrate(db).run_migration()
        finally:
            db.close()
    except Exception as exc:  # pypgstac raises plain exceptions
        raise DatabaseError(f"pgSTAC migration failed on {redact(dsn)}: {exc}") from exc
    version = installed_pgstac_version(dsn)
    if version is None:
        raise DatabaseError(f"pgSTAC migration left no version in {redact(dsn)}")
    return version


def installed_pgstac_version(dsn: str) -> str | None:
    """Return the newest pgSTAC version recorded in ``pgstac.migrations`` (None if absent)."""
    import psycopg

    try:
        with psycopg.connect(dsn, connect_timeout=5) as conn:
            row = conn.execute(
                "SELECT version FROM pgstac.migrations ORDER BY datetime DESC LIMIT 1"
            ).fetchone()
    except psycopg.Error:
        return None
    return str(row[0]) if row else None


def redact(dsn: str) -> str:
    """Hide the password in a DSN for messages."""
    return re.sub(r"(://[^:/@]+:)[^@]*@", r"\1***@", dsn)


def resolve_dsn(settings: DatabaseSettings) -> str:
    """The DSN to use: external (URL or ``PG*``) when configured, else the local cluster's."""
    if settings.database_url:
        return settings.database_url
    external = PgEnvSettings().dsn()
    if external:
        return external
    return LocalCluster(settings.home, port=settings.db_port, dbname=settings.db_name).dsn()


def is_external(settings: DatabaseSettings) -> bool:
    """True when the settings name an external database rather than the local cluster."""
    return bool(settings.database_url or PgEnvSettings().dsn())
