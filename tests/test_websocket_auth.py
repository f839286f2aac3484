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


async def test_logged_in_user_from_our_origin_is_accepted(alice_chat):
    path, cookie = alice_chat
    assert await connect(path, [(b"origin", b"http://localhost"), (b"cookie", cookie)])


async def test_anonymous_websocket_is_refused(alice_chat):
    path, _ = alice_chat
    assert not await connect(path, [(b"origin", b"http://localhost")])


async def test_websocket_from_a_foreign_origin_is_refused_even_when_logged_in(alice_chat):
    path, cookie = alice_chat
    assert not await connect(path, [(b"origin", b"http://evil.example"), (b"cookie", cookie)])
    assert not await connect(path, [(b"cookie", cookie)])  # no Origin at all


async def test_a_conversation_that_does_not_exist_is_refused(alice_chat):
    _, cookie = alice_chat
    path = "/ws/chat/00000000-0000-0000-0000-000000000000/"
    assert not await connect(path, [(b"origin", b"http://localhost"), (b"cookie", cookie)])
