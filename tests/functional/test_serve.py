"""``idp serve`` under load: gunicorn's gthread workers (threads, keep-alive), and the access log
an operator may turn off."""

from __future__ import annotations

import http.client
import socket
import time

import pytest
import requests

from idp.config import load_settings
from idp.db import dispose as dispose_app
from tests.functional.test_cli_and_demo import production_server, run_idp
from tests.support.idp_server import build_app

HEALTH = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n"
"""A request whose headers are not finished: the thread reading it waits for the rest."""


def wait_until_up(port: int) -> None:
    for _ in range(300):  # up to 30 s: the CI machine is shared
        try:
            requests.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
            return
        except requests.ConnectionError:
            time.sleep(0.1)
    raise AssertionError("idp serve did not start")


def stop(server) -> None:
    server.terminate()
    server.wait(timeout=15)


def slow_client(port: int) -> socket.socket:
    """A client that started a request and has not finished its headers: it holds a thread."""
    client = socket.create_connection(("127.0.0.1", port), timeout=15)
    client.sendall(HEALTH)
    return client


def status_line(client: socket.socket) -> bytes:
    return client.recv(4096).split(b"\r\n", 1)[0]


@pytest.mark.parametrize(
    ("args", "env_extra"),
    [(("--no-access-log",), None), ((), {"IDP_ACCESS_LOG": "off"})],
    ids=["option", "environment"],
)
def test_serve_without_access_log_still_serves(tmp_path, args, env_extra):
    log_path = tmp_path / "idp.log"
    with open(log_path, "wb") as log:
        port, server = production_server(
            tmp_path, workers=1, output=log, args=args, env_extra=env_extra
        )
    try:
        wait_until_up(port)
        answers = [requests.get(f"http://127.0.0.1:{port}/healthz").status_code for _ in range(3)]
    finally:
        stop(server)  # the log is complete once the server is gone
    assert answers == [200, 200, 200]
    logged = log_path.read_text()
    assert "Booting worker" in logged, logged  # the error log still works
    assert "GET /healthz" not in logged, logged


def test_serve_keeps_a_connection_alive_and_runs_four_threads_in_one_worker(tmp_path):
    log_path = tmp_path / "idp.log"
    with open(log_path, "wb") as log:
        port, server = production_server(
            tmp_path, workers=1, output=log, args=("--threads", "4", "--no-access-log")
        )
    held: list[socket.socket] = []
    try:
        wait_until_up(port)
        # Keep-alive: three requests, one socket, never "Connection: close".
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        sockets, closes = [], []
        for _ in range(3):
            connection.request("GET", "/healthz")
            answer = connection.getresponse()
            answer.read()
            assert answer.status == 200
            closes.append(answer.getheader("Connection"))
            sockets.append(connection.sock)
        assert sockets[0] is not None and sockets == [sockets[0]] * 3
        assert "close" not in closes, closes
        connection.close()

        # Three slow clients hold three threads; the fourth thread still answers.
        held = [slow_client(port) for _ in range(3)]
        time.sleep(0.5)
        assert requests.get(f"http://127.0.0.1:{port}/healthz", timeout=10).status_code == 200
        # A fourth slow client takes the last thread: a complete request now waits...
        held.append(slow_client(port))
        time.sleep(0.5)
        waiting = socket.create_connection(("127.0.0.1", port), timeout=1.5)
        waiting.sendall(HEALTH + b"\r\n")
        with pytest.raises(TimeoutError):
            waiting.recv(4096)
        # ...until one of them finishes its request and frees its thread.
        held[0].sendall(b"\r\n")
        assert status_line(held[0]) == b"HTTP/1.1 200 OK"
        waiting.settimeout(10)
        assert status_line(waiting) == b"HTTP/1.1 200 OK"
        waiting.close()
    finally:
        for client in held:
            client.close()
        stop(server)
    assert "Using worker: gthread" in log_path.read_text()


def test_serve_refuses_zero_threads_or_workers(tmp_path):
    for option in ("--threads", "--workers"):
        result = run_idp("serve", option, "0", tmp_path=tmp_path, check=False)
        assert result.returncode == 2 and f"Invalid value for '{option}'" in result.stderr
    result = run_idp("serve", tmp_path=tmp_path, env_extra={"IDP_THREADS": "0"}, check=False)
    assert result.returncode == 2 and "Invalid value for '--threads'" in result.stderr


def test_each_database_pool_keeps_a_connection_for_every_thread(database_url, tmp_path, clock):
    """The request pool and the state pool (throttle, sessions) each keep threads + 1
    connections (the background thread beside the request threads): 4 threads, 5 each."""
    assert load_settings({"IDP_INSTANCE_PATH": str(tmp_path)}).threads == 4
    assert load_settings({"IDP_INSTANCE_PATH": str(tmp_path), "IDP_THREADS": "16"}).threads == 16
    for threads, kept in ((4, 5), (16, 17)):
        app = build_app(database_url, tmp_path, clock, threads=threads)
        try:
            assert app.extensions["idp.engine"].pool.size() == kept
            assert app.extensions["idp.state_engine"].pool.size() == kept
        finally:
            dispose_app(app)


def test_serve_refuses_password_hashing_below_the_floor(tmp_path):
    cheap = {"IDP_ENV": "production", "IDP_ARGON2_TIME_COST": "1"}
    result = run_idp("serve", tmp_path=tmp_path, env_extra=cheap, check=False)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "error: IDP_ARGON2_MEMORY_KIB x IDP_ARGON2_TIME_COST is 9216 x 1 = 9216" in result.stderr
