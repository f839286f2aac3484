"""A real Redis restart in the middle of streaming: no reply ends without a status, no
text is lost, and the open tabs heal.

The test runs its own redis-server on a free port (the shared one stays up for
the rest of the suite), kills it while replies stream, and starts it again.
"""

import asyncio

import pytest
from asgiref.sync import sync_to_async

from chat.models import Message
from tests.chat_support import new_conversation, wait_for_status
from tests.frames import FINAL, NEW_REPLY, shown
from tests.live_server import Daphne
from tests.redis_support import REDIS_SERVER, OwnRedis
from tests.ws_client import ChatClient

OUTAGE_SECONDS = 1.0
pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(not REDIS_SERVER, reason="needs the redis-server program"),
]


@pytest.fixture
def own_redis():
    server = OwnRedis().start()
    yield server
    server.kill()


async def test_replies_survive_a_redis_restart_mid_stream(
    own_redis, make_user, chat_model, fake, cookie_for
):
    tokens = [f"r{i} " for i in range(150)]
    fake.configure(tokens=tokens, token_interval=0.02)  # three seconds a reply
    owner = await sync_to_async(make_user)("owner")
    cookie = await sync_to_async(cookie_for)(owner)
    conversations = [await new_conversation(owner, chat_model) for _ in range(3)]
    env = {
        "REDIS_URL": own_redis.url,
        "SOCKET_REJOIN_SECONDS": "1",
        "MAX_CONCURRENT_GENERATIONS": "5",
    }
    server = await asyncio.to_thread(Daphne(extra_env=env).start)
    try:
        tabs = [ChatClient(server.url, c.pk, cookie) for c in conversations]
        for tab in tabs:
            await tab.__aenter__()
        replies = []
        for tab in tabs:
            await tab.send(command="send", content="go")
            frame = await tab.until(lambda f: NEW_REPLY.search(f))
            replies.append(int(NEW_REPLY.search(frame).group(1)))
        for tab, reply in zip(tabs, replies, strict=True):
            await tab.until(lambda f, reply=reply: f'id="tail-{reply}"' in f)

        own_redis.kill()  # every connection drops, every subscription is forgotten
        await asyncio.sleep(OUTAGE_SECONDS)  # the outage itself, not a wait for a state
        await asyncio.to_thread(own_redis.start)

        for reply in replies:
            final = await wait_for_status(reply, timeout=30)
            assert (final.status, final.content) == ("complete", "".join(tokens))
        for tab, reply in zip(tabs, replies, strict=True):  # every tab heals and shows it all
            frame = await tab.until(lambda f, reply=reply: (m := FINAL.search(f)) and
                                    m.group(1) == str(reply), timeout=20)  # fmt: skip
            assert FINAL.search(frame).group(2) == "complete"
            saved = await sync_to_async(Message.objects.get)(pk=reply)
            assert tab.text_of(reply) == shown(saved.content)
        for tab in tabs:
            await tab.__aexit__()
    finally:
        await asyncio.to_thread(server.stop)
