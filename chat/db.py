"""Database calls from async code (consumers, generation jobs), off the event loop,
without opening a new connection for each call.

On SQLite every call runs on one thread: the file takes one writer at a time,
and a second thread would only wait for the lock. On PostgreSQL calls run side
by side on the event loop's thread pool, each borrowing a connection from the
pool for the call: one user's send no longer queues behind other users'
saves, and the waits on the network overlap.

Channels' db_async closes the connection after every call when
CONN_MAX_AGE is 0, so each call opened a new one: with a hundred streaming
replies that was half the worker thread's time, taken from the relay. Here,
on SQLite, the connection stays open between calls and is dropped only when a
call left it broken or inside a transaction; on PostgreSQL it goes back to the
pool after each call. HTTP views are untouched: they keep Django's
per-request connection handling.

On SQLite the one thread also keeps an order: work somebody is waiting on (a
socket's command, an API call) goes ahead of work nobody waits on (a reply's
ending or partial save, a title, a session check). When a hundred replies end
within a second and their writers answer at once, each new message waits for
the messages ahead of it, not for the hundred endings too.
"""

import itertools
import queue
import threading
from concurrent.futures import Executor, Future

from asgiref.sync import SyncToAsync
from django.db import connections

WAITED_ON, BACKGROUND = 0, 1  # the order of the one thread's queue (SQLite)


def one_thread() -> bool:
    return connections["default"].vendor == "sqlite"


class _OneThread:
    """The SQLite connection's thread: runs one call at a time, lowest rank first,
    in arrival order within a rank."""

    def __init__(self):
        self.calls = queue.PriorityQueue()
        self.order = itertools.count()
        self.thread = None
        self.lock = threading.Lock()

    def submit(self, rank: int, fn, args) -> Future:
        with self.lock:
            if self.thread is None:
                self.thread = threading.Thread(target=self._work, name="database", daemon=True)
                self.thread.start()
        future = Future()
        self.calls.put((rank, next(self.order), future, fn, args))
        return future

    def _work(self):
        while True:
            _, _, future, fn, args = self.calls.get()
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(fn(*args))
            except BaseException as error:  # noqa: BLE001 - handed to the caller
                future.set_exception(error)


class _Door(Executor):
    """The one thread, entered at one rank (what asyncio's run_in_executor takes)."""

    def __init__(self, rank: int):
        self.rank = rank

    def submit(self, fn, /, *args, **kwargs):
        return ONE_THREAD.submit(self.rank, fn, args)


ONE_THREAD = _OneThread()
DOORS = {WAITED_ON: _Door(WAITED_ON), BACKGROUND: _Door(BACKGROUND)}


def on_database_thread(fn, *args):
    """Run fn on the one database thread now, and wait (tests close its connection so)."""
    return ONE_THREAD.submit(WAITED_ON, fn, args).result()


class PersistentDatabaseSyncToAsync(SyncToAsync):
    rank = WAITED_ON

    def __init__(self, func):
        self.one_thread = one_thread()
        executor = DOORS[self.rank] if self.one_thread else None
        super().__init__(func, thread_sensitive=False, executor=executor)

    def thread_handler(self, loop, *args, **kwargs):
        try:
            return super().thread_handler(loop, *args, **kwargs)
        finally:
            for connection in connections.all(initialized_only=True):
                broken = connection.errors_occurred and not connection.is_usable()
                if broken or connection.in_atomic_block or not self.one_thread:
                    connection.close()  # on PostgreSQL: back to the pool, which is cheap


class BackgroundDatabaseSyncToAsync(PersistentDatabaseSyncToAsync):
    rank = BACKGROUND


db_async = PersistentDatabaseSyncToAsync  # somebody waits for the answer
db_background = BackgroundDatabaseSyncToAsync  # nobody does: after every db_async call
