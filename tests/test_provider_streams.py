"""Each wire format against the loopback fake: streaming, usage, errors, stop."""

import asyncio
from contextlib import aclosing
from decimal import Decimal

import pytest

from providers import client
from providers.base import ChatRequest, Endpoint, Finish, ProviderError, TextDelta, Usage
from tests.fake_backend import DEFAULT_TOKENS

FORMATS = ["openai", "llamacpp", "workers_ai"]
KEY = "sk-secret-key-123"


def endpoint(fake, wire, **overrides):
    base = {
        "openai": fake.url + "/v1",
        "llamacpp": fake.url,
        "workers_ai": fake.url + "/client/v4",
    }[wire]
    settings = dict(
        wire_format=wire,
        base_url=base,
        api_key=KEY,
        account_id="acct-1",
        connect_timeout=2,
        read_timeout=5,
        total_timeout=20,
    )
    settings.update(overrides)
    return Endpoint(**settings)


def request(**overrides):
    values = dict(
        model="@cf/fake/model",
        messages=[{"role": "user", "content": "Name three colors."}],
        max_tokens=64,
        prompt_format="chatml",
    )
    values.update(overrides)
    return ChatRequest(**values)


async def collect(ep, req=None):
    events = []
    async with aclosing(client.stream(ep, req or request())) as stream:
        async for event in stream:
            events.append(event)
    return events


def text_of(events):
    return "".join(e.text for e in events if isinstance(e, TextDelta))


async def error_of(ep, req=None) -> ProviderError:
    with pytest.raises(ProviderError) as caught:
        await collect(ep, req)
    return caught.value


@pytest.mark.parametrize("wire", FORMATS)
async def test_reply_streams_in_order_and_finishes(fake, wire):
    events = await collect(endpoint(fake, wire))
    assert text_of(events) == "".join(DEFAULT_TOKENS)
    assert sum(isinstance(e, TextDelta) for e in events) == len(DEFAULT_TOKENS)
    assert events[-1] == Finish("stop")
    assert fake.requests[-1].headers["authorization"] == f"Bearer {KEY}"


@pytest.mark.parametrize("wire", FORMATS)
async def test_reply_cut_by_max_tokens_finishes_with_length(fake, wire):
    events = await collect(endpoint(fake, wire), request(max_tokens=3))
    assert text_of(events) == "".join(DEFAULT_TOKENS[:3])
    # Workers AI says nothing about why a stream ended.
    assert events[-1] == Finish("stop" if wire == "workers_ai" else "length")


async def test_openai_usage_and_deepinfra_estimated_cost_are_reported(fake):
    fake.configure(cost=0.0000268)
    events = await collect(endpoint(fake, "openai"))
    usage = [e for e in events if isinstance(e, Usage)]
    assert usage == [Usage(prompt_tokens=3, completion_tokens=9, cost=Decimal("0.0000268"))]
    assert fake.requests[-1].body["stream_options"] == {"include_usage": True}


async def test_openai_usage_option_is_not_sent_where_the_backend_rejects_it(fake):
    await collect(endpoint(fake, "openai", send_usage_option=False))
    assert "stream_options" not in fake.requests[-1].body


async def test_llamacpp_reports_tokens_evaluated_and_predicted(fake):
    events = await collect(endpoint(fake, "llamacpp"))
    assert Usage(prompt_tokens=5, completion_tokens=9) in events


async def test_workers_ai_usage_is_reported_when_sent(fake):
    fake.configure(usage_in_workers=True)
    events = await collect(endpoint(fake, "workers_ai"))
    assert Usage(prompt_tokens=3, completion_tokens=9) in events


async def test_llamacpp_sends_the_rendered_prompt_stops_and_its_own_parameter_names(fake):
    req = request(params={"temperature": 0.2, "top_k": 5, "repetition_penalty": 1.1}, stop=["END"])
    await collect(endpoint(fake, "llamacpp"), req)
    body = fake.requests[-1].body
    assert (
        body["prompt"] == "<|im_start|>user\nName three colors.<|im_end|>\n<|im_start|>assistant\n"
    )
    assert body["stop"] == ["<|im_end|>", "<|im_start|>", "END"]
    assert (body["n_predict"], body["temperature"], body["top_k"]) == (64, 0.2, 5)
    assert body["repeat_penalty"] == 1.1 and "repetition_penalty" not in body


async def test_workers_ai_posts_messages_to_the_account_run_url(fake):
    await collect(endpoint(fake, "workers_ai"))
    seen = fake.requests[-1]
    assert seen.path == "/client/v4/accounts/acct-1/ai/run/@cf/fake/model"
    assert seen.body["messages"][0]["content"] == "Name three colors."
    assert seen.body["max_tokens"] == 64 and seen.body["stream"] is True


async def test_workers_ai_raw_models_get_a_rendered_prompt(fake):
    await collect(endpoint(fake, "workers_ai"), request(raw_prompt=True, prompt_format="mistral"))
    body = fake.requests[-1].body
    assert body["raw"] is True and "messages" not in body
    assert body["prompt"] == "<s>[INST] Name three colors. [/INST]"


async def test_openai_passes_null_max_tokens_and_accepted_parameters(fake):
    await collect(endpoint(fake, "openai"), request(max_tokens=None, params={"top_p": 0.9}))
    body = fake.requests[-1].body
    assert body["max_tokens"] is None and body["top_p"] == 0.9
    assert body["model"] == "@cf/fake/model"


ERROR_CASES = [
    ({"status": 401, "error": "auth"}, "auth"),
    ({"status": 403, "error": "auth"}, "auth"),
    ({"status": 429, "error": "rate", "retry_after": "7"}, "rate_limited"),
    ({"status": 400, "error": "bad"}, "bad_request"),
    ({"status": 400, "error": "context"}, "context_too_long"),
    ({"status": 500, "error": "server"}, "unavailable"),
    ({"status": 504, "error": "server"}, "timeout"),
    ({"malformed_after": 2}, "malformed"),
    ({"error_after": 2}, "unavailable"),
    ({"disconnect_after": 2}, "unavailable"),
    ({"empty_stream": True}, "malformed"),
    ({"omit_end": True}, "unavailable"),
]


@pytest.mark.parametrize("wire", FORMATS)
@pytest.mark.parametrize(("behaviour", "kind"), ERROR_CASES)
async def test_every_failure_maps_onto_its_error_kind_without_leaking_the_key(
    fake, wire, behaviour, kind
):
    fake.configure(**behaviour)
    error = await error_of(endpoint(fake, wire))
    assert error.kind == kind
    assert error.message  # something a person can act on
    for text in (str(error), error.message, error.detail):
        assert KEY not in text and "Incorrect API key" not in text
    if kind == "rate_limited":
        assert error.retry_after == 7 and "7 seconds" in error.message


@pytest.mark.parametrize("wire", FORMATS)
async def test_silence_past_the_read_timeout_is_a_timeout(fake, wire):
    fake.configure(stall_after=2)
    error = await error_of(endpoint(fake, wire, read_timeout=0.3))
    assert error.kind == "timeout"


async def test_a_slow_drip_is_cut_off_by_the_total_deadline(fake):
    fake.configure(token_interval=0.15)  # never silent long enough for the read timeout
    started = asyncio.get_running_loop().time()
    error = await error_of(endpoint(fake, "openai", read_timeout=1, total_timeout=0.5))
    assert error.kind == "timeout"
    assert asyncio.get_running_loop().time() - started < 2


@pytest.mark.parametrize("wire", FORMATS)
async def test_an_endless_line_is_refused_not_buffered_forever(fake, wire):
    fake.configure(endless_line_after=1)
    error = await error_of(endpoint(fake, wire))
    assert error.kind == "malformed"


async def test_connection_refused_is_unavailable():
    ep = Endpoint(wire_format="openai", base_url="http://127.0.0.1:9/v1", connect_timeout=1)
    error = await error_of(ep)
    assert error.kind == "unavailable"


async def test_a_503_before_the_first_byte_is_retried(fake):
    fake.configure(status=503, error="server", fail_first=1)
    events = await collect(endpoint(fake, "openai"))
    assert text_of(events) == "".join(DEFAULT_TOKENS)
    assert len(fake.requests) == 2


async def test_nothing_is_retried_after_the_first_byte(fake):
    fake.configure(disconnect_after=3)
    await error_of(endpoint(fake, "openai"))
    assert len(fake.requests) == 1


@pytest.mark.parametrize("wire", FORMATS)
async def test_stop_closes_the_upstream_connection_within_a_second(fake, wire):
    fake.configure(token_interval=0.05, tokens=["tok "] * 200)
    received = asyncio.Event()

    async def consume():
        async with aclosing(client.stream(endpoint(fake, wire), request(max_tokens=None))) as s:
            async for event in s:
                if isinstance(event, TextDelta):
                    received.set()

    task = asyncio.create_task(consume())
    await asyncio.wait_for(received.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    hung_up_after = await asyncio.to_thread(fake.wait_for_hangup, 1.0)
    assert hung_up_after is not None, "the fake never saw its connection closed"


@pytest.mark.parametrize("wire", FORMATS)
async def test_split_reads_crlf_and_keepalive_comments_change_nothing(fake, wire):
    fake.configure(split_bytes=True, crlf=True, keepalive=True)
    events = await collect(endpoint(fake, wire))
    assert text_of(events) == "".join(DEFAULT_TOKENS)  # includes "Ça" and "🙂"


@pytest.mark.parametrize("wire", FORMATS)
async def test_non_streaming_call_returns_the_whole_reply(fake, wire):
    fake.configure(usage_in_workers=True)
    completion = await client.complete(endpoint(fake, wire), request())
    assert completion.text == "".join(DEFAULT_TOKENS)
    assert completion.usage.completion_tokens == len(DEFAULT_TOKENS)


@pytest.mark.parametrize("wire", FORMATS)
async def test_non_streaming_errors_map_too(fake, wire):
    fake.configure(status=401, error="auth")
    with pytest.raises(ProviderError) as caught:
        await client.complete(endpoint(fake, wire), request())
    assert caught.value.kind == "auth"


@pytest.mark.parametrize("wire", FORMATS)
async def test_discovery_lists_the_backend_models(fake, wire):
    fake.configure(models=["alpha", "beta"] if wire != "llamacpp" else ["only-model"])
    found = await client.discover(endpoint(fake, wire))
    names = [m.remote_id for m in found]
    assert names == (["alpha", "beta"] if wire != "llamacpp" else ["only-model"])
