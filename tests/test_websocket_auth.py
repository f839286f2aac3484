"""The websocket door: only logged-in users, only from our own origin."""

import pytest
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.test import Client

from chatsite.asgi import application


def session_cookie(user) -> bytes:
    client = Client()
    client.force_login(user)
    name = settings.SESSION_COOKIE_NAME
    return f"{name}={client.cookies[name].value}".encode()


async def connect(headers):
    communicator = WebsocketCommunicator(application, "/ws/chat/", headers=headers)
    connected, _ = await communicator.connect()
    await communicator.disconnect()
    return connected


@pytest.mark.django_db(transaction=True)
async def test_logged_in_user_from_our_origin_is_accepted(make_user):
    from asgiref.sync import sync_to_async

    cookie = await sync_to_async(session_cookie)(await sync_to_async(make_user)())
    assert await connect([(b"origin", b"http://localhost"), (b"cookie", cookie)])


@pytest.mark.django_db(transaction=True)
async def test_anonymous_websocket_is_refused():
    assert not await connect([(b"origin", b"http://localhost")])


@pytest.mark.django_db(transaction=True)
async def test_websocket_from_a_foreign_origin_is_refused_even_when_logged_in(make_user):
    from asgiref.sync import sync_to_async

    cookie = await sync_to_async(session_cookie)(await sync_to_async(make_user)())
    assert not await connect([(b"origin", b"http://evil.example"), (b"cookie", cookie)])
    assert not await connect([(b"cookie", cookie)])  # no Origin at all
