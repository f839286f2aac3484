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
"""

from asgiref.sync import SyncToAsync
from django.db import connections


def one_thread() -> bool:
    return connections["default"].vendor == "sqlite"


class PersistentDatabaseSyncToAsync(SyncToAsync):
    def __init__(self, func):
        self.one_thread = one_thread()
        super().__init__(func, thread_sensitive=self.one_thread)

    def thread_handler(self, loop, *args, **kwargs):
        try:
            return super().thread_handler(loop, *args, **kwargs)
        finally:
            for connection in connections.all(initialized_only=True):
                broken = connection.errors_occurred and not connection.is_usable()
                if broken or connection.in_atomic_block or not self.one_thread:
                    connection.close()  # on PostgreSQL: back to the pool, which is cheap


db_async = PersistentDatabaseSyncToAsync
