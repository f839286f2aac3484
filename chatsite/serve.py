"""Start the site: one daphne process, or several behind one port.

    python -m chatsite.serve [--host 127.0.0.1] [--port 8000] [--workers N]

Every process runs on uvloop, a faster event loop than asyncio's own: measured
with `make bench`, it cut the relay's CPU per token by about a tenth. With
--workers N (N > 1) this process binds the port once and starts N daphne
processes that accept on that same socket; the kernel hands each new
connection to whichever is free. A worker that dies is started again.
Several processes only make sense on a shared channel layer, so N > 1 needs
REDIS_URL (and PostgreSQL is advised: SQLite takes one writer at a time).
Worker i keeps to the i-th CPU (keep_to_one_cpu, PIN_CPUS).
"""

import argparse
import asyncio
import os
import signal
import socket
import subprocess
import sys
import time

RESTART_PAUSE_SECONDS = 1.0
# The database thread gives up the GIL at every query and, while the event loop is
# busy, waits up to the switch interval to get it back: at the default 5 ms a send's
# dozen queries queued every other send behind it. Measured with `make bench` at 100
# clients, runs interleaved: 1 ms against 5 ms, added time to first token p50
# +43/+54 ms against +110/+145 and CPU per token 0.160/0.169 ms against
# 0.181/0.189; then 0.5 ms against 1 ms, p50 +133 ms against +173 and p99 +672
# against +922 (means of 4 and 3 runs), CPU 0.190 against 0.203 ms; 0.25 ms was
# worse than both (the loop is interrupted too often).
SWITCH_INTERVAL_SECONDS = 0.0005


def use_uvloop():
    try:
        import uvloop
    except ImportError:  # optional: plain asyncio works, only slower
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def keep_to_one_cpu(index: int, worker: bool) -> int | None:
    """Keep this process, and every thread it starts, on one CPU: the index-th of those
    it may use (round the list). Returns that CPU, or None where it does not apply.

    A process runs its event loop on one thread and its database work on others, and
    they hand Python's lock back and forth at every query. Across two cores each
    handover wakes a thread on the other core, whose caches are cold for it; on one
    core it is a plain switch. See the README's benchmark section for the figures.

    PIN_CPUS=workers (the default) keeps the workers of one `--workers N` to a CPU
    each: they know they are N and which one they are. A lone process is left to the
    kernel, since several may share a machine without knowing of each other (the
    Procfile, the systemd template, containers scaled on one host) and would all
    take the first CPU; PIN_CPUS=all keeps a lone one to the first CPU as well (a
    machine of its own), and PIN_CPUS=none leaves every process to the kernel.
    """
    from chatsite import env  # here: a worker reads it before daphne starts

    mode = env.env_choice("PIN_CPUS", "workers", ("workers", "all", "none"))
    if mode == "none" or (mode == "workers" and not worker):
        return None
    if not hasattr(os, "sched_setaffinity"):  # not Linux
        return None
    allowed = sorted(os.sched_getaffinity(0))
    if len(allowed) < 2:
        return None  # nothing to choose between
    cpu = allowed[index % len(allowed)]
    os.sched_setaffinity(0, {cpu})  # before any thread starts: they inherit it
    return cpu


def run_daphne(daphne_args: list[str], shared_socket: bool = False, index: int = 0):
    """This process becomes one daphne server (the event loop policy must come first).
    A worker (on a shared socket) is the index-th of its supervisor's."""
    keep_to_one_cpu(index, worker=shared_socket)
    use_uvloop()
    sys.setswitchinterval(SWITCH_INTERVAL_SECONDS)
    if shared_socket:
        accept_one_at_a_time()
    from daphne.cli import CommandLineInterface

    CommandLineInterface().run([*daphne_args, "chatsite.asgi:application"])


def accept_one_at_a_time():
    """Twisted accepts up to a hundred waiting connections each time the socket is
    ready. Workers sharing a socket then split connections by who woke first, not by
    who is free. Taking one per turn of the event loop, a busy worker takes fewer.
    Measured with 150 clients arriving over 2 s on two workers (PostgreSQL + Redis),
    three runs each, sampled each second while they arrived: the two workers' counts
    differed by at most 3, 2 and 6 against 12, 16 and 10; added time to first token
    p99 +745, +596 and +1,093 ms against +1,506, +1,070 and +1,290."""
    from twisted.internet import tcp

    tcp.Port.numberAccepts = property(lambda port: 1, lambda port, value: None)


def listening_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(1024)
    sock.set_inheritable(True)
    return sock


class Workers:
    """N daphne children on one inherited socket; restarted if one dies, stopped together."""

    def __init__(self, count: int, sock: socket.socket, extra: list[str]):
        self.count, self.sock, self.extra = count, sock, extra
        self.children: list[subprocess.Popen] = []
        self.stopping = False

    def spawn(self, index: int) -> subprocess.Popen:
        fd = self.sock.fileno()
        command = [sys.executable, "-m", "chatsite.serve", "--fd", str(fd),
                   "--index", str(index), *self.extra]  # fmt: skip
        return subprocess.Popen(command, pass_fds=[fd])  # noqa: S603 - our own module

    def run(self):
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self.stop)
        self.children = [self.spawn(index) for index in range(self.count)]
        while not self.stopping:
            for index, child in enumerate(self.children):
                if child.poll() is not None and not self.stopping:
                    print(f"worker {child.pid} exited ({child.returncode}); starting another")
                    time.sleep(RESTART_PAUSE_SECONDS)
                    self.children[index] = self.spawn(index)  # on the same CPU
            time.sleep(0.5)
        for child in self.children:
            child.wait()

    def stop(self, signum, frame):
        """Pass the signal on: each worker saves its running replies before it exits."""
        self.stopping = True
        for child in self.children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))
    parser.add_argument("--workers", type=int, default=int(os.environ.get("WORKERS", "1") or 1))
    parser.add_argument("--fd", type=int, help="accept on this inherited socket (for workers)")
    parser.add_argument("--index", type=int, default=0, help="which worker (picks its CPU)")
    args, extra = parser.parse_known_args(argv)
    if args.fd is not None:  # a worker: WORKERS is its supervisor's
        run_daphne(["--fd", str(args.fd), *extra], shared_socket=True, index=args.index)
        return
    # The settings, and the workers after them, see how many processes share the
    # machine (they share a frame budget).
    os.environ["WORKERS"] = str(max(1, args.workers))
    if args.workers <= 1:
        run_daphne(["-b", args.host, "-p", str(args.port), *extra])
    elif not os.environ.get("REDIS_URL"):
        parser.exit(2, "WORKERS > 1 needs REDIS_URL: processes share replies through Redis.\n")
    else:
        print(f"Starting {args.workers} workers on http://{args.host}:{args.port}/", flush=True)
        Workers(args.workers, listening_socket(args.host, args.port), extra).run()


if __name__ == "__main__":
    main()
