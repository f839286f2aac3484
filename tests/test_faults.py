"""Faults end with a clear status, and no text that reached the server is lost."""

import asyncio
import os
import sqlite3
import threading
import time

import pytest
from asgiref.sync import sync_to_async
from django.db import connection, connections

from chat.models import Message
from tests.chat_support import Socket, latest_reply, new_conversation, wait_for_status
from tests.frames import NEW_REPLY, shown
from tests.live_server import Daphne
from tests.ws_client import ChatClient

pytestmark = pytest.mark.django_db(transaction=True)
REDIS_URL = os.environ.get("REDIS_URL", "")


@pytest.fixture
def owner(make_user):
    return make_user("owner")


async def run_reply(owner, model, **provider_changes):
    if provider_changes:

        @sync_to_async
        def change():
            for name, value in provider_changes.items():
                setattr(model.provider, name, value)
            model.provider.save()

        await change()
    tab = Socket(owner, await new_conversation(owner, model))
    await tab.open()
    await tab.send(command="send", content="go")
    await tab.until(lambda f: 'id="thread"' in f)
    reply = await latest_reply(tab.conversation)
    final = await wait_for_status(reply.pk, timeout=30)
    await tab.close()
    return final, tab


async def test_an_upstream_that_refuses_the_connection_ends_in_a_clear_error(owner, chat_model):
    final, _ = await run_reply(owner, chat_model, base_url="http://127.0.0.1:9/v1")
    assert (final.status, final.error_kind) == ("error", "unavailable")
    assert "unavailable right now" in final.error_message


async def test_a_stall_past_the_silence_timeout_keeps_the_text_so_far(owner, chat_model, fake):
    fake.configure(stall_after=4)
    final, _ = await run_reply(owner, chat_model, read_timeout=0.5)
    assert (final.status, final.error_kind, final.content) == ("error", "timeout", "Hello, world")


async def test_an_endless_line_ends_in_a_clear_error_and_keeps_the_text(owner, chat_model, fake):
    fake.configure(endless_line_after=2)
    final, _ = await run_reply(owner, chat_model)
    assert (final.status, final.error_kind, final.content) == ("error", "malformed", "Hello,")


def _hold_database_away(seconds: float, spare_pid: int | None):
    """Make the database refuse work for a while, as an outage or failover would.

    `spare_pid` is the test's own connection, which its teardown still needs."""
    settings = connection.settings_dict
    if connection.vendor == "sqlite":
        raw = sqlite3.connect(str(settings["NAME"]), timeout=5)
        raw.execute("BEGIN EXCLUSIVE")
        time.sleep(seconds)
        raw.rollback()
        raw.close()
        return
    import psycopg

    name = settings["NAME"]
    server = {"host": settings["HOST"], "port": settings["PORT"] or 5432, "user": settings["USER"]}
    with psycopg.connect(**server, dbname="postgres", autocommit=True) as admin:
        admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = %s AND pid <> pg_backend_pid() AND pid <> %s",
            [name, spare_pid or 0],
        )
        time.sleep(seconds)
        admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')


@pytest.fixture
def test_connection_pid(owner):
    """The PostgreSQL backend of the test's own (main-thread) connection, spared by the outage."""
    connection.ensure_connection()
    return connection.connection.info.backend_pid if connection.vendor == "postgresql" else None


async def test_the_database_briefly_away_mid_reply_loses_nothing(
    owner, chat_model, fake, test_connection_pid
):
    tokens = [f"w{i} " for i in range(150)]
    fake.configure(tokens=tokens, token_interval=0.02)
    tab = Socket(owner, await new_conversation(owner, chat_model))
    await tab.open()
    await tab.send(command="send", content="go")
    await tab.until(lambda f: 'id="thread"' in f)
    reply = await latest_reply(tab.conversation)
    await tab.until(lambda f: f"tail-{reply.pk}" in f)
    outage = threading.Thread(target=_hold_database_away, args=(2.0, test_connection_pid))
    outage.start()
    await tab.until_final(reply.pk, timeout=40)  # the relay went on meanwhile
    outage.join()
    # The test's own helper thread held its connection through the outage (the app's
    # threads borrow theirs from the pool per call): let it reconnect.
    await sync_to_async(connections.close_all)()
    final = await wait_for_status(reply.pk)
    assert (final.status, final.content) == ("complete", "".join(tokens))
    assert tab.text_of(reply.pk) == shown(final.content)
    await tab.close()


@pytest.mark.skipif(not REDIS_URL, reason="needs REDIS_URL: runs in CI's PostgreSQL + Redis pass")
async def test_a_redis_restart_mid_reply_loses_no_text(owner, chat_model, fake, settings):
    import redis.asyncio as redis

    settings.SOCKET_REJOIN_SECONDS = 0.5
    tokens = [f"r{i} " for i in range(200)]
    fake.configure(tokens=tokens, token_interval=0.02)
    tab = Socket(owner, await new_conversation(owner, chat_model))
    await tab.open()
    await tab.send(command="send", content="go")
    await tab.until(lambda f: 'id="thread"' in f)
    reply = await latest_reply(tab.conversation)
    await tab.until(lambda f: f"tail-{reply.pk}" in f)
    # What a restart of a non-persistent Redis does to its clients: every
    # connection drops and every key (group membership included) is gone.
    client = redis.from_url(REDIS_URL)
    await client.flushdb()
    await client.client_kill_filter(_type="normal", skipme=True)
    await client.aclose()
    final = await wait_for_status(reply.pk, timeout=30)
    assert (final.status, final.content) == ("complete", "".join(tokens))
    status = (await tab.until_final(reply.pk, timeout=15))[1]  # the socket heals itself
    assert status == "complete"
    await tab.close()


async def saved_text(message_id: int, timeout: float = 10.0) -> Message:
    """The row once the saver has written some of the growing text to it."""
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        row = await sync_to_async(Message.objects.get)(pk=message_id)
        if row.content:
            return row
        await asyncio.sleep(0.05)
    raise AssertionError("no text was saved")


async def test_a_killed_server_leaves_the_reply_interrupted_with_its_text(
    owner, chat_model, fake, cookie_for
):
    fake.configure(tokens=[f"k{i} " for i in range(500)], token_interval=0.02)
    # Orphans are swept every second and taken as orphans after three.
    env = {"REDIS_URL": REDIS_URL or "", "STREAM_STALE_SECONDS": "3"}
    conversation = await new_conversation(owner, chat_model)
    cookie = await sync_to_async(cookie_for)(owner)
    doomed = await asyncio.to_thread(Daphne(extra_env=env).start)
    try:
        async with ChatClient(doomed.url, conversation.pk, cookie) as tab:
            await tab.send(command="send", content="go")
            frame = await tab.until(lambda f: NEW_REPLY.search(f))
            message_id = int(NEW_REPLY.search(frame).group(1))
            saved = await saved_text(message_id)  # once the saver has saved some
            doomed.kill()
    finally:
        doomed.kill()
    assert saved.content.startswith("k0 k1 ")  # the text saved while it streamed
    successor = await asyncio.to_thread(Daphne(extra_env=env).start)
    try:
        async with ChatClient(successor.url, conversation.pk, cookie) as tab:  # starts its sweep
            await wait_for_status(message_id, statuses=("interrupted",), timeout=30)
            # A page that still shows it streaming is told, whenever it (re)connects.
            await tab.send(command="sync", after=message_id, streaming=[message_id])
            await tab.until(lambda f: f'id="msg-{message_id}"' in f and "interrupted" in f)
    finally:
        await asyncio.to_thread(successor.stop)
    final = await sync_to_async(Message.objects.get)(pk=message_id)
    assert final.status == "interrupted"
    assert final.content.startswith(saved.content)  # nothing that was saved is lost


async def test_a_graceful_stop_saves_every_token_that_had_arrived(
    owner, chat_model, fake, cookie_for
):
    fake.configure(tokens=[f"g{i} " for i in range(500)], token_interval=0.02)
    conversation = await new_conversation(owner, chat_model)
    cookie = await sync_to_async(cookie_for)(owner)
    server = await asyncio.to_thread(Daphne().start)
    try:
        async with ChatClient(server.url, conversation.pk, cookie) as tab:
            await tab.send(command="send", content="go")
            frame = await tab.until(lambda f: NEW_REPLY.search(f))
            message_id = int(NEW_REPLY.search(frame).group(1))
            # SIGTERM, as a deploy or systemd would, as soon as the first text is shown:
            # well within a save interval, so only the stop can save it.
            await tab.until(lambda f: tab.text_of(message_id))
            server.process.terminate()
            while True:
                try:
                    await tab.frame(timeout=10)
                except Exception:
                    break
            seen = tab.text_of(message_id)
    finally:
        await asyncio.to_thread(server.stop)
    saved = await sync_to_async(Message.objects.get)(pk=message_id)
    assert saved.status == "interrupted"
    assert seen and shown(saved.content).startswith(seen)  # all the client saw, and maybe more
