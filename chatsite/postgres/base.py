"""Lending PostgreSQL connections from the pool: tested with a query only when in doubt.

The pool can test each connection before lending it (Django's CONN_HEALTH_CHECKS
does so with an empty query), so that after a database restart or failover it
hands out a live connection, not one the server already closed. But that is a
round trip on every database call of a socket or a reply, and on a loaded
process each round trip also waits its turn for the interpreter.

Here a connection is lent untested when it came back to the pool healthy in the
last FRESH_SECONDS and its socket has nothing to read. A server that ends a
connection (a restart, a failover, pg_terminate_backend) says so on the socket,
which an idle connection's socket otherwise never is: so that look, a system
call with no wait, catches what the query would. Anything else (readable, older,
or never lent before) gets the query.
"""

import select
import time
import weakref

from django.db.backends.postgresql import base
from psycopg import pq
from psycopg_pool import ConnectionPool

FRESH_SECONDS = 2.0
_returned: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()  # connection: when


def note_return(connection):
    """The pool's reset callback, run on every connection it takes back idle."""
    _returned[connection] = time.monotonic()


def check_unless_fresh(connection):
    """The pool's check callback: raises if the connection is dead."""
    if not _fresh_and_quiet(connection):
        ConnectionPool.check_connection(connection)


def _fresh_and_quiet(connection) -> bool:
    returned = _returned.get(connection)
    if returned is None or time.monotonic() - returned >= FRESH_SECONDS:
        return False
    if connection.pgconn.status != pq.ConnStatus.OK:
        return False
    readable, _, _ = select.select([connection.pgconn.socket], [], [], 0)
    return not readable


class DatabaseWrapper(base.DatabaseWrapper):
    """Django's, with the check above on the pool Django makes (Django lends a pool
    either no check or a test of every loan, CONN_HEALTH_CHECKS)."""

    @property
    def pool(self):
        pool = super().pool
        if pool is not None:
            pool._check = check_unless_fresh  # read at each loan, set before the first
        return pool
