"""The websocket door: only logged-in users, only from our own origin, only their own chats."""

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator

from chatsite.asgi import application
from tests.chat_support import new_conversation, session_cookie

pytestmark = pytest.mark.django_db(transaction=True)


async def connect(path, headers):
    communicator = WebsocketCommunicator(application, path, headers=headers)
    connected, _ = await communicator.connect(timeout=5)
    await communicator.disconnect()
    return connected


@pytest.fixture
async def alice_chat(make_user):
    user = await sync_to_async(make_user)("alice")
    conversation = await new_conversation(user)
    cookie = await sync_to_async(session_cookie)(user)
    return f"/ws/chat/{conversation.pk}/", cookie


HOST = (b"host", b"localhost")


async def test_logged_in_user_from_our_origin_is_accepted(alice_chat):
    path, cookie = alice_chat
    assert await connect(path, [(b"origin", b"http://localhost"), HOST, (b"cookie", cookie)])


async def test_anonymous_websocket_is_refused(alice_chat):
    path, _ = alice_chat
    assert not await connect(path, [(b"origin", b"http://localhost"), HOST])


@pytest.mark.parametrize(
    ("origin", "host"),
    [
        (b"http://localhost:8080", b"localhost"),  # another port on the same host
        (b"https://localhost", b"localhost"),  # another scheme
        (b"http://localhost", b"localhost:8000"),
        (b"http://localhost.evil.example", b"localhost"),
        (b"http://evil.example", b"evil.example"),  # a host name outside ALLOWED_HOSTS
    ],
)
async def test_the_origin_must_match_scheme_host_and_port(alice_chat, origin, host):
    path, cookie = alice_chat
    assert not await connect(path, [(b"origin", origin), (b"host", host), (b"cookie", cookie)])


async def test_the_same_origin_with_its_port_and_a_trusted_origin_are_accepted(
    alice_chat, settings
):
    path, cookie = alice_chat
    same = [(b"origin", b"http://localhost:8000"), (b"host", b"localhost:8000")]
    assert await connect(path, [*same, (b"cookie", cookie)])
    proxied = [(b"origin", b"https://localhost"), HOST, (b"x-forwarded-proto", b"https")]
    assert await connect(path, [*proxied, (b"cookie", cookie)])
    settings.CSRF_TRUSTED_ORIGINS = ["https://chat.example.com:8443"]
    trusted = [(b"origin", b"https://chat.example.com:8443"), HOST]
    assert await connect(path, [*trusted, (b"cookie", cookie)])


async def test_websocket_from_a_foreign_origin_is_refused_even_when_logged_in(alice_chat):
    path, cookie = alice_chat
    assert not await connect(path, [(b"origin", b"http://evil.example"), HOST, (b"cookie", cookie)])
    assert not await connect(path, [HOST, (b"cookie", cookie)])  # no Origin at all


async def test_a_conversation_that_does_not_exist_is_refused(alice_chat):
    _, cookie = alice_chat
    path = "/ws/chat/00000000-0000-0000-0000-000000000000/"
    assert not await connect(path, [(b"origin", b"http://localhost"), HOST, (b"cookie", cookie)])
