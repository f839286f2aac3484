"""When a reply's upstream request goes out, how it is stopped and how a joining socket
reaches it (chat.live.jobs, chat.live.control): against the loopback fake, through the
real channel layer."""

import asyncio
import contextlib

import pytest
from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer

from chat import turns
from chat.live import events, jobs, runtime
from tests.chat_support import new_conversation, wait_for_status

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def owner(make_user):
    return make_user("owner")


async def watch(conversation) -> str:
    """A channel in the conversation's group, as a tab's socket is."""
    layer = get_channel_layer()
    channel = await layer.new_channel()
    await layer.group_add(events.conversation_group(conversation.pk), channel)
    return channel


async def until(condition, timeout: float = 10.0):
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.02)


async def test_the_upstream_request_goes_out_at_once_and_deltas_wait_for_the_turns(
    owner, chat_model, fake
):
    fake.configure(tokens=["one ", "two ", "three "])
    conversation = await new_conversation(owner, chat_model)
    _, plan = await sync_to_async(turns.send)(owner, conversation.pk, "go")
    channel = await watch(conversation)
    receiving = asyncio.ensure_future(get_channel_layer().receive(channel))  # as a tab reads

    job = jobs.start(plan, shown=False)  # as a send does, before its turns are published
    await until(lambda: job.pump_task is not None and job.pump_task.done())  # all came in
    assert job.text() == "one two three "
    await asyncio.sleep(0.2)
    assert not receiving.done(), "a delta went out before the reply's turns"

    job.shown.set()
    first = await asyncio.wait_for(receiving, 5)
    assert first["type"] == "gen.delta" and first["seq"] == 1
    assert (await wait_for_status(plan.message_id)).status == "complete"


async def test_a_stop_reaches_a_job_in_this_process_without_the_channel_layer(
    owner, chat_model, fake, monkeypatch
):
    fake.configure(tokens=["tok "] * 500, token_interval=0.01)
    conversation = await new_conversation(owner, chat_model)
    _, plan = await sync_to_async(turns.send)(owner, conversation.pk, "go")
    job = jobs.start(plan)
    await until(job.text)

    async def no_layer(message_id):
        raise AssertionError("the stop went through the channel layer")

    monkeypatch.setattr(events, "stop_job", no_layer)
    await jobs.stop(plan.message_id)
    stopped = await wait_for_status(plan.message_id, timeout=5)
    assert stopped.status == "stopped" and stopped.content.startswith("tok ")
    assert await asyncio.to_thread(fake.wait_for_hangup, 1.0) is not None


async def test_a_stop_for_a_job_elsewhere_goes_through_its_group(monkeypatch):
    sent = []

    async def through_layer(message_id):
        sent.append(message_id)

    monkeypatch.setattr(events, "stop_job", through_layer)
    await jobs.stop(987654)  # no such job in this process
    assert sent == [987654]


async def test_a_snapshot_request_reaches_a_reply_the_moment_it_starts(owner, chat_model, fake):
    """The process listens for job commands from its start: a socket that asks as a reply
    starts (a tab opened just then) is answered, not left to time out on the saved text."""
    fake.configure(tokens=["tok "] * 500, token_interval=0.01)
    layer = get_channel_layer()
    channel = await layer.new_channel()
    conversation = await new_conversation(owner, chat_model)

    async def snapshot_of(message_id) -> dict:
        await events.ask_snapshot(message_id, channel)
        return await asyncio.wait_for(layer.receive(channel), 1)

    runtime.ensure_started()
    try:
        _, plan = await sync_to_async(turns.send)(owner, conversation.pk, "go")
        jobs.start(plan)
        for _ in range(10):  # until the listener has joined (on Redis, a round trip)
            with contextlib.suppress(TimeoutError):
                await snapshot_of(plan.message_id)
                break
        else:
            raise AssertionError("no answer from a running reply")
        await jobs.stop(plan.message_id)
        assert (await wait_for_status(plan.message_id, timeout=5)).status == "stopped"

        _, plan = await sync_to_async(turns.send)(owner, conversation.pk, "again")
        jobs.start(plan)
        answer = await snapshot_of(plan.message_id)  # before the job has run a step
        assert answer["type"] == "gen.snapshot" and answer["message_id"] == plan.message_id
    finally:
        await runtime.shutdown(grace_seconds=5)
