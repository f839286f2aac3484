"""The processes the benchmark runs: the fake upstream, and the app under test.

The app runs the way `make run` runs it (chatsite.serve: uvloop, optionally
several workers on one port), on a throw-away database: a SQLite file, or a
fresh PostgreSQL database that is dropped afterwards.
"""

import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def tree(pid: int) -> list[int]:
    """The process and its descendants (the workers, when there are several)."""
    found = [pid]
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            children = task.read_text().split()
        except FileNotFoundError:
            continue
        for child in children:
            found += tree(int(child))
    return found


def proc_cpu(pid: int) -> float:
    """CPU seconds of the process and its descendants."""
    return sum(_read(_own_cpu, each) for each in tree(pid))


def proc_rss(pid: int) -> int:
    return sum(_read(_own_rss, each) for each in tree(pid))


def machine_cpu() -> tuple[float, float]:
    """CPU seconds the whole machine spent busy, and in all (every core), since boot: what
    the app, PostgreSQL, Redis and the bench's own upstream and clients share here."""
    ticks = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    idle = ticks[3] + ticks[4]  # idle and waiting for I/O
    return (sum(ticks) - idle) / CLK_TCK, sum(ticks) / CLK_TCK


def _read(what, pid: int):
    try:
        return what(pid)
    except (FileNotFoundError, ProcessLookupError):
        return 0  # it exited meanwhile


def _own_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def _own_rss(pid: int) -> int:
    return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE


@dataclass(frozen=True)
class Setup:
    """One configuration under test."""

    name: str
    redis_url: str = ""
    postgres_url: str = ""  # a server to make a throw-away database on; empty: SQLite
    workers: int = 1


class App:
    """The app on a throw-away database: one account per client, each with a conversation."""

    def __init__(self, upstream: str, clients: int, setup: Setup = Setup("embedded"),
                 root: Path = ROOT):  # fmt: skip
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        folder = Path(tempfile.mkdtemp(prefix="chat-bench-"))
        self.database = ThrowAwayDatabase(setup.postgres_url) if setup.postgres_url else None
        self.env = {
            **os.environ,
            "DEBUG": "false",
            "SECRET_KEY": "bench-" + "x" * 50,
            "PROVIDER_KEYS_SECRET": "bench-provider-keys-" + secrets.token_urlsafe(32),
            "ALLOWED_HOSTS": "127.0.0.1,localhost",
            "SECURE_SSL_REDIRECT": "false",
            "SQLITE_PATH": str(folder / "bench.sqlite3"),
            "DATABASE_URL": self.database.url if self.database else "",
            "REDIS_URL": setup.redis_url,
            "WORKERS": str(setup.workers),
            "PIN_CPUS": os.environ.get("PIN_CPUS", "all"),  # as `make run` starts it
            "LOG_LEVEL": "error",
        }
        # This tree's setup script, on `root`'s models: an earlier tree (bench.compare)
        # gets the same accounts and conversations.
        prepared = subprocess.run(
            [sys.executable, str(ROOT / "bench" / "setup_app.py"), upstream, str(clients)],
            cwd=root, env={**self.env, "PYTHONPATH": str(root)}, capture_output=True,
            text=True, check=True,
        )  # fmt: skip
        data = json.loads(prepared.stdout.strip().splitlines()[-1])
        self.tabs = [tuple(tab) for tab in data["tabs"]]  # (conversation, cookie)
        self.log = open(folder / "daphne.log", "w")  # noqa: SIM115 - closed in stop()
        if (root / "chatsite" / "serve.py").exists():
            command = ["-m", "chatsite.serve", "--port", str(self.port)]
        else:  # an older tree, for bench.compare
            command = ["-m", "daphne", "-b", "127.0.0.1", "-p", str(self.port),
                       "chatsite.asgi:application"]  # fmt: skip
        self.process = subprocess.Popen(
            [sys.executable, *command], cwd=root, env=self.env, stdout=self.log,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        wait_for_port(self.port)

    def workers(self) -> list[int]:
        """The processes that serve connections: the workers, or the one process."""
        return tree(self.process.pid)[1:] or [self.process.pid]

    def connections(self, pid: int) -> int:
        """Open connections the process holds on the app's port."""
        try:
            sockets = {os.readlink(fd) for fd in Path(f"/proc/{pid}/fd").iterdir()}
            table = Path(f"/proc/{pid}/net/tcp").read_text().splitlines()[1:]
        except (FileNotFoundError, ProcessLookupError):
            return 0
        count = 0
        for line in table:  # local address, remote, state (01: established), ..., inode
            fields = line.split()
            port, state, inode = int(fields[1].rsplit(":", 1)[1], 16), fields[3], fields[9]
            count += port == self.port and state == "01" and f"socket:[{inode}]" in sockets
        return count

    def stop(self):
        self.process.terminate()
        self.process.wait(15)
        self.log.close()
        if self.database:
            self.database.drop()


class ThrowAwayDatabase:
    """A fresh PostgreSQL database on the given server, dropped when done."""

    def __init__(self, server_url: str):
        import psycopg

        self.server_url = server_url
        self.name = f"chat_bench_{secrets.token_hex(4)}"
        with psycopg.connect(server_url, autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{self.name}"')
        self.url = server_url.rsplit("/", 1)[0] + "/" + self.name

    def drop(self):
        import psycopg

        with psycopg.connect(self.server_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')


def postgres_available(url: str) -> bool:
    import psycopg

    try:
        psycopg.connect(url, connect_timeout=2).close()
        return True
    except Exception:
        return False


def redis_available(url: str) -> bool:
    import redis

    try:
        redis.Redis.from_url(url, socket_connect_timeout=1).ping()
        return True
    except Exception:
        return False


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, timeout: float = 30):
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listens on {port}")


def start_upstream(tokens: int, rate: float, first_delay: float, markdown: bool = False):
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.fake_backend", "--tokens", str(tokens), "--rate", str(rate),
         "--first-delay", str(first_delay), *(["--markdown"] if markdown else [])],
        cwd=ROOT, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    port = int(process.stdout.readline())
    return process, f"http://127.0.0.1:{port}"
