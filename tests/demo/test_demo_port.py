"""The demo holds the port it will serve on from the start (its hrefs name it minutes before)."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time

import httpx
import pytest

from tessera_stac.catalog.errors import ConfigurationError
from tessera_stac.catalog.pgstac.cluster import port_is_free
from tessera_stac.cli.demo_run import held_port, hold_port

HOST = "127.0.0.1"


def _can_bind(port: int) -> bool:
    """Whether another process's usual server socket (SO_REUSEADDR, as uvicorn's) binds it."""
    return port_is_free(port, HOST)


def test_the_chosen_port_is_held_until_released() -> None:
    with socket.socket() as probe:  # a port free right now, used as the "default"
        probe.bind((HOST, 0))
        default = probe.getsockname()[1]
    held = hold_port(HOST, None, default)
    try:
        assert held_port(held) == default
        assert not _can_bind(default)  # nobody can take it while the demo runs its steps
        taken = hold_port(HOST, None, default)  # a second demo: the default is taken
        try:
            assert held_port(taken) not in (0, default)
        finally:
            taken.close()
        with pytest.raises(ConfigurationError, match=f"port {default} .* is in use"):
            hold_port(HOST, default, 8080)  # asked for by name: an error, not another port
    finally:
        held.close()
    assert _can_bind(default)


SERVE = """
import sys
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from tessera_stac.cli.demo_run import held_port, hold_port, serve

sock = hold_port("127.0.0.1", None, int(sys.argv[1]))
app = Starlette(routes=[Route("/", lambda request: PlainTextResponse("served"))])
serve(app, sock, lambda: print(held_port(sock), flush=True))
print("stopped", flush=True)
"""


def test_uvicorn_serves_on_the_held_socket_and_stops_on_sigterm() -> None:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        default = probe.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-c", SERVE, str(default)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline())  # printed once uvicorn serves
        assert port == default
        assert httpx.get(f"http://{HOST}:{port}/", timeout=10).text == "served"
        assert not _can_bind(port)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
        assert "stopped" in out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    deadline = time.monotonic() + 10  # the port is free again
    while not _can_bind(default) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _can_bind(default)
