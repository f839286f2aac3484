"""Rights are read where they are used: an open socket sees a demotion on its next command,
and logout, password change, deactivation or a deleted session close it within a second,
whichever process made the change. Changes here are made by `manage.py shell` in a
separate process, as an admin at a terminal would make them."""

import asyncio
import os
import subprocess
import sys

import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth.models import Group

from chat.live.presence import CLOSE_DEACTIVATED, CLOSE_SIGNED_OUT, CLOSE_TOO_MANY, REASONS
from chat.models import Message, Quota
from tests.chat_support import Socket, latest_reply, new_conversation, wait_for_status
from tests.live_server import ROOT, database_env

pytestmark = pytest.mark.django_db(transaction=True)


def shell(code: str):
    """Run Python in `manage.py shell` on the test database, in another process."""
    env = {**os.environ, **database_env(), "REDIS_URL": os.environ.get("REDIS_URL", "")}
    result = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", code],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr


async def in_shell(code: str):
    await sync_to_async(shell, thread_sensitive=False)(code)


@pytest.fixture
def admin(make_user):
    return make_user("boss", is_staff=True, is_superuser=True)


@pytest.fixture
def vip_model(db, chat_model):
    """A model only the 'vip' group may use (and superusers, who may use everything)."""
    from providers.models import Model

    vip = Model.objects.create(
        provider=chat_model.provider, remote_id="vip-model", display_name="VIP", enabled=True
    )
    vip.allowed_groups.add(Group.objects.create(name="vip"))
    return vip


async def test_a_demoted_admin_loses_superuser_rights_and_quota_exemption_on_the_open_socket(
    admin, chat_model, vip_model, fake
):
    @sync_to_async
    def everyone_limited():
        team = Group.objects.create(name="everyone")
        admin.groups.add(team)
        Quota.objects.create(group=team, requests_per_minute=0)

    await everyone_limited()
    tab = Socket(admin, await new_conversation(admin, chat_model))
    await tab.open()
    await tab.send(command="send", content="as an admin", model=vip_model.pk)
    reply_id, status = await tab.until_final()
    assert status == "complete"  # a superuser may use it, and staff are exempt from quotas

    await in_shell(
        "from django.contrib.auth.models import User; "
        "u = User.objects.get(username='boss'); u.is_superuser = u.is_staff = False; u.save()"
    )
    await tab.send(command="send", content="still an admin?", model=vip_model.pk)
    assert "not available to you" in await tab.notice()
    await tab.send(command="send", content="no quota for me?", model=chat_model.pk)
    assert "0 requests per minute" in await tab.notice()
    refused = Message.objects.filter(content__in=["still an admin?", "no quota for me?"])
    assert await sync_to_async(refused.count)() == 0
    await tab.close()


@pytest.mark.parametrize(
    ("change", "code", "reason"),
    [
        ("logout", None, "signed_out"),
        (
            "password change",
            "u = User.objects.get(username='owner'); u.set_password('a-new-pass-123'); u.save()",
            "password_changed",
        ),
        (
            "deactivation",
            "User.objects.filter(username='owner').update(is_active=False)",
            "deactivated",
        ),
        (
            "session deletion",
            "from django.contrib.sessions.models import Session; Session.objects.all().delete()",
            "signed_out",
        ),
    ],
)
async def test_ending_a_session_or_account_closes_its_sockets_within_a_second(
    make_user, chat_model, change, code, reason
):
    owner = await sync_to_async(make_user)("owner")
    tab = Socket(owner, await new_conversation(owner, chat_model))
    await tab.open()
    await tab.send(command="sync", after=0, streaming=[])
    if code is None:
        await sync_to_async(tab.client.logout)()
    else:
        await in_shell("from django.contrib.auth.models import User; " + code)
    started = asyncio.get_running_loop().time()
    code_seen = await tab.closed_with(timeout=3)
    elapsed = asyncio.get_running_loop().time() - started
    expected = CLOSE_DEACTIVATED if reason == "deactivated" else CLOSE_SIGNED_OUT
    assert code_seen == expected, change
    assert elapsed < 1.0, f"{change}: closed after {elapsed:.2f} s"
    assert any(REASONS[reason][1].split(".")[0] in frame for frame in tab.frames), change


async def test_a_password_change_through_the_site_closes_sockets_and_the_browser_goes_on(
    make_user, chat_model
):
    owner = await sync_to_async(make_user)("owner")
    conversation = await new_conversation(owner, chat_model)
    tab = Socket(owner, conversation)
    await tab.open()
    response = await sync_to_async(tab.client.post)(
        "/accounts/password/",
        {
            "old_password": "a-long-passphrase-1",
            "new_password1": "another-long-pass-2",
            "new_password2": "another-long-pass-2",
        },
    )
    assert response.status_code == 302
    assert await tab.closed_with(timeout=3) == CLOSE_SIGNED_OUT
    # The browser that changed it keeps its (renewed) session: a reload gets back in.
    from channels.testing import WebsocketCommunicator

    from chatsite.asgi import application
    from tests.chat_support import cookie_of

    again = WebsocketCommunicator(
        application,
        f"/ws/chat/{conversation.pk}/",
        headers=[(b"origin", b"http://localhost"), (b"host", b"localhost"),
                 (b"cookie", cookie_of(tab.client))],
    )  # fmt: skip
    connected, _ = await again.connect(timeout=10)
    assert connected
    await again.disconnect()


async def test_a_deactivation_from_a_shell_stops_the_running_reply(make_user, chat_model, fake):
    owner = await sync_to_async(make_user)("owner")
    fake.configure(tokens=["slow "] * 400, token_interval=0.02)
    tab = Socket(owner, await new_conversation(owner, chat_model))
    await tab.open()
    await tab.send(command="send", content="go")
    await tab.until(lambda f: 'id="thread"' in f)
    reply = await latest_reply(tab.conversation)
    await in_shell(
        "from django.contrib.auth.models import User; "
        "User.objects.filter(username='owner').update(is_active=False)"
    )
    stopped = await wait_for_status(reply.pk, timeout=5)
    assert stopped.status == "stopped" and stopped.content.startswith("slow")


async def test_open_sockets_per_user_are_capped(make_user, chat_model, settings):
    settings.MAX_SOCKETS_PER_USER = 2
    owner = await sync_to_async(make_user)("owner")
    conversation = await new_conversation(owner, chat_model)
    tabs = [Socket(owner, conversation) for _ in range(3)]
    for tab in tabs[:2]:
        assert await tab.open()
    await tabs[2].open()
    assert await tabs[2].closed_with() == CLOSE_TOO_MANY
    assert any("chat tabs open" in frame for frame in tabs[2].frames)
    await tabs[0].close()
    again = Socket(owner, conversation)
    assert await again.open()  # one closed, so one more may open
    await again.send(command="sync", after=0, streaming=[])
    await again.close()
    await tabs[1].close()


async def test_each_account_counts_only_its_own_open_sockets():
    from chat.live import presence

    alice, bob, carol = 900_001, 900_002, 900_003  # no account of another test's

    def tab(user_id):
        return presence.Presence(user_id, "session", "hash", socket=None)

    presence.join("a1", tab(alice))
    presence.join("a2", tab(alice))
    presence.join("b1", tab(bob))
    presence.join("a2", tab(alice))  # joined again: still one socket
    assert [presence.count_for(who) for who in (alice, bob, carol)] == [2, 1, 0]
    for channel in ("a1", "a1", "b1"):  # leaving twice counts once
        presence.leave(channel)
    assert [presence.count_for(who) for who in (alice, bob)] == [1, 0]
    presence.leave("a2")
    assert presence.count_for(alice) == 0
