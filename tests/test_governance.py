"""Model access, quotas, the ledger, the dashboard, deactivation, login throttling, audit."""

import asyncio
import threading
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
import time_machine
from asgiref.sync import sync_to_async
from django.contrib.admin.models import LogEntry
from django.contrib.auth.models import Group
from django.core.cache import cache
from django.db import connection, connections
from django.db.models import Sum
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from chat import turns
from chat.models import Conversation, Message, Quota, UsageRecord
from tests.chat_support import Socket, latest_reply, new_conversation, wait_for_status
from tests.frames import FINAL


@pytest.fixture
def owner(make_user):
    return make_user("owner")


def conversation_of(user, model=None):
    return Conversation.objects.create(owner=user, model=model)


def record(user, model, created=None, tokens=(0, 0), cost="0"):
    row = UsageRecord.objects.create(
        user=user,
        model=model,
        model_name=model.display_name,
        provider_name=model.provider.name,
        prompt_tokens=tokens[0],
        completion_tokens=tokens[1],
        cost=Decimal(cost),
        cost_source="provider",
        status="complete",
    )
    if created:
        UsageRecord.objects.filter(pk=row.pk).update(created=created)
    return row


# --- model access -----------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
async def test_a_user_outside_a_models_groups_is_refused_on_every_path(owner, chat_model, fake):
    @sync_to_async
    def restrict():
        chat_model.allowed_groups.add(Group.objects.create(name="vip"))

    # A conversation started while the model was open to everyone.
    conversation = await new_conversation(owner, chat_model)
    tab = Socket(owner, conversation)
    await tab.open()
    await tab.send(command="send", content="first")
    await tab.until_final()
    await restrict()

    for command in (
        {"command": "send", "content": "again"},
        {"command": "send", "content": "pick it", "model": chat_model.pk},
        {"command": "regenerate"},
    ):
        await tab.send(**command)
        assert (
            "no longer available to you" in await tab.notice()
            or "not available" in (tab.frames[-1])
        )
    question = await sync_to_async(Message.objects.filter(role="user").first)()
    await tab.send(command="edit", message_id=question.pk, content="edited")
    assert "no longer available" in await tab.notice()
    await tab.close()

    @sync_to_async
    def http_paths():
        client = Client()
        client.force_login(owner)
        new = client.post(reverse("new_chat"), {"content": "hi", "model": chat_model.pk})
        choose = client.post(
            reverse("choose_model", args=[conversation.pk]), {"model": chat_model.pk}
        )
        return new.status_code, new.content.decode(), choose.status_code

    status, body, choose = await http_paths()
    assert status == 400 and "not available to you" in body
    assert choose == 403
    assert await sync_to_async(Message.objects.count)() == 2  # nothing new stored


# --- quotas -----------------------------------------------------------------------------


@pytest.mark.django_db
def test_requests_per_minute_trips_with_a_clear_message_and_resets(owner, chat_model):
    Quota.objects.create(user=owner, requests_per_minute=2)
    conversation = conversation_of(owner, chat_model)
    for _ in range(2):
        record(owner, chat_model)
    with pytest.raises(turns.Refused, match=r"2 requests per minute; try again in \d+ seconds"):
        turns.send(owner, conversation.pk, "one more")
    assert not Message.objects.exists()
    UsageRecord.objects.update(created=timezone.now() - timedelta(seconds=61))
    turns.send(owner, conversation.pk, "a minute later")
    assert Message.objects.filter(role="user").count() == 1


@pytest.mark.django_db
def test_tokens_per_day_trips_and_resets_at_midnight_utc(owner, chat_model):
    Quota.objects.create(user=owner, tokens_per_day=100)
    conversation = conversation_of(owner, chat_model)
    with time_machine.travel(datetime(2026, 3, 9, 23, 59, 58, tzinfo=UTC), tick=False):
        record(owner, chat_model, tokens=(60, 40))
        with pytest.raises(turns.Refused, match=r"resets at 00:00 UTC, in 2 seconds"):
            turns.send(owner, conversation.pk, "more")
    with time_machine.travel(datetime(2026, 3, 10, 0, 0, 1, tzinfo=UTC), tick=False):
        turns.send(owner, conversation.pk, "just after midnight")


@pytest.mark.django_db
def test_cost_per_month_trips_and_resets_on_the_first(owner, chat_model):
    Quota.objects.create(user=owner, cost_per_month=Decimal("0.50"))
    conversation = conversation_of(owner, chat_model)
    with time_machine.travel(datetime(2026, 2, 28, 23, 59, tzinfo=UTC), tick=False):
        record(owner, chat_model, cost="0.51")
        with pytest.raises(
            turns.Refused, match=r"\$0.50 budget for this month; it resets on 1 March"
        ):
            turns.send(owner, conversation.pk, "more")
    with time_machine.travel(datetime(2026, 3, 1, 0, 0, 1, tzinfo=UTC), tick=False):
        turns.send(owner, conversation.pk, "a new month")


@pytest.mark.django_db
def test_group_defaults_apply_and_a_users_own_quota_overrides_them(owner, chat_model):
    team = Group.objects.create(name="team")
    owner.groups.add(team)
    Quota.objects.create(group=team, requests_per_minute=1)
    conversation = conversation_of(owner, chat_model)
    record(owner, chat_model)
    with pytest.raises(turns.Refused, match="1 requests per minute"):
        turns.send(owner, conversation.pk, "x")
    Quota.objects.create(user=owner, requests_per_minute=5)
    turns.send(owner, conversation.pk, "own quota is larger")


@pytest.mark.django_db
def test_admins_are_exempt_unless_a_quota_is_set_for_them(make_user, chat_model):
    admin = make_user("boss", is_staff=True, is_superuser=True)
    team = Group.objects.create(name="everyone")
    admin.groups.add(team)
    Quota.objects.create(group=team, requests_per_minute=1)
    conversation = conversation_of(admin, chat_model)
    for _ in range(3):
        record(admin, chat_model)
    turns.send(admin, conversation.pk, "exempt")
    Message.objects.update(status="complete")
    Quota.objects.create(user=admin, requests_per_minute=1)
    with pytest.raises(turns.Refused, match="requests per minute"):
        turns.send(admin, conversation.pk, "not any more")


@pytest.mark.django_db(transaction=True)
async def test_a_quota_refusal_reaches_the_socket_and_stores_nothing(owner, chat_model):
    await sync_to_async(Quota.objects.create)(user=owner, requests_per_minute=0)
    tab = Socket(owner, await new_conversation(owner, chat_model))
    await tab.open()
    await tab.send(command="send", content="hello")
    assert "0 requests per minute" in await tab.notice()
    assert await sync_to_async(Message.objects.count)() == 0
    await tab.close()


# --- the ledger ---------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
async def test_the_ledger_sums_match_the_messages(owner, chat_model, fake):
    chat_model.price_input_per_mtok = Decimal("1.5")
    chat_model.price_output_per_mtok = Decimal("6")
    await sync_to_async(chat_model.save)()
    tab = Socket(owner, await new_conversation(owner, chat_model))
    await tab.open()
    for behaviour in ({"cost": 0.000042}, {}, {"usage": False}, {"disconnect_after": 3}):
        fake.configure(**behaviour)
        await tab.send(command="send", content="count me")
        await tab.until(lambda f: FINAL.search(f))
    await tab.close()

    @sync_to_async
    def sums():
        keys = ("prompt_tokens", "completion_tokens", "cost")
        messages = Message.objects.filter(role="assistant").aggregate(*[Sum(k) for k in keys])
        replies = UsageRecord.objects.filter(purpose="reply")
        ledger = replies.aggregate(*[Sum(k) for k in keys])
        rows = list(replies.order_by("id").values_list("cost_source", "tokens_estimated", "status"))
        return messages, ledger, rows

    messages, ledger, rows = await sums()
    assert {k.split("__")[0]: v for k, v in messages.items()} == {
        k.split("__")[0]: v for k, v in ledger.items()
    }
    assert rows == [
        ("provider", False, "complete"),  # DeepInfra-style estimated_cost
        ("prices", False, "complete"),  # from the model's prices
        ("prices", True, "complete"),  # no usage sent: tokens estimated, and marked so
        ("prices", True, "error"),  # cut off mid-reply: still counted
    ]


# --- the dashboard ---------------------------------------------------------------------------


@pytest.mark.django_db
def test_the_dashboard_renders_real_data_from_the_ledger(admin_client, make_user, chat_model):
    alice, bob = make_user("alice"), make_user("bob")
    record(alice, chat_model, tokens=(100, 50), cost="0.25")
    record(bob, chat_model, tokens=(10, 5), cost="0.75", created=timezone.now() - timedelta(days=2))
    record(bob, chat_model, tokens=(1, 1), cost="9", created=timezone.now() - timedelta(days=90))
    response = admin_client.get(reverse("usage_dashboard"))
    html = response.content.decode()
    assert response.status_code == 200
    assert "$1.0000" in html  # 0.25 + 0.75, the 90-day-old row is outside the range
    assert "<td>165</td>" in html  # the model's tokens in range: 150 + 15
    assert "alice" in html and "bob" in html and chat_model.display_name in html
    assert html.count("<rect") == 2 * 30  # two charts, one bar per day
    csv = admin_client.get(reverse("usage_dashboard"), {"format": "csv"}).content.decode()
    lines = csv.strip().splitlines()
    assert lines[0].startswith("day,user,provider,model")
    assert len(lines) == 3 and any(",alice," in line and ",0.25" in line for line in lines)


@pytest.mark.django_db
def test_the_dashboard_is_for_admins_only(client, owner):
    client.force_login(owner)
    assert client.get(reverse("usage_dashboard")).status_code == 302


@pytest.mark.django_db
def test_my_usage_shows_my_numbers_and_remaining_quota(client, owner, make_user, chat_model):
    Quota.objects.create(user=owner, tokens_per_day=1000)
    record(owner, chat_model, tokens=(200, 100), cost="0.10")
    record(make_user("other"), chat_model, tokens=(5000, 5000), cost="5")
    client.force_login(owner)
    html = client.get(reverse("my_usage")).content.decode()
    assert "700 of 1000 left" in html and "$0.1000" in html and "$5" not in html


# --- users ---------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
async def test_deactivating_a_user_ends_their_live_stream_and_closes_their_socket(
    owner, make_user, chat_model, fake
):
    admin = await sync_to_async(make_user)("admin", is_staff=True, is_superuser=True)
    fake.configure(tokens=["going "] * 1000, token_interval=0.01)
    tab = Socket(owner, await new_conversation(owner, chat_model))
    await tab.open()
    await tab.send(command="send", content="long one")
    await tab.until(lambda f: '<div id="tail-' in f)
    reply = await latest_reply(tab.conversation)

    @sync_to_async
    def deactivate():
        client = Client()
        client.force_login(admin)
        return client.post(
            "/admin/auth/user/", {"action": "deactivate", "_selected_action": [owner.pk]}
        )

    started = asyncio.get_running_loop().time()
    await deactivate()
    stopped = await wait_for_status(reply.pk, timeout=5)
    assert stopped.status == "stopped"
    assert asyncio.get_running_loop().time() - started < 5
    closed = await tab.communicator.receive_output(timeout=5)
    while closed["type"] != "websocket.close":
        closed = await tab.communicator.receive_output(timeout=5)
    assert closed["code"] == 4403
    assert (
        await sync_to_async(LogEntry.objects.filter(change_message__contains="Deactivated").count)()
        == 1
    )


@pytest.mark.django_db
def test_admin_approves_pending_accounts_and_makes_admins(admin_client, make_user):
    pending = make_user("pending", is_active=False)
    admin_client.post("/admin/auth/user/", {"action": "approve", "_selected_action": [pending.pk]})
    pending.refresh_from_db()
    assert pending.is_active
    admin_client.post(
        "/admin/auth/user/", {"action": "make_admin", "_selected_action": [pending.pk]}
    )
    pending.refresh_from_db()
    assert pending.is_staff and pending.is_superuser


@pytest.mark.django_db
def test_admin_actions_on_providers_and_keys_are_in_the_audit_log(admin_client, chat_model):
    provider = chat_model.provider
    admin_client.post(
        "/admin/providers/provider/", {"action": "disable", "_selected_action": [provider.pk]}
    )
    admin_client.post(
        f"/admin/providers/provider/{provider.pk}/change/",
        {
            "name": provider.name,
            "wire_format": "openai",
            "base_url": provider.base_url,
            "api_key": "sk-new-secret",
            "connect_timeout": 5,
            "read_timeout": 30,
            "total_timeout": 300,
            "extra_headers": "{}",
        },
    )
    entries = [e.get_change_message() for e in LogEntry.objects.order_by("action_time")]
    assert entries[0] == "Disabled."
    assert "API key" in entries[1] and "sk-new-secret" not in " ".join(entries)
    page = admin_client.get("/admin/admin/logentry/").content.decode()
    assert "Disabled." in page and "sk-new-secret" not in page


# --- logins ----------------------------------------------------------------------------------


@pytest.mark.django_db
def test_repeated_bad_logins_are_throttled_even_with_the_right_password(client, make_user):
    cache.clear()
    make_user("alice", password="the-right-password-1")
    for _ in range(5):
        response = client.post(reverse("login"), {"username": "alice", "password": "wrong"})
        assert "Too many" not in response.content.decode()
    response = client.post(
        reverse("login"), {"username": "alice", "password": "the-right-password-1"}
    )
    assert response.status_code == 200
    assert "Too many failed attempts. Try again in 15 minutes." in response.content.decode()
    cache.clear()  # the window passes
    response = client.post(
        reverse("login"), {"username": "alice", "password": "the-right-password-1"}
    )
    assert response.status_code == 302


@pytest.mark.django_db
def test_changing_the_password_logs_out_the_other_sessions(make_user):
    make_user("alice", password="old-password-long-1")
    laptop, phone = Client(), Client()
    for device in (laptop, phone):
        assert device.login(username="alice", password="old-password-long-1")
    new = "new-password-long-2"
    laptop.post(
        reverse("password_change"),
        {"old_password": "old-password-long-1", "new_password1": new, "new_password2": new},
    )
    assert laptop.get(reverse("home")).status_code == 200
    assert phone.get(reverse("home")).status_code == 302


@pytest.mark.django_db(transaction=True)
@pytest.mark.skipif(
    connection.vendor != "postgresql",
    reason="SQLite runs every start on one thread; the race needs PostgreSQL (CI's second pass)",
)
@pytest.mark.parametrize("cap", [1, 3])
def test_starts_racing_in_parallel_never_pass_the_concurrency_cap(
    make_user, chat_model, settings, cap
):
    """Each start writes its reply before it takes the account's lock, and must still
    count every other start that committed first, and never itself."""
    settings.MAX_CONCURRENT_GENERATIONS = cap
    owner = make_user("racer")  # a first start each: the row they lock does not exist yet
    conversations = [Conversation.objects.create(owner=owner, model=chat_model) for _ in range(8)]
    barrier, outcomes = threading.Barrier(len(conversations)), []

    def start(conversation):
        try:
            barrier.wait()
            turns.send(owner, conversation.pk, "go")
            outcomes.append("started")
        except turns.Refused:
            outcomes.append("refused")
        finally:
            connections.close_all()

    threads = [threading.Thread(target=start, args=(c,)) for c in conversations]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert sorted(outcomes) == ["refused"] * (8 - cap) + ["started"] * cap
    streaming = Message.objects.filter(conversation__owner=owner, status="streaming")
    assert streaming.count() == cap
    assert UsageRecord.objects.filter(user=owner, status="streaming").count() == cap
    assert Message.objects.filter(conversation__owner=owner, role="user").count() == cap
