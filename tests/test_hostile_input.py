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
from tests.frames import FINAL
from tests.live_server import Daphne
from tests.ws_client import ChatClient

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


async def test_non_finite_numbers_deep_nesting_and_huge_ids_get_a_notice_and_no_traceback(
    server, owner, chat_model, cookie_for
):
    conversation = await new_conversation(owner, chat_model)
    cookie = await sync_to_async(cookie_for)(owner)
    hostile = [
        '{"command": "send", "content": "hi", "model": Infinity}',
        '{"command": "send", "content": "hi", "model": NaN}',
        '{"command": "sync", "after": 0, "streaming": ' + "[" * 30_000 + "]" * 30_000 + "}",
        json.dumps({"command": "sync", "after": 10**30, "streaming": []}),
        json.dumps({"command": "sync", "after": 0, "streaming": [10**30]}),
        json.dumps({"command": "send", "content": "hi", "model": 10**30}),
        json.dumps({"command": "stop", "message_id": -(10**30)}),
        json.dumps({"command": "edit", "message_id": True, "content": "x"}),
        json.dumps({"command": "sync", "after": 0, "streaming": list(range(1, 11_200))}),
        json.dumps({"command": "sync", "after": "abc", "streaming": "not a list"}),
    ]
    async with ChatClient(server.url, conversation.pk, cookie) as tab:
        for frame in hostile:
            await tab.socket.send(frame)
            answer = await tab.frame()
            assert NOTICE in answer, frame[:60]
            assert (
                "not a valid command" in answer
                or "does not exist" in answer
                or ("not available" in answer)
            ), answer
        await tab.send(command="send", content="still here?")  # the socket stayed open
        await tab.until(lambda f: FINAL.search(f))
    log = server.log_text()
    assert "Traceback" not in log and "1011" not in log


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("name", "body", "says"),
    [
        ("deep", b'{"format": "chatsite.conversation.v1", "messages": ' + b"[" * 100_000, "deep"),
        ("not json", b"{not json", "not a conversation exported from here"),
        ("wrong format", b'{"format": "other"}', "not a conversation exported from here"),
        (
            "message too long",
            json.dumps(
                {
                    "format": "chatsite.conversation.v1",
                    "messages": [{"role": "user", "content": "x" * 40_000}],
                }
            ).encode(),
            "the limit is 32,000",
        ),
        (
            "too many messages",
            json.dumps(
                {
                    "format": "chatsite.conversation.v1",
                    "messages": [{"role": "user", "content": "hi"}] * 2001,
                }
            ).encode(),
            "the limit is 2,000",
        ),
        (
            "bad role",
            json.dumps(
                {"format": "chatsite.conversation.v1", "messages": [{"role": "system"}]}
            ).encode(),
            "no role",
        ),
    ],
)
def test_bad_import_files_get_a_400_that_says_why_and_store_nothing(make_user, name, body, says):
    from django.core.files.uploadedfile import SimpleUploadedFile

    owner = make_user("owner")
    client = Client()
    client.force_login(owner)
    upload = SimpleUploadedFile("chat.json", body, "application/json")
    response = client.post(reverse("import_conversation"), {"file": upload})
    assert response.status_code == 400, name
    assert says in response.content.decode().replace("&#x27;", "'"), name
    assert not Conversation.objects.exists()


@pytest.mark.django_db
def test_an_import_file_over_the_size_limit_is_refused(make_user, settings):
    from django.core.files.uploadedfile import SimpleUploadedFile

    settings.IMPORT_MAX_BYTES = 1000
    client = Client()
    client.force_login(make_user("owner"))
    upload = SimpleUploadedFile("chat.json", b" " * 1001, "application/json")
    response = client.post(reverse("import_conversation"), {"file": upload})
    assert response.status_code == 400 and b"the limit is 1,000" in response.content


def login_attempts(base_url: str, attempts: list[tuple[str, str]]) -> list[str]:
    """POST the real login form once per (username, X-Forwarded-For); the pages answered."""
    import re

    import httpx

    pages = []
    with httpx.Client(base_url=base_url, timeout=10) as http:
        for username, forwarded in attempts:
            form = http.get("/accounts/login/").text
            token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', form).group(1)
            response = http.post(
                "/accounts/login/",
                data={"username": username, "password": "wrong", "csrfmiddlewaretoken": token},
                headers={"X-Forwarded-For": forwarded, "Referer": base_url + "/accounts/login/"},
            )
            pages.append(response.text)
    return pages


def test_a_spoofed_x_forwarded_for_does_not_reset_the_login_throttle(transactional_db):
    # One trusted proxy appends the real client (203.0.113.7); whatever the client put
    # to the left of it changes on every try. daphne's own --proxy-headers is on too,
    # as old deployment guides had it: it takes the leftmost, forged, entry.
    daphne = Daphne(extra_env={"TRUSTED_PROXY_COUNT": "1"}, args=["--proxy-headers"]).start()
    try:
        attempts = [(f"nobody{i}", f"10.9.{i}.1, 203.0.113.7") for i in range(21)]
        pages = login_attempts(daphne.url, attempts)
    finally:
        daphne.stop()
    assert all("Too many failed attempts" not in page for page in pages[:20])
    assert "Too many failed attempts" in pages[20]


def test_the_client_address_is_taken_from_the_right_of_x_forwarded_for(rf, settings):
    from chat.accounts.throttle import client_address

    request = rf.get("/", REMOTE_ADDR="10.0.0.2", HTTP_X_FORWARDED_FOR="1.1.1.1, 203.0.113.7")
    settings.TRUSTED_PROXY_COUNT = 0
    assert client_address(request) == "10.0.0.2"  # no proxy trusted: the peer itself
    settings.TRUSTED_PROXY_COUNT = 1
    assert client_address(request) == "203.0.113.7"
    settings.TRUSTED_PROXY_COUNT = 2
    assert client_address(request) == "1.1.1.1"
    junk = rf.get("/", REMOTE_ADDR="10.0.0.2", HTTP_X_FORWARDED_FOR="<script>, not-an-ip")
    assert client_address(junk) == "10.0.0.2"
