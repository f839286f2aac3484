"""Hostile input against the real server: clear refusals, the socket and the process stay up."""

import asyncio
import json

import pytest
import websockets
from asgiref.sync import sync_to_async
from django.test import Client
from django.urls import reverse

from chat.models import Conversation
from tests.chat_support import new_conversation
from tests.live_server import Daphne
from tests.ws_client import FINAL, ChatClient

pytestmark = pytest.mark.django_db(transaction=True)
NOTICE = "notice"


@pytest.fixture
def server():
    daphne = Daphne().start()
    yield daphne
    daphne.stop()


@pytest.fixture
def owner(make_user):
    return make_user("owner")


async def test_oversized_messages_and_frames_are_refused_and_the_server_stays_up(
    server, owner, chat_model, fake, cookie_for
):
    conversation = await new_conversation(owner, chat_model)
    cookie = await sync_to_async(cookie_for)(owner)
    async with ChatClient(server.url, conversation.pk, cookie) as tab:
        await tab.send(command="send", content="x" * 200_000)  # over the message limit
        assert "too large" in await tab.until(lambda f: NOTICE in f)
        await tab.send(command="send", content="still here?")  # the same socket still works
        await tab.until(lambda f: FINAL.search(f))
    async with ChatClient(server.url, conversation.pk, cookie) as tab:
        await tab.socket.send("y" * (2 << 20))  # over the server's 1 MiB frame limit
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await tab.frame(timeout=10)
        # autobahn drops the connection ("message too big") without reading the rest
        assert closed.value.rcvd is None or closed.value.rcvd.code == 1009
    async with ChatClient(server.url, conversation.pk, cookie) as tab:  # the process is fine
        await tab.send(command="send", content="and now?")
        await tab.until(lambda f: FINAL.search(f))
    assert server.process.poll() is None


async def test_junk_commands_get_refusals_on_the_real_server(server, owner, chat_model, cookie_for):
    conversation = await new_conversation(owner, chat_model)
    cookie = await sync_to_async(cookie_for)(owner)
    async with ChatClient(server.url, conversation.pk, cookie) as tab:
        for junk in ["{", "null", json.dumps({"command": "rm -rf"}), json.dumps({"command": 5})]:
            await tab.socket.send(junk)
            assert NOTICE in await tab.frame()
        await tab.socket.send(b"\x00\x01binary")
        assert NOTICE in await tab.frame()
        await tab.send(command="stop", message_id="1 OR 1=1")
        assert "does not exist" in await tab.frame()


async def test_foreign_origins_and_other_users_ids_are_refused_by_the_real_server(
    server, owner, make_user, cookie_for
):
    conversation = await new_conversation(owner)
    cookie = await sync_to_async(cookie_for)(owner)
    url = server.url.replace("http", "ws") + f"/ws/chat/{conversation.pk}/"
    for origin in ("http://evil.example", "null"):
        with pytest.raises(websockets.InvalidStatus):
            await websockets.connect(url, origin=origin, additional_headers={"Cookie": cookie})
    intruder = await sync_to_async(make_user)("intruder")
    intruder_cookie = await sync_to_async(cookie_for)(intruder)
    with pytest.raises(websockets.InvalidStatus):
        async with ChatClient(server.url, conversation.pk, intruder_cookie):
            pass
    async with ChatClient(server.url, conversation.pk, cookie) as tab:  # the owner still gets in
        await tab.send(command="sync", after=0, streaming=[])
        await asyncio.sleep(0.2)


@pytest.mark.django_db
def test_posts_without_a_csrf_token_are_refused(make_user):
    owner = make_user("owner")
    conversation = Conversation.objects.create(owner=owner, title="Keep me")
    client = Client(enforce_csrf_checks=True)
    client.force_login(owner)
    for name in ("rename", "delete", "pin", "settings"):
        response = client.post(reverse(name, args=[conversation.pk]), {"title": "csrf"})
        assert response.status_code == 403, name
    assert client.post(reverse("new_chat"), {"content": "hi"}).status_code == 403
    assert Conversation.objects.get(pk=conversation.pk).title == "Keep me"


@pytest.mark.django_db
def test_html_and_sql_in_a_system_prompt_are_stored_and_shown_as_text(make_user, chat_model):
    owner = make_user("owner")
    conversation = Conversation.objects.create(owner=owner, model=chat_model)
    client = Client()
    client.force_login(owner)
    hostile = "</textarea><script>alert(1)</script>'; DROP TABLE chat_message; --"
    response = client.post(reverse("settings", args=[conversation.pk]), {"system_prompt": hostile})
    assert response.status_code == 200
    assert b"<script>alert(1)" not in response.content
    conversation.refresh_from_db()
    assert conversation.system_prompt == hostile
    assert Conversation.objects.filter(pk=conversation.pk).exists()
