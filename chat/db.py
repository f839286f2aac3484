"""Database calls from async code (consumers, generation jobs), on one worker thread
that keeps its connection.

Channels' db_async closes the connection after every call when
CONN_MAX_AGE is 0, so each call opened a new one: with a hundred streaming
replies that was half the worker thread's time, taken from the relay. Here the
connection stays open between calls and is dropped only when a call left it
broken or inside a transaction. HTTP views are untouched: they keep Django's
per-request connection handling.
"""

from asgiref.sync import SyncToAsync
from django.db import connections


class PersistentDatabaseSyncToAsync(SyncToAsync):
    def __init__(self, func):
        super().__init__(func, thread_sensitive=True)

    def thread_handler(self, loop, *args, **kwargs):
        try:
            return super().thread_handler(loop, *args, **kwargs)
        finally:
            for connection in connections.all(initialized_only=True):
                broken = connection.errors_occurred and not connection.is_usable()
                if broken or connection.in_atomic_block:
                    connection.close()


db_async = PersistentDatabaseSyncToAsync
