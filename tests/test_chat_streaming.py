"""The streaming core over real websockets (WebsocketCommunicator) and the loopback fake."""

import asyncio
from datetime import timedelta

import pytest
from asgiref.sync import sync_to_async
from django.db.backends.utils import CursorWrapper
from django.utils import timezone

from chat.live import jobs, recovery
from chat.models import Message
from providers.base import MESSAGES
from tests.chat_support import Socket, latest_reply, new_conversation, wait_for_status
from tests.fake_backend import DEFAULT_TOKENS
from tests.frames import shown

pytestmark = pytest.mark.django_db(transaction=True)

HOSTILE_TOKENS = ["<b>", "bold", "</b>", " & ", "caf", "é", " 🙂", "\n", "line ", "two"]


@pytest.fixture
def owner(make_user):
    return make_user("owner")


@pytest.fixture
def intruder(make_user):
    return make_user("intruder")


async def start_reply(socket, content="Hello?") -> Message:
    await socket.send(command="send", content=content)
    await socket.until(lambda f: 'id="thread"' in f)
    return await latest_reply(socket.conversation)


async def test_a_reply_streams_and_its_deltas_concatenate_exactly_to_the_stored_text(
    owner, chat_model, fake
):
    fake.configure(tokens=HOSTILE_TOKENS, token_interval=0.01)
    conversation = await new_conversation(owner, chat_model)
    tab = Socket(owner, conversation)
    assert await tab.open()
    reply = await start_reply(tab)
    assert reply.status == "streaming"  # the row exists from the first moment
    message_id, status = await tab.until_final(reply.pk)
    assert status == "complete"
    stored = (await wait_for_status(reply.pk)).content
    assert stored == "".join(HOSTILE_TOKENS)
    assert tab.text_of(reply.pk) == shown(stored)  # no gap, no repeat
    assert not any("<b>" in f for f in tab.frames)  # model output is never markup
    await tab.close()


async def test_closing_the_socket_mid_reply_does_not_stop_the_reply(owner, chat_model, fake):
    fake.configure(tokens=[f"t{i} " for i in range(40)], token_interval=0.01)
    conversation = await new_conversation(owner, chat_model)
    tab = Socket(owner, conversation)
    await tab.open()
    reply = await start_reply(tab)
    await tab.until(lambda f: f"tail-{reply.pk}" in f)
    await tab.close()
    done = await wait_for_status(reply.pk)
    assert done.status == "complete"
    assert done.content == "".join(f"t{i} " for i in range(40))


async def test_a_joining_socket_gets_the_text_so_far_then_the_rest_without_gap_or_duplicate(
    owner, chat_model, fake
):
    tokens = [f"w{i} " for i in range(400)]
    fake.configure(tokens=tokens, token_interval=0.005)
    conversation = await new_conversation(owner, chat_model)
    first = Socket(owner, conversation)
    await first.open()
    reply = await start_reply(first)
    joiners = []
    # Join at staggered moments, racing the deltas, including right after one.
    for delay in (0.0, 0.03, 0.07, 0.11, 0.2, 0.3):
        await asyncio.sleep(delay)
        joiner = Socket(owner, conversation)
        assert await joiner.open()
        joiners.append(joiner)
    for tab in [first, *joiners]:
        await tab.until_final(reply.pk)
    stored = (await wait_for_status(reply.pk)).content
    assert stored == "".join(tokens)
    for tab in [first, *joiners]:
        assert tab.text_of(reply.pk) == shown(stored)
        await tab.close()


async def test_stop_from_a_second_socket_stops_keeps_the_text_and_closes_upstream(
    owner, chat_model, fake
):
    fake.configure(tokens=["tok "] * 500, token_interval=0.01)
    conversation = await new_conversation(owner, chat_model)
    first, second = Socket(owner, conversation), Socket(owner, conversation)
    await first.open()
    reply = await start_reply(first)
    await first.until(lambda f: f"tail-{reply.pk}" in f)
    await second.open()
    await asyncio.sleep(0.1)
    await second.send(command="stop", message_id=reply.pk)
    stopped = await wait_for_status(reply.pk, timeout=5)
    assert stopped.status == "stopped"
    assert stopped.content.startswith("tok tok") and len(stopped.content) < 500 * 4
    hung_up = await asyncio.to_thread(fake.wait_for_hangup, 1.0)
    assert hung_up is not None, "the fake backend never saw its connection closed"
    assert (await first.until_final(reply.pk))[1] == "stopped"
    await first.close()
    await second.close()


async def test_another_user_cannot_open_read_stream_stop_edit_or_regenerate_by_any_id(
    owner, intruder, chat_model, fake
):
    fake.configure(tokens=["secret "] * 300, token_interval=0.01)
    victim_chat = await new_conversation(owner, chat_model)
    victim = Socket(owner, victim_chat)
    await victim.open()
    reply = await start_reply(victim, "my private question")
    question = await sync_to_async(
        lambda: Message.objects.get(conversation=victim_chat, role="user")
    )()

    assert not await Socket(intruder, victim_chat).open()  # cannot subscribe to the stream

    own_chat = await new_conversation(intruder, chat_model)
    attacker = Socket(intruder, own_chat)
    await attacker.open()
    await attacker.send(command="stop", message_id=reply.pk)
    assert "does not exist" in await attacker.notice()
    await attacker.send(command="edit", message_id=question.pk, content="hijacked")
    assert "does not exist" in await attacker.notice()
    await attacker.send(command="stop", message_id="not-a-number")
    assert "does not exist" in await attacker.notice()

    still = await sync_to_async(Message.objects.get)(pk=reply.pk)
    assert still.status == "streaming"
    assert (
        await sync_to_async(Message.objects.get)(pk=question.pk)
    ).content == "my private question"
    assert not any("secret" in f for f in attacker.frames)
    await victim.send(command="stop", message_id=reply.pk)
    await wait_for_status(reply.pk)
    await victim.close()
    await attacker.close()


async def test_a_2000_token_reply_writes_the_message_about_once_a_second(
    owner, chat_model, fake, monkeypatch
):
    fake.configure(tokens=["x"] * 2000, token_interval=0.0012)
    chat_model.default_max_tokens = 2000  # otherwise the site's default output limit applies
    await sync_to_async(chat_model.save)()
    writes = []
    execute = CursorWrapper.execute

    def count_updates(cursor, sql, params=None):
        if sql.startswith('UPDATE "chat_message"'):
            writes.append(sql)
        return execute(cursor, sql, params)

    # Every statement, on whichever thread runs it (one on SQLite, a pool on PostgreSQL).
    monkeypatch.setattr(CursorWrapper, "execute", count_updates)
    conversation = await new_conversation(owner, chat_model)
    tab = Socket(owner, conversation)
    await tab.open()
    started = asyncio.get_running_loop().time()
    reply = await start_reply(tab)
    await tab.until_final(reply.pk, timeout=60)
    seconds = asyncio.get_running_loop().time() - started
    monkeypatch.undo()
    done = await wait_for_status(reply.pk)
    assert done.content == "x" * 2000
    assert seconds > 2  # the reply really streamed for a while
    assert 1 <= len(writes) <= int(seconds) + 2, (len(writes), seconds)
    await tab.close()


async def test_a_restart_marks_orphaned_replies_interrupted_and_keeps_their_text(owner, chat_model):
    conversation = await new_conversation(owner, chat_model)

    @sync_to_async
    def orphan():
        question = Message.objects.create(conversation=conversation, role="user", content="Tell me")
        message = Message.objects.create(
            conversation=conversation, parent=question, role="assistant", status="streaming",
            content="half a",
        )  # fmt: skip
        # A dead process stopped touching its row long ago.
        Message.objects.filter(pk=message.pk).update(updated=timezone.now() - timedelta(minutes=5))
        return message

    message = await orphan()
    recovered = await sync_to_async(recovery.recover_orphans)(jobs.JOBS)
    after = await sync_to_async(Message.objects.get)(pk=message.pk)
    assert (after.status, after.content) == ("interrupted", "half a")
    # The same sweep runs every few seconds in any live server still up on this
    # database, and may have found the row first.
    assert [m.pk for m in recovered] in ([message.pk], [])

    tab = Socket(owner, conversation)  # the page offers continue and regenerate
    await tab.open()
    await tab.send(command="regenerate")
    await tab.until(lambda f: 'id="thread"' in f)
    new_reply = await latest_reply(conversation)
    assert new_reply.pk != message.pk
    await tab.until_final(new_reply.pk)
    await tab.close()


ERROR_BEHAVIOURS = {
    "auth": {"status": 401, "error": "auth"},
    "rate_limited": {"status": 429, "error": "rate"},
    "bad_request": {"status": 400, "error": "bad"},
    "context_too_long": {"status": 400, "error": "context"},
    "unavailable": {"status": 500, "error": "server"},
    "timeout": {"status": 504, "error": "server"},
    "malformed": {"malformed_after": 3},
}


@pytest.mark.parametrize("kind", sorted(ERROR_BEHAVIOURS))
async def test_every_provider_error_kind_ends_the_reply_with_its_human_message(
    owner, chat_model, fake, kind
):
    assert set(ERROR_BEHAVIOURS) == set(MESSAGES)
    fake.configure(**ERROR_BEHAVIOURS[kind])
    conversation = await new_conversation(owner, chat_model)
    tab = Socket(owner, conversation)
    await tab.open()
    reply = await start_reply(tab)
    _, status = await tab.until_final(reply.pk)
    assert status == "error"
    failed = await wait_for_status(reply.pk)
    assert failed.error_kind == kind
    assert failed.error_message == MESSAGES[kind]
    assert MESSAGES[kind].replace("'", "&#x27;") in tab.frames[-1]
    if kind == "malformed":
        assert failed.content == "".join(DEFAULT_TOKENS[:3])  # what arrived before the fault
    await tab.close()


async def test_text_received_before_a_mid_stream_failure_is_kept(owner, chat_model, fake):
    fake.configure(disconnect_after=4)
    conversation = await new_conversation(owner, chat_model)
    tab = Socket(owner, conversation)
    await tab.open()
    reply = await start_reply(tab)
    await tab.until_final(reply.pk)
    failed = await wait_for_status(reply.pk)
    assert (failed.status, failed.error_kind, failed.content) == (
        "error",
        "unavailable",
        "".join(DEFAULT_TOKENS[:4]),
    )
    await tab.close()


async def test_a_newborn_reply_is_not_taken_for_an_orphan(owner, chat_model):
    conversation = await new_conversation(owner, chat_model)
    newborn = await sync_to_async(Message.objects.create)(
        conversation=conversation, role="assistant", status="streaming"
    )  # committed, its job not registered yet
    assert await sync_to_async(recovery.recover_orphans)(jobs.JOBS) == []
    assert (await sync_to_async(Message.objects.get)(pk=newborn.pk)).status == "streaming"
