"""Two daphne processes sharing the database and a Redis channel layer behave as one."""

import asyncio
import os

import pytest
from asgiref.sync import sync_to_async

from chat.models import Message
from tests.chat_support import new_conversation, wait_for_status
from tests.frames import FINAL, NEW_REPLY, is_delta, is_snapshot, shown
from tests.live_server import Daphne
from tests.ws_client import ChatClient

REDIS_URL = os.environ.get("REDIS_URL", "")
pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(
        not REDIS_URL,
        reason="needs REDIS_URL (several processes need the Redis channel layer): "
        "runs in CI's PostgreSQL + Redis pass",
    ),
]


@pytest.fixture
def two_servers():
    servers = [Daphne(extra_env={"REDIS_URL": REDIS_URL}).start() for _ in range(2)]
    yield servers
    for server in servers:
        server.stop()


async def test_a_reply_started_on_a_streams_to_b_stops_from_b_and_reattaches_on_b(
    two_servers, make_user, chat_model, fake, cookie_for
):
    a, b = two_servers
    owner = await sync_to_async(make_user)("owner")
    cookie = await sync_to_async(cookie_for)(owner)
    conversation = await new_conversation(owner, chat_model)
    fake.configure(tokens=[f"t{i} " for i in range(1000)], token_interval=0.01)

    async with (
        ChatClient(a.url, conversation.pk, cookie) as on_a,
        ChatClient(b.url, conversation.pk, cookie) as on_b,
    ):
        await on_a.send(command="send", content="Start on A")
        frame = await on_b.until(lambda f: NEW_REPLY.search(f))  # B sees the new turn
        reply_id = int(NEW_REPLY.search(frame).group(1))
        await on_b.until(lambda f: "t1" in on_b.text_of(reply_id).split())  # two tokens in

        # A refresh that lands on B re-attaches: the text so far, then the rest.
        async with ChatClient(b.url, conversation.pk, cookie) as refreshed:
            await refreshed.until(lambda f: is_snapshot(f, reply_id))
            # at least what B showed (drawn as Markdown: a trailing space is not shown)
            assert refreshed.text_of(reply_id).split()[:2] == ["t0", "t1"]
            await refreshed.until(lambda f: is_delta(f, reply_id))  # and then the deltas after it

            await on_b.send(command="stop", message_id=reply_id)  # stop from B ...
            stopped = await wait_for_status(reply_id, timeout=10)  # ... stops the job on A
            assert stopped.status == "stopped"
            final = await refreshed.until(lambda f: FINAL.search(f))
            assert FINAL.search(final).group(2) == "stopped"
            hung_up = await asyncio.to_thread(fake.wait_for_hangup, 2.0)
            assert hung_up is not None
            saved = await sync_to_async(Message.objects.get)(pk=reply_id)
            assert refreshed.text_of(reply_id) == shown(saved.content)
            await on_b.until(lambda f: FINAL.search(f))
            assert on_b.text_of(reply_id) == shown(saved.content)
