"""Conversations as trees, over real websockets and the loopback fake: versions that
are never lost, a chosen path every tab and reload follows, only that path sent
as context, a continue that really continues, fork and delete."""

import asyncio
import re

import pytest
from asgiref.sync import sync_to_async

from chat.models import Conversation, Message, UsageRecord
from chat.tree import Tree
from providers.continuation import HIDDEN_INSTRUCTION
from tests.chat_support import Socket, latest_reply, logged_in, new_conversation, wait_for_status
from tests.frames import FINAL, is_delta, is_snapshot, shown, text_of

pytestmark = pytest.mark.django_db(transaction=True)
VERSIONS = re.compile(r'<span aria-hidden="true">(\d+) / (\d+)</span>')
REDRAW = '<section id="thread" hx-swap-oob="innerHTML">'


@pytest.fixture
def owner(make_user):
    return make_user("brancher")


@pytest.fixture
def intruder(make_user):
    return make_user("intruder")


def streamed_bodies(fake) -> list[dict]:
    return [r.body for r in fake.requests if r.body and r.body.get("stream")]


@sync_to_async
def linear(conversation, turns: int, model=None) -> list[Message]:
    """A finished conversation of `turns` questions and answers, one branch."""
    made, parent = [], None
    for n in range(1, turns + 1):
        for role, text in (("user", f"question {n}"), ("assistant", f"answer {n}")):
            parent = Message.objects.create(
                conversation=conversation, parent=parent, role=role, content=text,
                model=model if role == "assistant" else None,
            )  # fmt: skip
            made.append(parent)
    Conversation.objects.filter(pk=conversation.pk).update(active_leaf=parent)
    return made


@sync_to_async
def children(parent_id) -> list[Message]:
    return list(Message.objects.filter(parent_id=parent_id).order_by("id"))


@sync_to_async
def active_leaf(conversation) -> int | None:
    return Conversation.objects.get(pk=conversation.pk).active_leaf_id


@sync_to_async
def rows(conversation) -> list[tuple]:
    return list(
        Message.objects.filter(conversation=conversation)
        .order_by("id")
        .values_list("pk", "parent_id", "role", "content")
    )


async def redraw(tab) -> str:
    """The frames of the next thread redraw, up to its last message."""
    return await tab.until(lambda f: REDRAW in f)


async def finished(tab, message_id):
    """The reply's ending, once the tab has been sent it (not just shown it streaming)."""
    await tab.until(
        lambda f: any(int(m) == message_id and s != "streaming" for m, s in FINAL.findall(f))
    )
    return await wait_for_status(message_id)


async def test_regenerate_twice_keeps_three_versions_and_2_of_3_is_navigable(
    owner, chat_model, fake
):
    fake.configure(tokens=["first ", "answer"])
    conversation = await new_conversation(owner, chat_model)
    question, first = (await linear(conversation, 1))[:2]
    tab = Socket(owner, conversation)
    assert await tab.open()
    replies = [first]
    for text in ("second", "third"):
        fake.configure(tokens=[text, " answer"])
        await tab.send(command="regenerate", message_id=replies[-1].pk)
        frame = await redraw(tab)
        reply = await latest_reply(conversation)
        assert f'id="msg-{reply.pk}"' in frame
        replies.append(await finished(tab, reply.pk))
    kept = await children(question.pk)
    assert [m.content for m in kept] == ["answer 1", "second answer", "third answer"]
    assert VERSIONS.findall(tab.frames[-1]) == [("3", "3")]  # the newest, on its final frame
    await tab.send(command="switch", message_id=replies[1].pk)
    frame = await redraw(tab)
    assert VERSIONS.findall(frame) == [("2", "3")]
    assert "second answer" in frame and "third answer" not in frame
    assert await active_leaf(conversation) == replies[1].pk
    await tab.send(command="switch", message_id=replies[2].pk)
    assert VERSIONS.findall(await redraw(tab)) == [("3", "3")]
    await tab.close()


async def test_editing_the_second_question_of_five_turns_keeps_the_old_branch_whole_and_only_the_new_path_is_sent(  # noqa: E501
    owner, chat_model, fake
):
    conversation = await new_conversation(owner, chat_model)
    made = await linear(conversation, 5)
    before = await rows(conversation)
    tab = Socket(owner, conversation)
    assert await tab.open()
    fake.configure(tokens=["edited ", "answer"])
    await tab.send(command="edit", message_id=made[2].pk, content="question 2, better")
    await redraw(tab)
    reply = await latest_reply(conversation)
    await finished(tab, reply.pk)
    after = await rows(conversation)
    assert after[: len(before)] == before  # all ten old turns untouched, parents included
    new_question = after[len(before)]
    assert new_question[1:] == (made[1].pk, "user", "question 2, better")
    assert after[-1][1:] == (new_question[0], "assistant", "edited answer")
    sent = streamed_bodies(fake)[-1]["messages"]
    assert [m["content"] for m in sent] == ["question 1", "answer 1", "question 2, better"]

    fake.configure(tokens=["ok"])
    await tab.send(command="send", content="and then?")
    await tab.until(lambda f: 'id="thread"' in f)
    await finished(tab, (await latest_reply(conversation)).pk)
    sent = [m["content"] for m in streamed_bodies(fake)[-1]["messages"]]
    assert sent == ["question 1", "answer 1", "question 2, better", "edited answer", "and then?"]
    assert not any("question 3" in text or "answer 2" == text for text in sent)
    await tab.close()


@pytest.fixture
def llamacpp_model(db, fake):
    from providers.models import Model, Provider

    provider = Provider.objects.create(
        name="Native", wire_format="llamacpp", base_url=fake.url, requires_key=False, enabled=True
    )
    return Model.objects.create(
        provider=provider, remote_id="fake-native", display_name="Native", enabled=True,
        prompt_format="chatml", context_window=8192,
    )  # fmt: skip


async def stopped_reply(tab, conversation, fake) -> Message:
    fake.configure(tokens=[f"w{i} " for i in range(400)], token_interval=0.01)
    await tab.send(command="send", content="Tell me a long story")
    await tab.until(lambda f: 'id="thread"' in f)
    reply = await latest_reply(conversation)
    await tab.until(lambda f: f"tail-{reply.pk}" in f)
    await asyncio.sleep(0.1)
    await tab.send(command="stop", message_id=reply.pk)
    return await finished(tab, reply.pk)


async def test_continue_extends_the_same_message_in_place_with_the_partial_text_as_the_prompt_tail(
    owner, llamacpp_model, fake
):
    conversation = await new_conversation(owner, llamacpp_model)
    tab = Socket(owner, conversation)
    assert await tab.open()
    stopped = await stopped_reply(tab, conversation, fake)
    assert stopped.status == "stopped" and stopped.content
    count = len(await rows(conversation))
    fake.configure(tokens=["and ", "the ", "end."], token_interval=0.0)
    await tab.send(command="continue", message_id=stopped.pk)
    continued = await finished(tab, stopped.pk)
    assert continued.pk == stopped.pk and continued.status == "complete"
    assert continued.content == stopped.content + "and the end."
    assert len(await rows(conversation)) == count  # no user turn, no new message
    prompt = streamed_bodies(fake)[-1]["prompt"]
    assert prompt.endswith("<|im_start|>assistant\n" + stopped.content)
    assert "Continue" not in prompt
    assert continued.completion_tokens == stopped.completion_tokens + 3
    ledger = await sync_to_async(list)(
        UsageRecord.objects.filter(message_id=stopped.pk).order_by("id")
    )
    assert [(r.purpose, r.status) for r in ledger] == [
        ("reply", "stopped"),
        ("continue", "complete"),
    ]
    assert ledger[1].completion_tokens == 3
    assert tab.text_of(stopped.pk) == shown(continued.content)  # the page redrew it whole
    await tab.close()


async def test_continue_on_a_chat_backend_uses_a_hidden_instruction_or_prefill_and_stores_neither(
    owner, chat_model, fake
):
    conversation = await new_conversation(owner, chat_model)
    tab = Socket(owner, conversation)
    assert await tab.open()
    stopped = await stopped_reply(tab, conversation, fake)
    fake.configure(tokens=[" more"], token_interval=0.0)
    await tab.send(command="continue", message_id=stopped.pk)
    await finished(tab, stopped.pk)
    sent = streamed_bodies(fake)[-1]["messages"]
    assert sent[-2:] == [
        {"role": "assistant", "content": stopped.content},
        {"role": "user", "content": HIDDEN_INSTRUCTION},
    ]
    chat_model.continue_mode = "prefill"
    await sync_to_async(chat_model.save)()
    # Stopped again (as if by the person): now continued by prefill.
    await sync_to_async(Message.objects.filter(pk=stopped.pk).update)(status="stopped")
    await tab.send(command="continue", message_id=stopped.pk)
    await finished(tab, stopped.pk)
    body = streamed_bodies(fake)[-1]
    assert body["messages"][-1] == {"role": "assistant", "content": stopped.content + " more"}
    assert body["continue_final_message"] is True and body["add_generation_prompt"] is False
    assert not await sync_to_async(Message.objects.filter(content=HIDDEN_INSTRUCTION).exists)()
    await tab.close()


async def test_a_second_continue_while_one_runs_is_refused_and_stop_works_during_a_continue(
    owner, chat_model, fake
):
    conversation = await new_conversation(owner, chat_model)
    tab = Socket(owner, conversation)
    assert await tab.open()
    stopped = await stopped_reply(tab, conversation, fake)
    fake.configure(tokens=["x "] * 500, token_interval=0.01)
    await tab.send(command="continue", message_id=stopped.pk)
    await tab.send(command="continue", message_id=stopped.pk)
    assert "already being written" in await tab.notice()
    await tab.until(lambda f: tab.text_of(stopped.pk).endswith("x x"))  # new text is arriving
    await tab.send(command="stop", message_id=stopped.pk)
    again = await finished(tab, stopped.pk)
    assert again.status == "stopped" and again.content.startswith(stopped.content + "x ")
    streamed = [b for b in streamed_bodies(fake) if b["messages"][-1]["role"] == "user"]
    assert len(streamed_bodies(fake)) == 2  # the reply, then one continuation
    assert streamed[-1]["messages"][-1]["content"] == HIDDEN_INSTRUCTION
    await tab.close()


async def test_fork_copies_exactly_the_path_up_to_the_message(owner, chat_model, fake):
    conversation = await new_conversation(owner, chat_model, system_prompt="Be brief.")
    made = await linear(conversation, 3)
    # A second version of answer 2 that the fork must not take.
    await sync_to_async(Message.objects.create)(
        conversation=conversation, parent=made[2], role="assistant", content="other answer 2"
    )
    client = await sync_to_async(logged_in)(owner)
    url = f"/c/{conversation.pk}/fork/{made[3].pk}"
    response = await sync_to_async(client.post)(url, HTTP_HX_REQUEST="true")
    assert response.status_code == 200
    copy_id = response["HX-Redirect"].strip("/").split("/")[-1]
    copy = await sync_to_async(Conversation.objects.get)(pk=copy_id)
    copied = await rows(copy)
    assert [(role, text) for _, _, role, text in copied] == [
        ("user", "question 1"), ("assistant", "answer 1"),
        ("user", "question 2"), ("assistant", "answer 2"),
    ]  # fmt: skip
    assert [parent for _, parent, _, _ in copied] == [None, *[pk for pk, *_ in copied[:-1]]]
    assert copy.active_leaf_id == copied[-1][0] and copy.system_prompt == "Be brief."
    assert len(await rows(conversation)) == 7  # the source is untouched


async def test_delete_asks_with_the_subtree_size_then_removes_it_and_keeps_the_ledger(
    owner, chat_model, fake
):
    conversation = await new_conversation(owner, chat_model)
    made = await linear(conversation, 3)
    hidden = await sync_to_async(Message.objects.create)(
        conversation=conversation, parent=made[2], role="assistant", content="hidden version"
    )
    await sync_to_async(Conversation.objects.filter(pk=conversation.pk).update)(
        active_leaf=made[-1]
    )
    spent = await sync_to_async(UsageRecord.objects.create)(
        user=owner, message=hidden, model_name="m", provider_name="p", completion_tokens=7,
        cost_source="none", status="complete",
    )  # fmt: skip
    tab = Socket(owner, conversation)
    assert await tab.open()
    await tab.send(command="delete", message_id=made[2].pk)
    ask = await tab.until(lambda f: "confirm-delete" in f)
    assert "Delete 5 messages (1 on other branches)?" in ask  # question 2 and all below
    assert len(await rows(conversation)) == 7  # asking deletes nothing
    await tab.send(command="delete", message_id=made[2].pk, confirm="4")  # a stale count
    await tab.until(lambda f: "confirm-delete" in f)
    await tab.send(command="delete", message_id=made[2].pk, confirm="5")
    assert await tab.notice() == "Deleted 5 messages (1 on other branches)."
    left = await rows(conversation)
    assert [pk for pk, *_ in left] == [made[0].pk, made[1].pk]
    assert hidden.pk not in [pk for pk, *_ in left]
    assert await active_leaf(conversation) == made[1].pk
    kept = await sync_to_async(UsageRecord.objects.get)(pk=spent.pk)
    assert (kept.message_id, kept.completion_tokens) == (None, 7)  # what was spent stays
    await tab.close()


async def test_the_chosen_path_survives_a_reload_and_a_second_socket_follows_it(
    owner, chat_model, fake
):
    conversation = await new_conversation(owner, chat_model)
    made = await linear(conversation, 2)
    other = await sync_to_async(Message.objects.create)(
        conversation=conversation, parent=made[0], role="assistant", content="the other answer"
    )
    first, second = Socket(owner, conversation), Socket(owner, conversation)
    assert await first.open() and await second.open()
    await first.send(command="switch", message_id=other.pk)
    for tab in (first, second):
        assert "the other answer" in await redraw(tab)
    page = await sync_to_async(first.client.get)(f"/c/{conversation.pk}/")
    body = page.content.decode()
    assert "the other answer" in body and "question 2" not in body
    assert ("2", "2") in VERSIONS.findall(body)
    await first.send(command="switch", message_id=made[1].pk)
    await redraw(second)
    page = await sync_to_async(first.client.get)(f"/c/{conversation.pk}/")
    assert "question 2" in page.content.decode()  # the newest branch below answer 1
    await first.close()
    await second.close()


async def test_a_reply_keeps_streaming_on_a_hidden_branch_and_shows_live_on_switching_back(
    owner, chat_model, fake
):
    conversation = await new_conversation(owner, chat_model)
    tab = Socket(owner, conversation)
    assert await tab.open()
    tokens = [f"s{i} " for i in range(300)]
    fake.configure(tokens=tokens, token_interval=0.01)
    await tab.send(command="send", content="A slow one")
    await tab.until(lambda f: 'id="thread"' in f)
    slow = await latest_reply(conversation)
    await tab.until(lambda f: is_delta(f, slow.pk))
    question = await sync_to_async(Message.objects.get)(pk=slow.parent_id)
    fake.configure(tokens=["quick"], token_interval=0.0)
    await tab.send(command="edit", message_id=question.pk, content="A quick one")
    await redraw(tab)
    quick = await latest_reply(conversation)
    assert quick.pk != slow.pk
    await finished(tab, quick.pk)
    assert (await sync_to_async(Message.objects.get)(pk=slow.pk)).status == "streaming"
    await tab.send(command="switch", message_id=question.pk)
    await redraw(tab)
    mark = len(tab.frames)
    await tab.until(lambda f: is_snapshot(f, slow.pk))
    done = await finished(tab, slow.pk)
    after = tab.frames[mark:]
    assert done.content == "".join(tokens)
    assert any(is_delta(f, slow.pk) for f in after)  # live again, not just the final
    assert text_of(after, slow.pk) == shown(done.content)  # no gap, no repeat
    await tab.close()


async def test_another_user_cannot_navigate_regenerate_continue_fork_or_delete_by_id(
    owner, intruder, chat_model, fake
):
    conversation = await new_conversation(owner, chat_model)
    made = await linear(conversation, 2, chat_model)
    await sync_to_async(Message.objects.filter(pk=made[-1].pk).update)(status="stopped")
    before = await rows(conversation)
    own = await new_conversation(intruder, chat_model)
    attacker = Socket(intruder, own)
    assert await attacker.open()
    for command in ("switch", "regenerate", "continue", "delete", "edit"):
        for message in made:
            await attacker.send(
                command=command, message_id=message.pk, content="mine now", confirm="4"
            )
            assert await attacker.notice() == "That message does not exist."
    client = await sync_to_async(logged_in)(intruder)
    for url in (f"/c/{conversation.pk}/fork/{made[1].pk}", f"/c/{own.pk}/fork/{made[1].pk}"):
        response = await sync_to_async(client.post)(url)
        assert response.status_code in (404, 409)
    assert await rows(conversation) == before
    assert await active_leaf(conversation) == made[-1].pk
    assert await sync_to_async(Conversation.objects.filter(owner=intruder).count)() == 1
    assert streamed_bodies(fake) == []
    await attacker.close()


def test_the_tree_derives_paths_versions_and_subtrees_from_parents_alone():
    tree = Tree([(1, None), (2, 1), (3, 1), (4, 3), (5, None), (6, 2)])
    assert tree.path_to(tree.leaf_for(None)) == [1, 2, 6]  # the newest leaf
    assert tree.path_to(tree.leaf_for(4)) == [1, 3, 4]
    assert tree.leaf_for(99) == 6 and tree.leaf_for(3) == 4
    assert tree.versions(3).index == 2 and tree.versions(3).previous == 2
    assert tree.versions(5).count == 2 and tree.versions(4) is None
    assert sorted(tree.subtree(1)) == [1, 2, 3, 4, 6]
