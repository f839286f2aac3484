"""Honest metering: a failure before any output is free, and title calls are metered."""

import asyncio

import pytest
from asgiref.sync import sync_to_async

from chat.governance import quotas
from chat.models import Quota, SiteSettings, UsageRecord
from providers.models import Model, Provider
from tests.chat_support import Socket, latest_reply, new_conversation, wait_for_status
from tests.live_server import free_port

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def owner(make_user):
    return make_user("owner")


async def poll(read, timeout=10.0):
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        value = await sync_to_async(read)()
        if value:
            return value
        await asyncio.sleep(0.05)
    raise AssertionError("nothing came")


async def test_a_backend_that_is_down_costs_nothing_and_leaves_the_quota_untouched(
    owner, chat_model
):
    @sync_to_async
    def point_at_a_closed_port():
        Provider.objects.filter(pk=chat_model.provider_id).update(
            base_url=f"http://127.0.0.1:{free_port()}/v1"
        )
        Quota.objects.create(user=owner, tokens_per_day=10_000)

    await point_at_a_closed_port()
    tab = Socket(owner, await new_conversation(owner, chat_model))
    await tab.open()
    await tab.send(command="send", content="anyone there?")
    await tab.until_final(timeout=20)
    reply = await wait_for_status((await latest_reply(tab.conversation)).pk)
    assert reply.status == "error" and reply.error_kind == "unavailable"
    row = await sync_to_async(UsageRecord.objects.get)(message_id=reply.pk)
    assert (row.status, row.prompt_tokens, row.completion_tokens, row.cost) == ("error", 0, 0, 0)
    used = await sync_to_async(quotas.check)(owner, 0)
    assert used.tokens_left == 10_000
    await tab.close()


async def test_a_new_conversation_title_call_is_in_the_ledger_and_counts(owner, chat_model, fake):
    fake.configure(tokens=["A", " fine", " title"])
    tab = Socket(owner, await new_conversation(owner, chat_model))
    await tab.open()
    await tab.send(command="send", content="What is a good title?")
    await tab.until_final()
    title = await poll(
        lambda: UsageRecord.objects.filter(purpose="title", status="complete").first()
    )
    assert title.user_id == owner.pk and title.message_id is None
    assert title.prompt_tokens > 0 and title.completion_tokens == 3
    titled = await poll(lambda: [r for r in fake.requests if r.body and not r.body["stream"]])
    assert titled[0].body["max_tokens"] == 24
    used = await sync_to_async(quotas.usage_of)(owner, title.created)
    replies = await sync_to_async(
        lambda: sum(r.total_tokens for r in UsageRecord.objects.filter(purpose="reply"))
    )()
    assert used.tokens_today == replies + title.total_tokens  # titles count against quotas
    await tab.close()


async def test_titles_can_be_turned_off_or_sent_to_a_chosen_model(
    owner, chat_model, fake, started_jobs
):
    @sync_to_async
    def choose(mode, model=None):
        SiteSettings.objects.update_or_create(pk=1, defaults={"titles": mode, "title_model": model})

    await choose("off")
    tab = Socket(owner, await new_conversation(owner, chat_model))
    await tab.open()
    await tab.send(command="send", content="no title call, please")
    await tab.until_final()
    await asyncio.wait_for(started_jobs[-1].task, 10)  # the job, and what it does after
    assert not [r for r in fake.requests if r.body and not r.body["stream"]]
    assert not await sync_to_async(UsageRecord.objects.filter(purpose="title").exists)()
    await tab.close()

    cheap = await sync_to_async(Model.objects.create)(
        provider=chat_model.provider, remote_id="tiny-titler", display_name="Tiny", enabled=True
    )
    await choose("chosen", cheap)
    tab = Socket(owner, await new_conversation(owner, chat_model))
    await tab.open()
    await tab.send(command="send", content="title me with the cheap one")
    await tab.until_final()
    record = await poll(
        lambda: UsageRecord.objects.filter(purpose="title", status="complete").first()
    )
    assert record.model_id == cheap.pk
    asked = [r.body["model"] for r in fake.requests if r.body and not r.body["stream"]]
    assert asked == ["tiny-titler"]
    await tab.close()


async def test_no_title_call_when_the_quota_has_no_room_for_it(
    owner, chat_model, fake, started_jobs
):
    await sync_to_async(Quota.objects.create)(user=owner, tokens_per_day=40)
    fake.configure(tokens=["ok"])
    tab = Socket(owner, await new_conversation(owner, chat_model))
    await tab.open()
    await tab.send(command="send", content="hello")
    await tab.until_final()
    await asyncio.wait_for(started_jobs[-1].task, 10)
    assert not await sync_to_async(UsageRecord.objects.filter(purpose="title").exists)()
    await tab.close()


async def test_title_calls_wait_their_turn_under_load(owner, chat_model, fake, settings):
    settings.MAX_TITLE_CALLS = 1
    settings.MAX_CONCURRENT_GENERATIONS = 10  # three replies at once are allowed
    fake.configure(tokens=["Short", " title"], whole_delay=0.3)
    tabs = [Socket(owner, await new_conversation(owner, chat_model)) for _ in range(3)]
    for tab in tabs:
        await tab.open()
    for tab in tabs:
        await tab.send(command="send", content="three conversations start at once")
    asked = await poll(
        lambda: len([r for r in fake.requests if r.body and not r.body["stream"]]) == 3 and fake
    )
    starts = sorted(r.started for r in asked.requests if r.body and not r.body["stream"])
    # One title call at a time: each starts only once the one before has answered.
    gaps = [later - earlier for earlier, later in zip(starts, starts[1:], strict=False)]
    assert len(gaps) == 2 and min(gaps) >= 0.28
    for tab in tabs:
        await tab.close()


@pytest.mark.parametrize(
    "usage",
    [
        {"prompt_tokens": 2**70},
        {"prompt_tokens": -5},
        {"completion_tokens": "many"},
        {"completion_tokens": 3_000_000_000},  # past a PostgreSQL integer
        {"prompt_tokens": 1.5},
        {"estimated_cost": "NaN"},
        {"estimated_cost": 1e300},
        {"estimated_cost": -1},
    ],
)
async def test_impossible_usage_figures_from_a_backend_are_replaced_by_estimates(
    owner, chat_model, fake, usage
):
    fake.configure(tokens=["Hello", " there"], usage_override=usage)
    tab = Socket(owner, await new_conversation(owner, chat_model))
    await tab.open()
    await tab.send(command="send", content="hi")
    await tab.until_final(timeout=20)
    reply = await wait_for_status((await latest_reply(tab.conversation)).pk)
    assert (reply.status, reply.content) == ("complete", "Hello there")
    assert reply.tokens_estimated == any("tokens" in name for name in usage)
    assert 0 <= reply.prompt_tokens < 2**31 and 0 <= reply.completion_tokens < 2**31
    assert reply.cost is None or 0 <= reply.cost < 10**6
    await tab.close()
