"""The bytes under httpx: httpcore's network backend on plain asyncio protocols.

httpx and httpcore still do all of HTTP (requests, chunked bodies, keep-alive,
TLS through the standard ssl module); this module only moves bytes, through
httpcore's documented extension point (`network_backend`).

Why not the default (anyio) backend: a streamed reply is hundreds of small
reads, and for each one anyio resumes and pauses the socket (two epoll
changes), arms a cancel scope with its own timer for the read timeout, and
hands over one chunk. At 100 streams that was over a third of the upstream
path's CPU. Here the socket keeps reading into a buffer (paused only past
HIGH_WATER bytes), a read takes everything buffered, and the read timeout is one
timer per connection that moves forward lazily: it fires at most once per
timeout period, and only checks whether data came meanwhile.

A reader that shows text a few times a second anyway (a streaming reply after
its first token) may also pace its reads (`pace_reads`): each read then returns
no sooner than a gap after the one before, with everything that arrived
meanwhile. One wake-up carries several tokens instead of one each. The end of
the response (the last chunk of a chunked body, or the server closing) cuts
the gap short: the reply's last words and its ending wait for nothing.
"""

import asyncio
import contextvars
import socket
import ssl
from collections import deque
from collections.abc import Callable

import httpcore

HIGH_WATER = 1 << 20  # stop reading the socket with this much unread
LOW_WATER = 256 << 10  # and start again below this
# A chunked body ends with an empty chunk. Preceded by CRLF, it cannot be the end of
# an SSE line; were it ever taken wrongly, a paced read would only return early.
LAST_CHUNK = b"\r\n0\r\n\r\n"

# The gap between reads, in seconds, asked for by the task reading (see pace_reads).
_READ_GAP: contextvars.ContextVar[Callable[[], float] | None] = contextvars.ContextVar(
    "read_gap", default=None
)


def pace_reads(gap: Callable[[], float]):
    """From now on, in the calling task, a read of a connection returns no sooner than
    `gap()` seconds after that connection's previous read, with all that came in between.
    For a reader that publishes at that rate anyway: it saves a wake-up per token."""
    _READ_GAP.set(gap)


class _Buffer(asyncio.Protocol):
    """What the socket delivered and not yet read, and whoever waits for it."""

    def __init__(self):
        self.transport: asyncio.Transport | None = None
        self.chunks: deque[bytes] = deque()
        self.size = 0
        self.eof = False
        self.error: Exception | None = None
        self.reader: asyncio.Future | None = None
        self.paused_reading = False
        self.drained: asyncio.Future | None = None  # set while writes must wait
        self.napping: asyncio.Future | None = None  # a paced read's gap, cut short by the end

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data: bytes):
        self.chunks.append(data)
        self.size += len(data)
        if self.size > HIGH_WATER and not self.paused_reading:
            self.paused_reading = True
            self.transport.pause_reading()
        self._wake()

    def at_end(self) -> bool:
        """Whether the response's end is here (or the connection's): nothing more to wait for."""
        if self.eof:
            return True
        if not self.chunks:
            return False
        tail = self.chunks[-1]
        if len(tail) < len(LAST_CHUNK) and len(self.chunks) > 1:
            tail = self.chunks[-2][-len(LAST_CHUNK) :] + tail  # split across two reads
        return tail.endswith(LAST_CHUNK)

    def eof_received(self):
        self.eof = True
        self._wake()
        return False  # close: an HTTP/1.1 client has nothing to write after the answer

    def connection_lost(self, exc):
        self.eof, self.error = True, exc
        self._wake()
        if self.drained is not None:
            _settle(self.drained)

    def pause_writing(self):
        self.drained = asyncio.get_running_loop().create_future()

    def resume_writing(self):
        if self.drained is not None:
            _settle(self.drained)
        self.drained = None

    def _wake(self):
        """Data or the end came: a read waiting for data goes on, and a paced read's
        gap ends if the response did."""
        if self.reader is not None:
            _settle(self.reader)
        if self.napping is not None and self.at_end():
            _settle(self.napping)

    def take(self, max_bytes: int) -> bytes:
        data = self.chunks.popleft() if len(self.chunks) == 1 else b"".join(self.chunks)
        self.chunks.clear()
        if len(data) > max_bytes:
            data, rest = data[:max_bytes], data[max_bytes:]
            self.chunks.append(rest)
        self.size -= len(data)
        if self.paused_reading and self.size < LOW_WATER:
            self.paused_reading = False
            self.transport.resume_reading()
        return data


class Stream(httpcore.AsyncNetworkStream):
    def __init__(self, transport: asyncio.Transport, buffer: _Buffer):
        self.transport, self.buffer = transport, buffer
        self.deadline = 0.0  # when the read being waited for times out
        self.timer: asyncio.TimerHandle | None = None
        self.read_at = float("-inf")  # when the last read returned data (for pace_reads)

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        buffer = self.buffer
        gap = _READ_GAP.get()
        if gap is not None and not buffer.at_end():
            loop = asyncio.get_running_loop()
            wait = self.read_at + gap() - loop.time()
            if wait > 0:
                await self._nap(wait)  # the socket keeps filling the buffer meanwhile
        if not buffer.chunks and not buffer.eof:
            await self._wait(timeout)
        if buffer.chunks:
            if gap is not None:
                self.read_at = asyncio.get_running_loop().time()
            return buffer.take(max_bytes)
        if buffer.error is not None:
            raise httpcore.ReadError(str(buffer.error) or type(buffer.error).__name__)
        return b""  # the server closed the connection

    async def _nap(self, seconds: float):
        """A paced read's gap: `seconds`, or until the response's end arrives."""
        loop = asyncio.get_running_loop()
        napping = self.buffer.napping = loop.create_future()
        timer = loop.call_later(seconds, _settle, napping)
        try:
            await napping
        finally:
            timer.cancel()
            self.buffer.napping = None

    async def _wait(self, timeout: float | None):
        loop = asyncio.get_running_loop()
        self.buffer.reader = loop.create_future()
        if timeout is not None:
            self.deadline = loop.time() + timeout
            if self.timer is not None and self.timer.when() > self.deadline:
                self.timer.cancel()  # a shorter timeout than the timer's
                self.timer = None
            if self.timer is None:
                self.timer = loop.call_at(self.deadline, self._check_deadline)
        try:
            await self.buffer.reader
        finally:
            self.buffer.reader = None

    def _check_deadline(self):
        """The timer: time out the waiting read if its deadline passed, else wait on."""
        self.timer = None
        reader = self.buffer.reader
        if reader is None or reader.done():
            return  # nobody waits now; the next wait arms a timer again
        loop = asyncio.get_running_loop()
        if loop.time() >= self.deadline:
            reader.set_exception(httpcore.ReadTimeout("no data within the read timeout"))
        else:
            self.timer = loop.call_at(self.deadline, self._check_deadline)

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        if not buffer:
            return
        if self.transport.is_closing():
            raise httpcore.WriteError("the connection is closed")
        self.transport.write(buffer)
        drained = self.buffer.drained
        if drained is not None:
            try:
                async with asyncio.timeout(timeout):
                    await asyncio.shield(drained)
            except TimeoutError:
                raise httpcore.WriteTimeout("could not send within the write timeout") from None

    async def aclose(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.transport.close()

    async def start_tls(self, ssl_context, server_hostname=None, timeout=None):
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout):
                transport = await loop.start_tls(
                    self.transport, self.buffer, ssl_context, server_hostname=server_hostname
                )
        except TimeoutError:
            raise httpcore.ConnectTimeout("timed out in the TLS handshake") from None
        except (OSError, ssl.SSLError) as error:
            self.transport.close()
            raise httpcore.ConnectError(str(error)) from error
        self.buffer.transport = transport
        return Stream(transport, self.buffer)

    def get_extra_info(self, info: str):
        if info == "is_readable":  # an idle keep-alive connection the server closed
            return bool(self.buffer.chunks) or self.buffer.eof
        name = {"client_addr": "sockname", "server_addr": "peername"}.get(info, info)
        if name in ("ssl_object", "sockname", "peername", "socket"):
            return self.transport.get_extra_info(name)
        return None


class Backend(httpcore.AsyncNetworkBackend):
    async def connect_tcp(
        self, host, port, timeout=None, local_address=None, socket_options=None
    ) -> Stream:
        loop = asyncio.get_running_loop()
        return await _connect(
            lambda: loop.create_connection(
                _Buffer, host, port, local_addr=(local_address, 0) if local_address else None
            ),
            timeout,
            socket_options,
        )

    async def connect_unix_socket(self, path, timeout=None, socket_options=None) -> Stream:
        loop = asyncio.get_running_loop()
        return await _connect(
            lambda: loop.create_unix_connection(_Buffer, path), timeout, socket_options
        )

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


async def _connect(open_connection, timeout, socket_options) -> Stream:
    try:
        async with asyncio.timeout(timeout):
            transport, buffer = await open_connection()
    except TimeoutError:
        raise httpcore.ConnectTimeout("timed out connecting") from None
    except OSError as error:
        raise httpcore.ConnectError(str(error) or type(error).__name__) from error
    sock: socket.socket | None = transport.get_extra_info("socket")
    for option in socket_options or ():
        sock.setsockopt(*option)
    return Stream(transport, buffer)


def _settle(future: asyncio.Future):
    if not future.done():
        future.set_result(None)
