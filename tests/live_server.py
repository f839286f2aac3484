"""The real app under daphne, in a subprocess, on the test database."""

import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from django.conf import settings
from django.db import connection

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def database_env() -> dict:
    """Point a child process at the database pytest-django set up for this run."""
    db = settings.DATABASES["default"]
    if db["ENGINE"].endswith("sqlite3"):
        return {"SQLITE_PATH": str(connection.settings_dict["NAME"]), "DATABASE_URL": ""}
    user, host, port = db.get("USER") or "postgres", db.get("HOST"), db.get("PORT") or 5432
    password = f":{db['PASSWORD']}" if db.get("PASSWORD") else ""
    name = connection.settings_dict["NAME"]
    return {"DATABASE_URL": f"postgres://{user}{password}@{host}:{port}/{name}"}


class Daphne:
    def __init__(self, port: int | None = None, extra_env: dict | None = None, args=()):
        self.port = port or free_port()
        self.extra_env = extra_env or {}
        self.args = list(args)
        self.process = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "Daphne":
        env = {**os.environ, **database_env(), **self.extra_env}
        env.setdefault("DEBUG", "true")
        # A file, not a pipe: nobody reads the pipe, and a full one would block daphne.
        self.log = tempfile.NamedTemporaryFile(prefix="daphne-", suffix=".log", delete=False)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "chatsite.serve", "--port", str(self.port), *self.args],
            cwd=ROOT,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"daphne exited: {self.log_text()[-2000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("daphne did not start within 30 s")

    def log_text(self) -> str:
        return Path(self.log.name).read_text(errors="replace")

    def kill(self):
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    def stop(self):
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()
