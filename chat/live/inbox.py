"""What a chat socket reads: its websocket and its channel, through one queue.

Channels' consumer loop (channels.utils.await_many_dispatch) makes a new task
and an asyncio.wait for every message it hands over. A chat socket takes a
delta about every 50 ms per streaming reply, so that was a task and a wait per
delta per socket. Here each source has one long-lived reader task that feeds a
small queue, and the consumer takes its messages from that queue one at a time,
as Channels does: a handler never runs beside another.
"""

import asyncio

READ_AHEAD = 16  # messages a reader may hold before the consumer takes them


class _Failed:
    def __init__(self, error: BaseException):
        self.error = error


async def dispatch_all(sources, dispatch):
    """Hand every message from `sources` (receive callables) to `dispatch`, until it
    raises (StopConsumer when the socket closes) or a source fails."""
    queue: asyncio.Queue = asyncio.Queue(READ_AHEAD)

    async def read(source):
        try:
            while True:
                await queue.put(await source())
        except asyncio.CancelledError:
            raise
        except BaseException as error:  # the consumer sees it, as Channels' loop would
            await queue.put(_Failed(error))

    readers = [asyncio.ensure_future(read(source)) for source in sources]
    try:
        while True:
            message = await queue.get()
            if isinstance(message, _Failed):
                raise message.error
            await dispatch(message)
    finally:
        for reader in readers:
            reader.cancel()
        await asyncio.gather(*readers, return_exceptions=True)
