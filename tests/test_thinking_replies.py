"""A thinking model through the whole app: stored apart, counted, never sent back,
controlled where the model allows, and an empty answer explained."""

import pytest
from asgiref.sync import sync_to_async

from chat.live import ending
from chat.models import Message, UsageRecord
from providers.reasoning import control_for
from tests.chat_support import Socket, latest_reply, new_conversation, wait_for_status

pytestmark = pytest.mark.django_db(transaction=True)
THOUGHTS = ["Two ", "plus ", "two ", "is ", "four."]


@pytest.fixture
def owner(make_user):
    return make_user("thinker")


async def ask(owner, conversation, content="2+2?") -> tuple[Socket, Message]:
    tab = Socket(owner, conversation)
    assert await tab.open()
    await tab.send(command="send", content=content)
    await tab.until(lambda f: 'id="thread"' in f)
    reply = await latest_reply(conversation)
    await tab.until_final(reply.pk)
    return tab, await wait_for_status(reply.pk)


def streamed_bodies(fake) -> list[dict]:
    return [r.body for r in fake.requests if r.body and r.body.get("stream")]


async def test_thinking_is_stored_apart_counted_and_never_sent_back(owner, chat_model, fake):
    fake.configure(reasoning=THOUGHTS, tokens=["It ", "is ", "4."], usage=False)
    conversation = await new_conversation(owner, chat_model)
    tab, reply = await ask(owner, conversation)
    assert (reply.reasoning, reply.content) == ("Two plus two is four.", "It is 4.")
    assert reply.reasoning_seconds is not None and reply.reasoning_seconds >= 0
    # The page got the thinking live, in its own part, and the label once the answer began.
    live = tab.reply_of(reply.pk)
    assert live.reasoning == "Two plus two is four."
    assert live.label.startswith("Thought for ")
    # No usage from the backend: the estimate counts thinking and answer events alike.
    assert reply.completion_tokens == len(THOUGHTS) + 3 and reply.tokens_estimated
    ledger = await sync_to_async(UsageRecord.objects.get)(message_id=reply.pk)
    assert ledger.completion_tokens == len(THOUGHTS) + 3
    await tab.close()

    fake.configure(tokens=["Fine."])
    tab, _ = await ask(owner, conversation, "And 3+3?")
    history = streamed_bodies(fake)[-1]["messages"]
    assert {"role": "assistant", "content": "It is 4."} in history
    assert not any("plus" in m["content"] for m in history)
    await tab.close()


async def test_a_lone_closing_tag_moves_the_text_to_thinking_on_the_page_too(
    owner, chat_model, fake
):
    fake.configure(
        tokens=["Hmm, ", "let me see.", "</think>", "\n\n", "Four."], token_interval=0.02
    )
    conversation = await new_conversation(owner, chat_model)
    tab, reply = await ask(owner, conversation)
    assert (reply.reasoning, reply.content) == ("Hmm, let me see.", "Four.")
    live = tab.reply_of(reply.pk)
    assert (live.reasoning, live.text) == ("Hmm, let me see.", "Four.")
    await tab.close()


async def test_a_reply_that_only_thought_says_so(owner, chat_model, fake):
    fake.configure(reasoning=[f"thought {i} " for i in range(40)], tokens=["never reached"])
    conversation = await new_conversation(owner, chat_model, settings={"max_tokens": 8})
    tab, reply = await ask(owner, conversation)
    assert reply.content == "" and reply.reasoning.startswith("thought 0")
    assert reply.status == "stopped"
    assert reply.error_message == ending.ALL_THINKING_NOTE
    final = next(f for f in reversed(tab.frames) if f'id="msg-{reply.pk}"' in f)
    assert "whole reply budget thinking" in final
    await tab.close()


@pytest.mark.parametrize(
    ("control", "effort", "sent"),
    [
        ("effort", "high", {"reasoning_effort": "high"}),
        ("switch", "off", {"chat_template_kwargs": {"enable_thinking": False}}),
        ("switch", "low", {"chat_template_kwargs": {"enable_thinking": True}}),
        ("", "high", {}),
    ],
)
async def test_the_thinking_setting_is_sent_the_way_the_model_takes_it(
    owner, chat_model, fake, control, effort, sent
):
    chat_model.reasoning = control
    await sync_to_async(chat_model.save)()
    conversation = await new_conversation(owner, chat_model, settings={"reasoning_effort": effort})
    tab, _ = await ask(owner, conversation)
    body = streamed_bodies(fake)[-1]
    assert {k: body[k] for k in ("reasoning_effort", "chat_template_kwargs") if k in body} == sent
    await tab.close()


def test_sync_recognises_models_whose_thinking_can_be_controlled():
    assert control_for("Qwen/Qwen3-30B-A3B") == "switch"
    assert control_for("openai/gpt-oss-120b") == "effort"
    assert control_for("deepseek-ai/DeepSeek-R1-Distill-Llama-70B") == ""
    assert control_for("mistralai/Mistral-Nemo-Instruct-2407") == ""
