"""Every backend's thinking comes out as ReasoningDelta, and the answer without tags.

Each wire format is replayed through the loopback fake with thinking in a delta
field (`reasoning_content`, `reasoning`) where the format has one, and as
`<think>` tags in the text: split across chunks, never closed, or only closed
(the prompt template opened it).
"""

from contextlib import aclosing

import pytest

from providers import client
from providers.base import AnswerWasReasoning, ReasoningDelta, TextDelta
from providers.reasoning import ThinkTags, answer_only
from tests.test_provider_streams import FORMATS, endpoint, request

ANSWER = ["The ", "answer", " is 4."]


async def events_of(fake, wire, req=None):
    events = []
    async with aclosing(client.stream(endpoint(fake, wire), req or request())) as stream:
        async for event in stream:
            events.append(event)
    return events


def split(events):
    """(reasoning, answer) as a page would show them, following AnswerWasReasoning."""
    reasoning, answer = "", ""
    for event in events:
        if isinstance(event, AnswerWasReasoning):
            reasoning, answer = reasoning + answer, ""
        elif isinstance(event, ReasoningDelta):
            reasoning += event.text
        elif isinstance(event, TextDelta):
            answer += event.text
    return reasoning, answer


@pytest.mark.parametrize("field", ["reasoning_content", "reasoning"])
@pytest.mark.parametrize("wire", ["openai", "workers_ai"])
async def test_reasoning_delta_fields(fake, wire, field):
    fake.configure(reasoning=["Two ", "plus two."], reasoning_field=field, tokens=ANSWER)
    events = await events_of(fake, wire)
    assert [e.text for e in events if isinstance(e, ReasoningDelta)] == ["Two ", "plus two."]
    assert split(events) == ("Two plus two.", "The answer is 4.")


@pytest.mark.parametrize("wire", FORMATS)
async def test_think_tags_split_across_chunks(fake, wire):
    fake.configure(tokens=["<th", "ink>", "Two plus", " two.</th", "ink>", "\n\n", *ANSWER])
    events = await events_of(fake, wire)
    assert any(isinstance(e, ReasoningDelta) for e in events)
    assert split(events) == ("Two plus two.", "The answer is 4.")
    assert "<" not in split(events)[1]


@pytest.mark.parametrize("wire", FORMATS)
async def test_an_unclosed_think_block_is_reasoning_to_the_end(fake, wire):
    fake.configure(tokens=["<think>", "Hmm, ", "still thinking"])
    events = await events_of(fake, wire)
    assert split(events) == ("Hmm, still thinking", "")
    assert not any(isinstance(e, TextDelta) for e in events)


@pytest.mark.parametrize("wire", FORMATS)
async def test_a_closing_tag_only_moves_the_text_before_it_to_reasoning(fake, wire):
    fake.configure(tokens=["Two plus", " two.", "</think>", "\n\n", *ANSWER])
    events = await events_of(fake, wire)
    assert any(isinstance(e, AnswerWasReasoning) for e in events)
    assert split(events) == ("Two plus two.", "The answer is 4.")


@pytest.mark.parametrize("wire", ["llamacpp", "workers_ai"])
async def test_a_prompt_that_opens_the_block_streams_reasoning_from_the_start(fake, wire):
    """With a thinking prompt format the template opened `<think>`: only `</think>` comes,
    and the text before it is reasoning from its first token, not moved afterwards."""
    fake.configure(tokens=["Two plus", " two.", "</think>", "\n\n", *ANSWER])
    req = request(prompt_format="chatml-think", raw_prompt=True)
    events = await events_of(fake, wire, req)
    assert not any(isinstance(e, AnswerWasReasoning) for e in events)
    assert [e.text for e in events if isinstance(e, ReasoningDelta)] == ["Two plus", " two."]
    assert split(events) == ("Two plus two.", "The answer is 4.")
    if wire == "llamacpp":
        assert fake.requests[-1].body["prompt"].endswith("<|im_start|>assistant\n<think>\n")


@pytest.mark.parametrize("wire", FORMATS)
async def test_an_answer_that_only_mentions_the_tags_keeps_them(fake, wire):
    fake.configure(tokens=["Use ", "<think>", " and ", "</think>", " tags."])
    events = await events_of(fake, wire)
    assert split(events) == ("", "Use <think> and </think> tags.")


async def test_a_non_streamed_reply_drops_its_thinking(fake):
    fake.configure(tokens=["<think>", "Titles are short.", "</think>", "Colour names"])
    completion = await client.complete(endpoint(fake, "openai"), request())
    assert completion.text == "Colour names"


@pytest.mark.parametrize(
    "chunks",
    [["<think>a</think>b"], ["<", "t", "h", "i", "n", "k", ">a<", "/", "think", ">", "b"]],
)
def test_tags_split_at_every_character(chunks):
    tags = ThinkTags()
    events = [event for chunk in chunks for event in tags.feed(chunk)] + tags.flush()
    assert split(events) == ("a", "b")


def test_a_lone_angle_bracket_is_held_only_until_it_cannot_be_a_tag():
    tags = ThinkTags()
    assert split(tags.feed("x <")) == ("", "x ")
    assert split(tags.feed("b> bold")) == ("", "<b> bold")


def test_answer_only():
    assert answer_only("<think>x</think>\n\nTitle") == "Title"
    assert answer_only("x</think>Title") == "Title"
    assert answer_only("x</think>Title", opened=True) == "Title"
    assert answer_only("Plain") == "Plain"
