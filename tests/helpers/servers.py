"""Real servers on 127.0.0.1 that tests start themselves: an `mlflow server` (a SLURM cluster is
in `slurm`)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def get_json(url: str, payload: dict | None = None) -> dict:
    data = None if payload is None else json.dumps(payload).encode()
    request = urllib.request.Request(url, data=data,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


class MlflowServer:
    """A real `mlflow server` on 127.0.0.1 over `backend`, its artifacts under `folder`; a
    test can stop it and start it again on the same port and store (an outage)."""

    def __init__(self, folder: Path, env: dict[str, str], backend: str) -> None:
        self.folder, self.env, self.backend = folder, env, backend
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start it and wait until it answers (at most 90 s)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        log = self.folder / "server.log"  # a file, not a pipe: a full pipe would stall it
        with log.open("a") as output:
            self.process = subprocess.Popen(
                [str(Path(sys.executable).parent / "mlflow"), "server", "--backend-store-uri",
                 self.backend, "--artifacts-destination", str(self.folder / "artifacts"),
                 "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1"],
                cwd=self.folder, env=self.env, stdout=subprocess.DEVNULL, stderr=output)
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=2):
                    return
            except OSError:
                assert self.process.poll() is None, log.read_text()[-2000:]
                assert time.monotonic() < deadline, "mlflow server did not start in 90 s"
                time.sleep(0.5)

    def stop(self) -> None:
        """Stop it (SIGTERM, then wait for it to exit); the port and the store stay."""
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=30)
            self.process = None


@contextmanager
def served(folder: Path, env: dict[str, str], backend: str) -> Iterator[MlflowServer]:
    """A started `MlflowServer`, stopped at the end of the block."""
    server = MlflowServer(folder, env, backend)
    try:
        server.start()
        yield server
    finally:
        server.stop()


@contextmanager
def mlflow_server(folder: Path, env: dict[str, str], backend: str) -> Iterator[str]:
    """A real `mlflow server` on 127.0.0.1 over `backend`; yields its URL."""
    with served(folder, env, backend) as server:
        yield server.url
