"""The PostgreSQL pool tests a connection before lending it only after it sat idle."""

import pytest
from django.conf import settings
from django.db import connection

from chatsite.postgres import base as pooling

pytestmark = pytest.mark.skipif(
    connection.vendor != "postgresql", reason="the pool is PostgreSQL's (CI's second pass)"
)


@pytest.fixture
def pool():
    from psycopg_pool import ConnectionPool

    db = settings.DATABASES["default"]
    conninfo = f"host={db['HOST']} port={db['PORT'] or 5432} user={db['USER']} dbname=postgres"
    with ConnectionPool(
        conninfo, min_size=1, max_size=1, check=pooling.check_unless_fresh,
        reset=pooling.note_return, kwargs={"autocommit": True},
    ) as pool:  # fmt: skip
        yield pool


@pytest.fixture
def checks(monkeypatch):
    from psycopg_pool import ConnectionPool

    seen, check = [], ConnectionPool.check_connection
    monkeypatch.setattr(ConnectionPool, "check_connection", lambda c: (seen.append(c), check(c)))
    return seen


def _backend(pool) -> int:
    with pool.connection() as conn:
        return conn.execute("SELECT pg_backend_pid()").fetchone()[0]


def _terminate(pid: int):
    """End a backend and wait until it is gone (its client's socket then says so)."""
    import psycopg

    db = settings.DATABASES["default"]
    with psycopg.connect(host=db["HOST"], user=db["USER"], dbname="postgres") as admin:
        admin.execute("SELECT pg_terminate_backend(%s, 5000)", [pid])


def test_a_connection_back_moments_ago_is_lent_without_a_test(pool, checks):
    first = _backend(pool)
    assert _backend(pool) == first  # the same connection, lent again
    assert len(checks) == 1  # tested once: at the first loan, when it was new to the pool


def test_a_connection_the_server_ended_moments_ago_is_tested_and_replaced(pool, checks):
    first = _backend(pool)
    before = len(checks)
    _terminate(first)  # a database restart, as the pool's connection sees it
    second = _backend(pool)  # its socket said so: the pool tested it, made a new one
    assert len(checks) > before and second != first  # lent untested, the query would fail


def test_an_idle_connection_is_tested_and_a_dead_one_replaced(pool, checks, monkeypatch):
    first = _backend(pool)
    monkeypatch.setattr(pooling, "FRESH_SECONDS", 0.0)  # it sat idle "long enough"
    before = len(checks)
    _terminate(first)  # a database restart, as the pool's connection sees it
    second = _backend(pool)  # the pool tested it, found it dead and made a new one
    assert len(checks) > before and second != first


def test_the_apps_own_connections_are_lent_so(checks, transactional_db):
    """Through Django: a call's connection goes back to the pool, and the next call's
    loan of it is not tested; after a while idle, it is."""
    from chat.db import on_database_thread

    held = connection.pool.get_stats()["pool_size"]  # earlier tests may have grown it
    for _ in range(held + 1):  # each connection in the pool lent and back once, just now
        on_database_thread(_query)
    before = len(checks)
    for _ in range(3):
        on_database_thread(_query)
    assert len(checks) == before
    pooling.FRESH_SECONDS, fresh = 0.0, pooling.FRESH_SECONDS
    try:
        on_database_thread(_query)
    finally:
        pooling.FRESH_SECONDS = fresh
    assert len(checks) == before + 1


def _query():
    from django.db import connection as here

    try:
        with here.cursor() as cursor:
            cursor.execute("SELECT 1")
    finally:
        here.close()  # back to the pool, as chat.db does after each call
