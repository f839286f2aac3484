"""Every reply is bounded: output limits upstream, hard caps in the job, quotas that hold,
frames that fit, and jobs that always end."""

import asyncio
import contextlib
from pathlib import Path

import pytest
from asgiref.sync import sync_to_async
from django.conf import settings
from django.db.models import F, Sum

from chat.governance import bounds
from chat.live import ending, events, jobs
from chat.models import Message, Quota, UsageRecord
from tests.chat_support import Socket, latest_reply, new_conversation, wait_for_status
from tests.frames import FINAL, NEW_REPLY, shown
from tests.live_server import Daphne
from tests.ws_client import ChatClient

pytestmark = pytest.mark.django_db(transaction=True)
ENDED = ("complete", "stopped", "error", "interrupted")


@pytest.fixture
def owner(make_user):
    return make_user("owner")


def last_streamed(fake) -> dict:
    """The body of the last reply request (title requests are not streamed)."""
    return [r.body for r in fake.requests if r.body and r.body.get("stream")][-1]


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


@sync_to_async
def tokens_used_today(user) -> int:
    total = UsageRecord.objects.filter(user=user).aggregate(
        t=Sum(F("prompt_tokens") + F("completion_tokens"))
    )["t"]
    return total or 0


@sync_to_async
def set_fields(instance, **fields):
    for name, value in fields.items():
        setattr(instance, name, value)
    instance.save()


async def stream_one(tab, content="go", timeout=60) -> Message:
    await tab.send(command="send", content=content)
    await tab.until_final(timeout=timeout)
    reply = await latest_reply(tab.conversation)
    return await wait_for_status(reply.pk, ENDED, timeout=timeout)


# --- an endless upstream on the real server ----------------------------------------------


async def test_an_endless_upstream_is_cut_at_the_cap_and_memory_stays_flat(
    owner, chat_model, fake, cookie_for
):
    await set_fields(chat_model, default_max_tokens=settings.MAX_REPLY_TOKENS, context_window=10**6)
    server = Daphne().start()
    try:
        conversation = await new_conversation(owner, chat_model)
        cookie = await sync_to_async(cookie_for)(owner)
        async with ChatClient(server.url, conversation.pk, cookie) as tab:
            await tab.send(command="send", content="warm up")  # imports, caches, pools
            await tab.until(lambda f: FINAL.search(f))
            before = peak = rss_bytes(server.process.pid)
            # Four bytes a character, so the byte cap is reached before the token cap.
            fake.configure(tokens=["🙂" * 64], endless=True)  # as fast as it can
            await tab.send(command="send", content="never stop")
            seen = len(tab.frames)
            deadline = asyncio.get_running_loop().time() + 60
            while not any(FINAL.search(f) for _, f in tab.frames[seen:]):
                assert asyncio.get_running_loop().time() < deadline, "the reply never ended"
                with contextlib.suppress(TimeoutError):
                    await tab.frame(timeout=0.05)
                peak = max(peak, rss_bytes(server.process.pid))
            cut = await latest_reply(conversation)
            assert cut.status == "stopped"
            assert cut.error_message == bounds.REASONS["length"]
            assert len(cut.content.encode()) <= settings.MAX_REPLY_BYTES
            assert len(cut.content.encode()) > settings.MAX_REPLY_BYTES - 256  # kept, all of it
            assert fake.wait_for_hangup() is not None  # the upstream was told to stop
            kept = len(cut.content.encode())
            growth = f"RSS grew {(peak - before) / 2**20:.1f} MB, {kept:,} bytes kept"
            print(growth)  # shown with pytest -s
            assert peak - before < 100 * 2**20, growth

            fake.configure(tokens=["next "] * 60, token_interval=0.03)
            await tab.send(command="send", content="and now a normal one")
            new = int(NEW_REPLY.search(await tab.until(lambda f: NEW_REPLY.search(f))).group(1))
            for _ in range(100):  # the saver still works: partial text lands while streaming
                row = await sync_to_async(Message.objects.get)(pk=new)
                if row.is_streaming and row.content:
                    break
                await asyncio.sleep(0.05)
            assert row.is_streaming and row.content.startswith("next ")
            done = await wait_for_status(new, ENDED, timeout=30)
            assert done.status == "complete" and done.content == "next " * 60
    finally:
        server.stop()


async def test_an_endless_stream_of_short_tokens_is_cut_at_the_token_cap(
    owner, chat_model, fake, settings
):
    settings.MAX_REPLY_TOKENS = 3000
    await set_fields(chat_model, default_max_tokens=10**5, context_window=10**6)
    fake.configure(tokens=["ab "], endless=True)
    tab = Socket(owner, await new_conversation(owner, chat_model))
    await tab.open()
    cut = await stream_one(tab, content="never stop")
    assert cut.status == "stopped" and cut.error_message == bounds.REASONS["length"]
    assert cut.content == "ab " * 3000
    assert cut.completion_tokens == 3000 and cut.tokens_estimated
    assert last_streamed(fake)["max_tokens"] == 3000
    await tab.close()


# --- output limits and quotas -------------------------------------------------------------


async def test_every_request_carries_an_output_limit_from_the_model_default(
    owner, chat_model, fake, settings
):
    tab = Socket(owner, await new_conversation(owner, chat_model))
    await tab.open()
    await stream_one(tab)
    assert last_streamed(fake)["max_tokens"] == settings.DEFAULT_REPLY_RESERVE
    await set_fields(chat_model, default_max_tokens=300, max_output_tokens=200)
    await stream_one(tab)
    assert last_streamed(fake)["max_tokens"] == 200  # the model's maximum wins
    await set_fields(tab.conversation, settings={"max_tokens": 50})
    await stream_one(tab)
    assert last_streamed(fake)["max_tokens"] == 50  # the conversation's own setting
    await tab.close()


async def test_a_60_token_daily_quota_bounds_the_request_and_the_ledger(owner, chat_model, fake):
    await sync_to_async(Quota.objects.create)(user=owner, tokens_per_day=60)
    fake.configure(tokens=["word "] * 500)
    tab = Socket(owner, await new_conversation(owner, chat_model))
    await tab.open()
    reply = await stream_one(tab, content="Write a long story")
    body = last_streamed(fake)
    assert 0 < body["max_tokens"] <= 60
    assert reply.status == "complete"
    assert await tokens_used_today(owner) <= 60
    await tab.send(command="send", content="And another one, please")
    assert "daily tokens" in await tab.notice()
    await tab.close()


async def test_a_backend_that_ignores_max_tokens_is_cut_at_the_quota(owner, chat_model, fake):
    await sync_to_async(Quota.objects.create)(user=owner, tokens_per_day=60)
    fake.configure(tokens=["word "] * 500, ignore_max_tokens=True, token_interval=0.002)
    tab = Socket(owner, await new_conversation(owner, chat_model))
    await tab.open()
    reply = await stream_one(tab, content="Write a long story")
    assert reply.status == "stopped"
    assert reply.error_message == bounds.REASONS["tokens"]
    assert reply.content.startswith("word word")
    assert await tokens_used_today(owner) <= 60
    assert fake.wait_for_hangup() is not None
    await tab.close()


async def test_replies_side_by_side_cannot_spend_the_same_quota_twice(
    owner, chat_model, fake, settings
):
    await sync_to_async(Quota.objects.create)(user=owner, tokens_per_day=300)
    fake.configure(tokens=["word "] * 500, ignore_max_tokens=True, token_interval=0.01)
    tabs = [Socket(owner, await new_conversation(owner, chat_model)) for _ in range(2)]
    for tab in tabs:
        await tab.open()
        await tab.send(command="send", content="Write a long story")
        await tab.until(lambda f: NEW_REPLY.search(f) or 'class="notice ' in f)
    for tab in tabs:
        reply = await latest_reply(tab.conversation)
        if reply is not None:
            await wait_for_status(reply.pk, ENDED, timeout=30)
        await tab.close()
    assert await tokens_used_today(owner) <= 300


# --- jobs always end ----------------------------------------------------------------------


def fail_on_call(monkeypatch, owner_object, name, on_call: int, error=RuntimeError):
    original, calls = getattr(owner_object, name), []

    def failing(*args, **kwargs):
        calls.append(1)
        if len(calls) == on_call:
            raise error("injected failure")
        return original(*args, **kwargs)

    async def failing_async(*args, **kwargs):
        calls.append(1)
        if len(calls) == on_call:
            raise error("injected failure")
        return await original(*args, **kwargs)

    is_async = asyncio.iscoroutinefunction(original) or name == "save_final"
    monkeypatch.setattr(owner_object, name, failing_async if is_async else failing)
    return calls


@pytest.mark.parametrize(
    ("where", "name", "on_call", "error"),
    [
        ("publishing a delta", "flush", 3, RuntimeError),
        ("saving the final row", "save_final", 1, OverflowError),
        ("rendering the final frame", "message_frames", 1, ValueError),
    ],
)
async def test_a_job_that_raises_ends_failed_with_its_text_and_the_process_carries_on(
    owner, chat_model, fake, monkeypatch, where, name, on_call, error
):
    target = {"flush": jobs.Job, "save_final": ending, "message_frames": events}[name]
    fail_on_call(monkeypatch, target, name, on_call, error)
    fake.configure(tokens=["piece "] * 30, token_interval=0.02)
    tab = Socket(owner, await new_conversation(owner, chat_model))
    await tab.open()
    await tab.send(command="send", content="go")
    await tab.until_final(timeout=30)
    failed = await wait_for_status((await latest_reply(tab.conversation)).pk, ENDED)
    if name == "message_frames":  # the reply itself was fine: it is shown as plain text
        assert failed.status == "complete" and "plain" in tab.frames[-1], where
    else:
        assert failed.status == "error", where
        assert failed.error_message == ending.FAILED_NOTE
        assert failed.content.startswith("piece piece"), where
    assert failed.pk not in jobs.JOBS

    monkeypatch.undo()
    fake.configure(tokens=["after "] * 60, token_interval=0.03)
    await tab.send(command="send", content="again")
    new = int(NEW_REPLY.search(await tab.until(lambda f: NEW_REPLY.search(f))).group(1))
    for _ in range(100):
        row = await sync_to_async(Message.objects.get)(pk=new)
        if row.is_streaming and row.content:
            break
        await asyncio.sleep(0.05)
    assert row.is_streaming and row.content.startswith("after "), "partial saves stopped"
    assert (await wait_for_status(new, ENDED, timeout=30)).status == "complete"
    await tab.close()


# --- frames that fit -------------------------------------------------------------------------


async def test_a_reply_at_the_size_cap_can_be_opened_refreshed_and_resynced(
    owner, chat_model, fake, cookie_for
):
    await set_fields(chat_model, default_max_tokens=settings.MAX_REPLY_TOKENS, context_window=10**6)
    # Characters that HTML escaping makes six times longer, in Markdown paragraphs.
    block = "\"<'&> " * 600 + "\n\n"
    server = Daphne().start()
    try:
        conversation = await new_conversation(owner, chat_model)
        cookie = await sync_to_async(cookie_for)(owner)
        # A reply held mid-stream with far more than one frame's worth of text.
        fake.configure(tokens=[block] * 15, stall_after=15)
        async with ChatClient(server.url, conversation.pk, cookie) as tab:
            await tab.send(command="send", content="a big one")
            await tab.until(lambda f: NEW_REPLY.search(f))
            reply = await latest_reply(conversation)
            deadline = asyncio.get_running_loop().time() + 20
            while len(tab.text_of(reply.pk)) < len(shown(block * 15)):
                assert asyncio.get_running_loop().time() < deadline
                await tab.frame(timeout=10)
        async with ChatClient(server.url, conversation.pk, cookie) as again:  # a refresh
            deadline = asyncio.get_running_loop().time() + 20
            while again.text_of(reply.pk) != shown(block * 15):
                assert asyncio.get_running_loop().time() < deadline, "no full snapshot"
                await again.frame(timeout=10)
            assert max(len(f.encode()) for _, f in again.frames) <= settings.WS_FRAME_BYTES
            await again.send(command="stop", message_id=reply.pk)
            await again.until(lambda f: FINAL.search(f))
        # Now at the cap, finished: a page that still shows it streaming resyncs.
        fake.configure(tokens=[block], endless=True)
        async with ChatClient(server.url, conversation.pk, cookie) as tab:
            await tab.send(command="send", content="to the cap")
            await tab.until(lambda f: FINAL.search(f) and 'data-status="stopped"' in f, 60)
            capped = await latest_reply(conversation)
        assert capped.error_message == bounds.REASONS["length"]
        cap_chars = settings.MAX_REPLY_TOKENS * jobs.CHARS_PER_TOKEN
        assert cap_chars - len(block) < len(capped.content) <= cap_chars
        async with ChatClient(server.url, conversation.pk, cookie) as page:
            await page.send(command="sync", after=capped.pk, streaming=[capped.pk])
            first = await page.until(lambda f: f'id="msg-{capped.pk}"' in f)
            assert 'data-status="stopped"' in first
            parts = [first]
            while True:
                try:
                    parts.append(await page.frame(timeout=2))
                except TimeoutError:
                    break
            assert all(len(p.encode()) <= settings.WS_FRAME_BYTES for p in parts)
            assert sum(p.count("&lt;") for p in parts) == capped.content.count("<")  # all of it
            await page.send(command="no such command")  # the socket is still open
            await page.until(lambda f: "Unknown command" in f)
        response = await sync_to_async(page_of)(owner, conversation)
        assert response.status_code == 200 and f'id="msg-{capped.pk}"' in response.text
        assert "1011" not in server.log_text() and "Traceback" not in server.log_text()
    finally:
        server.stop()


def page_of(user, conversation):
    from django.test import Client

    client = Client()
    client.force_login(user)
    response = client.get(f"/c/{conversation.pk}/")
    response.text = response.content.decode()
    return response
