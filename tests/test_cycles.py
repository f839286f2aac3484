"""What every reply makes is freed when it is done, without the cyclic collector.

Objects that refer to each other in a cycle wait for the collector, and what
lives through a few of its young passes waits for a full pass: under load those
stopped the event loop for 40 to 100 ms at a time. So the paths every reply
takes leave no cycles behind; these tests run them with the collector off and
look for what is left.
"""

import gc
import weakref

import httpx
import pytest

from chat import turns
from chat.models import Conversation
from tests.test_provider_streams import collect, endpoint


@pytest.fixture
def no_collector():
    gc.collect()
    gc.disable()
    yield
    gc.enable()


def alive(kind) -> int:
    return sum(1 for thing in gc.get_objects() if isinstance(thing, kind))


@pytest.mark.parametrize("wire", ["openai", "llamacpp", "workers_ai"])
async def test_a_streamed_reply_leaves_no_response_behind(fake, wire, no_collector):
    before = alive(httpx.Response)
    for _ in range(3):
        assert await collect(endpoint(fake, wire))
    assert alive(httpx.Response) == before  # each freed as its reply ended


@pytest.mark.django_db
def test_a_send_leaves_no_cycle_between_its_rows(make_user, chat_model, no_collector):
    user = make_user("cyclist")
    conversation = Conversation.objects.create(owner=user, model=chat_model)
    messages, plan = turns.send(user, conversation.pk, "Hello")
    rows = [weakref.ref(message) for message in messages]
    del messages, plan
    assert [row() for row in rows] == [None, None]  # freed at once, not by the collector
