"""`make run WORKERS=N`: several daphne processes behind one port, as one site."""

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
import websockets
from twisted.internet import protocol, tcp

from chat.models import Conversation
from chatsite import serve
from tests.live_server import ROOT, database_env, free_port

REDIS_URL = os.environ.get("REDIS_URL", "")


def children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        found += [int(child) for child in task.read_text().split()]
    return found


def environ(pid: int) -> bytes:
    return Path(f"/proc/{pid}/environ").read_bytes()


def sockets_of(pid: int) -> int:
    count = 0
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            count += os.readlink(fd).startswith("socket:")
        except OSError:
            pass
    return count


def no_reactor():
    """Enough of a reactor for a listening port whose turns the test takes by hand."""
    ignore = lambda descriptor: None  # noqa: E731
    return SimpleNamespace(addReader=ignore, removeReader=ignore, addWriter=ignore,
                           removeWriter=ignore)  # fmt: skip


def accepted_in_one_turn(waiting: int) -> int:
    """Connections a listening port takes the first time it is ready, `waiting` queued."""
    factory = protocol.Factory.forProtocol(protocol.Protocol)
    built = []
    factory.buildProtocol = lambda address: built.append(address) or protocol.Protocol()
    port = tcp.Port(0, factory, 50, "127.0.0.1", reactor=no_reactor())
    port.startListening()
    clients = [socket.create_connection(("127.0.0.1", port.getHost().port)) for _ in range(waiting)]
    try:
        port.doRead()
        return len(built)
    finally:
        for client in clients:
            client.close()
        port.socket.close()


def test_a_worker_on_a_shared_socket_takes_one_waiting_connection_per_turn(monkeypatch):
    monkeypatch.setattr(tcp.Port, "numberAccepts", None, raising=False)  # undone after
    assert accepted_in_one_turn(3) == 3  # Twisted's own: every one waiting, up to 100
    serve.accept_one_at_a_time()
    # The rest wait for this worker's next turn, or for another worker that is free.
    assert accepted_in_one_turn(3) == 1


def pinned(index: int, worker: bool, **env) -> list[str]:
    """What keep_to_one_cpu returns in a fresh process, and that process's CPUs."""
    code = (
        "import os; from chatsite import serve; "
        f"print(serve.keep_to_one_cpu({index}, {worker}), sorted(os.sched_getaffinity(0)))"
    )
    inherited = {name: value for name, value in os.environ.items() if name != "PIN_CPUS"}
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env={**inherited, **env},
                          capture_output=True, text=True, timeout=30)  # fmt: skip
    return [done.stdout.strip(), done.stderr]


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="one CPU: nothing to choose")
def test_each_worker_keeps_to_a_cpu_of_its_own_and_a_lone_process_to_none():
    allowed = sorted(os.sched_getaffinity(0))
    assert pinned(0, True)[0] == f"{allowed[0]} [{allowed[0]}]"
    assert pinned(1, True)[0] == f"{allowed[1]} [{allowed[1]}]"  # worker 1 beside worker 0
    wrapped = len(allowed) + 1
    assert pinned(wrapped, True)[0] == f"{allowed[1]} [{allowed[1]}]"  # more workers than CPUs
    # A lone process may have unknown siblings on the machine: the kernel places it ...
    assert pinned(0, False)[0] == f"None {allowed}"
    # ... unless it is told it has the machine to itself.
    assert pinned(0, False, PIN_CPUS="all")[0] == f"{allowed[0]} [{allowed[0]}]"
    assert pinned(1, True, PIN_CPUS="none")[0] == f"None {allowed}"
    refused = pinned(0, True, PIN_CPUS="sometimes")
    assert refused[0] == "" and "PIN_CPUS must be one of workers, all, none" in refused[1]


def test_more_than_one_worker_needs_redis():
    env = {**os.environ, "REDIS_URL": "", "DEBUG": "true"}
    done = subprocess.run(
        [sys.executable, "-m", "chatsite.serve", "--workers", "2", "--port", str(free_port())],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert done.returncode == 2
    assert "WORKERS > 1 needs REDIS_URL" in done.stderr


@pytest.mark.django_db(transaction=True)
@pytest.mark.skipif(not REDIS_URL, reason="needs REDIS_URL: runs in CI's PostgreSQL + Redis pass")
def test_two_workers_share_one_port_and_stop_together(make_user, chat_model, cookie_for):
    owner = make_user("owner")
    conversation = Conversation.objects.create(owner=owner, model=chat_model)
    port = free_port()
    env = {**os.environ, **database_env(), "REDIS_URL": REDIS_URL, "DEBUG": "true",
           "MAX_SOCKETS_PER_USER": "100"}  # fmt: skip
    supervisor = subprocess.Popen(
        [sys.executable, "-m", "chatsite.serve", "--workers", "2", "--port", str(port)],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_healthy(url)
        workers = children(supervisor.pid)
        assert len(workers) == 2
        # Each knows it is one of two (they share the frame budget: chatsite.settings).
        assert all(b"\0WORKERS=2\0" in b"\0" + environ(pid) for pid in workers)
        idle = {pid: sockets_of(pid) for pid in workers}
        held = asyncio.run(hold_tabs(url, conversation.pk, cookie_for(owner), 30, workers, idle))
        cpus = [os.sched_getaffinity(pid) for pid in workers]  # both are up by now
    finally:
        supervisor.send_signal(signal.SIGTERM)
        supervisor.wait(20)
    # Both workers took some of the 30 tabs, on the one port ...
    assert all(held[pid] > idle[pid] for pid in workers), (idle, held)
    # ... each on a CPU of its own ...
    if len(os.sched_getaffinity(0)) >= 2:
        assert [len(c) for c in cpus] == [1, 1] and cpus[0] != cpus[1], cpus
    # ... and both stopped with the supervisor.
    assert not any(Path(f"/proc/{pid}").exists() for pid in workers)


def wait_until_healthy(url: str):
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/healthz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise AssertionError("the workers did not answer")


async def hold_tabs(url, conversation_id, cookie, count, workers, idle) -> dict[int, int]:
    """Open `count` chat tabs, and count each worker's sockets while all are open. The
    port answers once one worker is up: while another is still starting (on a loaded
    machine, seconds later) it takes none, so up to 2 × `count` more open, a quarter of
    a second apart, until every worker holds some."""
    address = url.replace("http://", "ws://") + f"/ws/chat/{conversation_id}/"

    def connect():
        return websockets.connect(address, origin=url, additional_headers={"Cookie": cookie})

    tabs = [await connect() for _ in range(count)]
    try:
        for _ in range(2 * count):
            if all(sockets_of(pid) > idle[pid] for pid in workers):
                break
            await asyncio.sleep(0.25)
            tabs.append(await connect())
        for tab in tabs:
            await tab.send(json.dumps({"command": "ping"}))  # answered: "Unknown command."
            await asyncio.wait_for(tab.recv(), 10)  # accepted, and answering
        return {pid: sockets_of(pid) for pid in workers}
    finally:
        for tab in tabs:
            await tab.close()
