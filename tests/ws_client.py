"""A real websocket client for the chat socket of a running server (tests and benchmark)."""

import time

import websockets

from tests.frames import text_of


class ChatClient:
    """One browser tab's socket: send commands, read frames, rebuild the reply text."""

    def __init__(self, base_url: str, conversation_id, cookie: str):
        self.url = base_url.replace("http://", "ws://") + f"/ws/chat/{conversation_id}/"
        self.origin = base_url
        self.cookie = cookie
        self.socket = None
        self.frames: list[tuple[float, str]] = []

    async def __aenter__(self):
        self.socket = await websockets.connect(
            self.url,
            origin=self.origin,
            additional_headers={"Cookie": self.cookie},
            max_size=None,
            open_timeout=20,
        )
        return self

    async def __aexit__(self, *exc):
        await self.socket.close()

    async def send(self, **command):
        import json

        await self.socket.send(json.dumps(command))

    async def frame(self, timeout: float = 20.0) -> str:
        import asyncio

        text = await asyncio.wait_for(self.socket.recv(), timeout)
        self.frames.append((time.monotonic(), text))
        return text

    async def until(self, predicate, timeout: float = 30.0) -> str:
        import asyncio

        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            text = await self.frame(max(0.01, deadline - asyncio.get_running_loop().time()))
            if predicate(text):
                return text

    def text_of(self, message_id: int) -> str:
        return text_of([frame for _, frame in self.frames], message_id)
