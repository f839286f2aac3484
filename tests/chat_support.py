"""Helpers for driving the chat websocket in tests."""

import asyncio
import html

from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.test import Client

from chat.models import Conversation, Message
from chatsite.asgi import application
from tests.frames import FINAL, NOTICE, reply_of, text_of


def logged_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def cookie_of(client: Client) -> bytes:
    name = settings.SESSION_COOKIE_NAME
    return f"{name}={client.cookies[name].value}".encode()


def session_cookie(user) -> bytes:
    return cookie_of(logged_in(user))


class Socket:
    """A logged-in browser tab on one conversation, recording every frame."""

    def __init__(self, user, conversation):
        self.user, self.conversation = user, conversation
        self.frames: list[str] = []
        self.communicator = None
        self.client: Client | None = None  # the browser session behind the socket

    async def open(self) -> bool:
        self.client = await sync_to_async(logged_in)(self.user)
        cookie = cookie_of(self.client)
        self.communicator = WebsocketCommunicator(
            application,
            f"/ws/chat/{self.conversation.pk}/",
            headers=[
                (b"origin", b"http://localhost"),
                (b"host", b"localhost"),
                (b"cookie", cookie),
            ],
        )
        connected, _ = await self.communicator.connect(timeout=10)
        return connected

    async def send(self, **command):
        await self.communicator.send_json_to(command)

    async def next_frame(self, timeout=10.0) -> str:
        frame = await self.communicator.receive_from(timeout=timeout)
        self.frames.append(frame)
        return frame

    async def until(self, predicate, timeout=20.0) -> str:
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                raise AssertionError(f"no matching frame; got {self.frames[-5:]}")
            frame = await self.next_frame(timeout=remaining)
            if predicate(frame):
                return frame

    async def until_final(self, message_id=None, timeout=20.0) -> tuple[int, str]:
        frame = await self.until(
            lambda f: any(message_id in (None, int(m)) for m, _ in FINAL.findall(f)), timeout
        )
        found = [(int(m), s) for m, s in FINAL.findall(frame) if message_id in (None, int(m))]
        return found[0]

    async def notice(self, timeout=10.0) -> str:
        frame = await self.until(lambda f: NOTICE.search(f), timeout)
        return html.unescape(NOTICE.search(frame).group(1))

    async def close(self):
        await self.communicator.disconnect()

    async def closed_with(self, timeout=5.0) -> int:
        """The close code the server ended this socket with (frames before it are kept)."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                raise AssertionError(f"the socket stayed open; got {self.frames[-3:]}")
            output = await self.communicator.receive_output(timeout=remaining)
            if output["type"] == "websocket.close":
                return output.get("code")
            self.frames.append(output.get("text", ""))

    def text_of(self, message_id: int) -> str:
        """What this tab shows for a streaming message: the last snapshot plus later deltas."""
        return text_of(self.frames, message_id)

    def reply_of(self, message_id: int):
        """The streaming reply's parts (answer, thinking, label) as the page holds them."""
        return reply_of(self.frames, message_id)


@sync_to_async
def latest_reply(conversation) -> Message | None:
    return (
        Message.objects.filter(conversation=conversation, role="assistant").order_by("-id").first()
    )


@sync_to_async
def reload(message: Message) -> Message:
    return Message.objects.get(pk=message.pk)


async def wait_for_status(message_id: int, statuses=("complete", "stopped", "error"), timeout=20):
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        message = await sync_to_async(Message.objects.get)(pk=message_id)
        if message.status in statuses:
            return message
        await asyncio.sleep(0.05)
    raise AssertionError(f"message {message_id} still {message.status}")


@sync_to_async
def new_conversation(user, model=None, **fields) -> Conversation:
    return Conversation.objects.create(owner=user, model=model, **fields)
