"""A real ``mlflow server`` on 127.0.0.1 for tests, and a TCP relay that can cut a client off mid-run.

Use the session fixture (``tests/conftest.py`` imports it, so every test module can ask for it)::

    def test_something(mlflow_server: MlflowServer) -> None:
        cli_main([..., "--trainer.logger.tracking_uri", mlflow_server.uri])
        client = mlflow_server.client()

The server runs on a free port with its own SQLite store and artifact folder under pytest's
session temp directory, is started once per session (it takes seconds) and stopped at the end
(the whole process group, so no worker outlives the session). Outside pytest::

    with MlflowServer(folder) as server: ...
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class MlflowServer:
    """``mlflow server`` on 127.0.0.1:<free port> with a SQLite store and proxied artifacts in ``folder``.

    Args:
        folder: Holds ``mlflow.db``, ``artifacts/`` and ``server.log``.
        start_timeout: Seconds to wait for ``/health`` to answer.
    """

    def __init__(self, folder: Path, start_timeout: float = 120.0) -> None:
        self.folder = Path(folder)
        self.port = free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.start_timeout = start_timeout
        self.process: subprocess.Popen[bytes] | None = None
        self._log: Any = None

    def start(self) -> MlflowServer:
        """Start the server and wait until it answers (raises with the server's log when it does not)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        command = [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--workers",
            "1",
            "--backend-store-uri",
            f"sqlite:///{self.folder / 'mlflow.db'}",
            "--artifacts-destination",
            str(self.folder / "artifacts"),
        ]
        env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}  # no background job workers
        self._log = open(self.folder / "server.log", "wb")  # noqa: SIM115 - open for the server's lifetime
        self.process = subprocess.Popen(
            command, stdout=self._log, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            try:
                with urllib.request.urlopen(self.uri + "/health", timeout=2):
                    return self
            except (urllib.error.URLError, OSError):
                time.sleep(0.25)
        self.stop()
        raise RuntimeError(
            f"mlflow server did not start on {self.uri}: {(self.folder / 'server.log').read_text()[-2000:]}"
        )

    def stop(self) -> None:
        """Stop the server and every process it started (its process group)."""
        if self._log is not None:
            self._log.close()
        if self.process is None or self.process.poll() is not None:
            return
        for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 5)):
            try:
                os.killpg(self.process.pid, sig)
                self.process.wait(timeout=wait)
                return
            except subprocess.TimeoutExpired:
                continue
            except ProcessLookupError:
                return

    def client(self) -> Any:
        """An ``MlflowClient`` on this server."""
        from mlflow import MlflowClient

        return MlflowClient(self.uri)

    def __enter__(self) -> MlflowServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class Relay:
    """A TCP relay 127.0.0.1:<free port> -> ``target_port`` that :meth:`cut` turns into a dead port.

    After ``cut()`` open connections are closed and new ones refused: what a client sees when its
    tracking server goes away mid-run.
    """

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.uri = f"http://127.0.0.1:{self.port}"
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
                upstream = socket.create_connection(("127.0.0.1", self.target_port))
            except OSError:
                return
            with self._lock:
                self._sockets += [client, upstream]
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for end in (source, sink):
                try:
                    end.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def cut(self) -> None:
        """Refuse new connections and close the open ones."""
        try:
            self.listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept(); close() alone would not
        except OSError:
            pass
        self.listener.close()
        with self._lock:
            for end in self._sockets:
                try:
                    end.shutdown(socket.SHUT_RDWR)
                    end.close()
                except OSError:
                    pass


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> MlflowServer:
    """One real ``mlflow server`` for the whole test session (started on first use, stopped at the end)."""
    server = MlflowServer(tmp_path_factory.mktemp("mlflow_server")).start()
    yield server
    server.stop()
