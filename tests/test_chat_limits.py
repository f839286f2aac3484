"""Limits and context: clear refusals, nothing stored half-way."""

import pytest
from asgiref.sync import sync_to_async

from chat import context
from chat.models import Conversation, Message, Preference
from tests.chat_support import Socket, latest_reply, new_conversation, wait_for_status

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def owner(make_user):
    return make_user("owner")


@sync_to_async
def count_messages(**filters) -> int:
    return Message.objects.filter(**filters).count()


async def test_a_message_over_the_length_limit_is_refused_and_nothing_is_stored(
    owner, chat_model, settings
):
    settings.MAX_MESSAGE_CHARS = 500
    conversation = await new_conversation(owner, chat_model)
    tab = Socket(owner, conversation)
    await tab.open()
    await tab.send(command="send", content="x" * 501)
    assert "limit is 500" in await tab.notice()
    assert await count_messages(conversation=conversation) == 0
    await tab.send(command="send", content="   ")
    assert "Type a message" in await tab.notice()
    await tab.close()


async def test_the_concurrent_generation_cap_refuses_a_third_reply(
    owner, chat_model, fake, settings
):
    settings.MAX_CONCURRENT_GENERATIONS = 2
    fake.configure(tokens=["slow "] * 300, token_interval=0.02)
    tabs = []
    for _ in range(3):
        tab = Socket(owner, await new_conversation(owner, chat_model))
        await tab.open()
        tabs.append(tab)
    for tab in tabs[:2]:
        await tab.send(command="send", content="go")
        await tab.until(lambda f: 'id="thread"' in f)
    await tabs[2].send(command="send", content="one more")
    assert "already have 2 replies being written" in await tabs[2].notice()
    assert await count_messages(conversation=tabs[2].conversation) == 0
    for tab in tabs[:2]:
        reply = await latest_reply(tab.conversation)
        await tab.send(command="stop", message_id=reply.pk)
        await wait_for_status(reply.pk)
        await tab.close()
    await tabs[2].close()


async def test_one_reply_at_a_time_per_conversation(owner, chat_model, fake):
    fake.configure(tokens=["slow "] * 300, token_interval=0.02)
    tab = Socket(owner, await new_conversation(owner, chat_model))
    await tab.open()
    await tab.send(command="send", content="first")
    await tab.until(lambda f: 'id="thread"' in f)
    await tab.send(command="send", content="second")
    assert "still being written" in await tab.notice()
    reply = await latest_reply(tab.conversation)
    await tab.send(command="stop", message_id=reply.pk)
    await wait_for_status(reply.pk)
    await tab.close()


async def test_a_single_message_too_long_for_the_model_gets_a_clear_error(owner, chat_model):
    chat_model.context_window = 1000
    await sync_to_async(chat_model.save)()
    tab = Socket(owner, await new_conversation(owner, chat_model))
    await tab.open()
    await tab.send(command="send", content="word " * 2000)
    assert "too long for this model" in await tab.notice()
    assert await count_messages(conversation=tab.conversation) == 0
    await tab.close()


async def test_a_model_the_user_may_not_use_is_refused(owner, chat_model, make_user):
    from django.contrib.auth.models import Group

    @sync_to_async
    def restrict():
        chat_model.allowed_groups.add(Group.objects.create(name="vip"))

    await restrict()
    tab = Socket(owner, await new_conversation(owner))
    await tab.open()
    await tab.send(command="send", content="hi", model=chat_model.pk)
    assert "not available to you" in await tab.notice()
    assert await count_messages(conversation=tab.conversation) == 0
    await tab.close()


async def test_the_last_chosen_model_becomes_the_default_for_new_conversations(
    owner, chat_model, fake
):
    tab = Socket(owner, await new_conversation(owner))
    await tab.open()
    await tab.send(command="send", content="hi", model=chat_model.pk)
    await tab.until_final()
    await tab.close()
    preference = await sync_to_async(Preference.objects.get)(user=owner)
    assert preference.last_model_id == chat_model.pk
    second = Socket(owner, await new_conversation(owner))
    await second.open()
    await second.send(command="send", content="again")  # no model named
    await second.until_final()
    used = await sync_to_async(
        lambda: Conversation.objects.get(pk=second.conversation.pk).model_id
    )()
    assert used == chat_model.pk
    await second.close()


async def test_edit_and_resend_answers_the_new_version_and_keeps_the_old_turns(
    owner, chat_model, fake
):
    tab = Socket(owner, await new_conversation(owner, chat_model))
    await tab.open()
    for question in ("first question", "second question"):
        await tab.send(command="send", content=question)
        await tab.until_final()
    first = await sync_to_async(
        lambda: Message.objects.get(conversation=tab.conversation, content="first question")
    )()
    await tab.send(command="edit", message_id=first.pk, content="better question")
    await tab.until_final()
    thread = await sync_to_async(
        lambda: list(
            Message.objects.filter(conversation=tab.conversation).values_list("role", "content")
        )
    )()
    answer = ("assistant", "Hello, world! Ça va 🙂?")
    assert thread == [
        ("user", "first question"), answer, ("user", "second question"), answer,
        ("user", "better question"), answer,
    ]  # fmt: skip
    streamed = [r for r in fake.requests if r.body and r.body.get("stream")]
    sent = streamed[-1].body["messages"]
    assert [m["content"] for m in sent] == ["better question"]
    await tab.close()


async def test_regenerate_adds_a_version_of_the_last_reply(owner, chat_model, fake):
    tab = Socket(owner, await new_conversation(owner, chat_model))
    await tab.open()
    await tab.send(command="send", content="q")
    await tab.until_final()
    old = await latest_reply(tab.conversation)
    fake.configure(tokens=["another ", "answer"])
    await tab.send(command="regenerate")
    await tab.until_final()
    new = await latest_reply(tab.conversation)
    assert new.pk != old.pk and new.content == "another answer"
    assert new.parent_id == old.parent_id  # a sibling: the old one stays as a version
    assert await count_messages(conversation=tab.conversation) == 3
    await tab.close()


async def test_bad_frames_get_clear_refusals_and_the_socket_stays_up(owner, chat_model):
    tab = Socket(owner, await new_conversation(owner, chat_model))
    await tab.open()
    await tab.communicator.send_to(text_data="{not json")
    assert "not a valid command" in await tab.notice()
    await tab.communicator.send_to(text_data="[1, 2]")
    assert "not a valid command" in await tab.notice()
    await tab.send(command="launch-missiles")
    assert "Unknown command" in await tab.notice()
    await tab.send(command="send", content=["not", "text"])
    assert "Type a message" in await tab.notice()
    await tab.send(command="stop")
    assert "does not exist" in await tab.notice()
    await tab.send(command="send", content="still alive?")
    await tab.until_final()
    await tab.close()


def test_context_keeps_the_newest_turns_that_fit_and_counts_the_rest(chat_model):
    chat_model.context_window = 200
    history = [{"role": "user", "content": f"message number {i} " * 5} for i in range(20)]
    prompt = context.build(chat_model, "Be brief.", history, max_tokens=50)
    assert prompt.messages[0] == {"role": "system", "content": "Be brief."}
    assert prompt.messages[-1] == history[-1]
    assert prompt.left_out == 20 - (len(prompt.messages) - 1) > 0
    kept = prompt.messages[1:]
    assert kept == history[-len(kept) :]  # the newest ones, in order
