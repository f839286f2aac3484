"""A streamed reply's body, decoded here instead of by h11 for every token.

A backend sends each token as its own HTTP chunk. Through httpx, each one passed
h11's state machine and five async generators (httpcore's connection, its pool,
httpx's transport, its response): at 100 streams that was a quarter of the
process's CPU. Here, once the headers are in, the body is read straight from the
connection's network stream (httpcore's `network_stream` extension) and its
chunked coding undone in a few slices per read.

h11 is handed the connection back at the end: when the body ended cleanly, it is
told of an empty last chunk, reaches the end of the message, and httpcore keeps
the connection for the next request. Stopped or broken bodies leave h11
mid-message, and httpcore closes the connection, as it always did.

Anything unusual falls back to httpx's own reading: another HTTP version,
a body that is not chunked or is compressed, a network stream or connection
that is not the kind this expects.
"""

import re
from collections.abc import AsyncIterator
from contextlib import aclosing

import h11
import httpcore
import httpx

from providers.network import Stream

READ_SIZE = 64 << 10
CRLF = b"\r\n"
MAX_LINE = 4 << 10  # a chunk-size or trailer line longer than this is not HTTP
_SIZE = re.compile(rb"[ \t]*([0-9A-Fa-f]{1,15})[ \t]*(?:;[^\r\n]*)?")


class Malformed(Exception):
    pass


class Dechunker:
    """Chunked transfer coding (RFC 9112, section 7.1), undone as bytes arrive."""

    def __init__(self, after_data: bool = False):
        self.rest = b""  # an unfinished line
        self.left = 0  # bytes of the current chunk still to come
        self.line_ends_data = after_data  # the next line must be the CRLF after data
        self.in_trailer = False
        self.done = False

    def feed(self, data: bytes) -> bytes:
        """The body bytes in `data`; raises Malformed on broken framing."""
        buffer = self.rest + data if self.rest else data
        self.rest = b""
        out = []
        at, end = 0, len(buffer)
        while at < end and not self.done:
            if self.left:
                piece = buffer[at : at + self.left]
                out.append(piece)
                at += len(piece)
                self.left -= len(piece)
                self.line_ends_data = not self.left
                continue
            eol = buffer.find(b"\r\n", at)
            if eol < 0:
                self.rest = buffer[at:]
                if len(self.rest) > MAX_LINE:
                    raise Malformed("endless chunk line")
                break
            self._line(buffer[at:eol])
            at = eol + 2
        if self.done:
            self.rest = buffer[at:]  # bytes after the body
        return b"".join(out) if len(out) != 1 else out[0]

    def _line(self, line: bytes):
        if self.line_ends_data:
            if line:
                raise Malformed("chunk data longer than its size")
            self.line_ends_data = False
        elif self.in_trailer:
            self.done = not line  # trailer fields are read past; an empty line ends them
        else:
            size = _SIZE.fullmatch(line)
            if size is None:
                raise Malformed(f"bad chunk size line {line[:40]!r}")
            self.left = int(size[1], 16)
            self.in_trailer = not self.left


async def body(response: httpx.Response) -> AsyncIterator[bytes]:
    """The raw bytes of a streamed response's body, as they arrive."""
    parts = _parts(response)
    if parts is None:
        encoded = response.headers.get("content-encoding", "identity").lower() != "identity"
        # Raw bytes skip httpx's decoder layer, unless the body is compressed.
        async for chunk in response.aiter_bytes() if encoded else response.aiter_raw():
            yield chunk
        return
    state, network = parts
    timeout = response.request.extensions.get("timeout", {}).get("read")
    try:
        async with aclosing(_read(state, network, timeout)) as chunks:
            async for chunk in chunks:
                yield chunk
    except httpcore.TimeoutException as error:
        raise httpx.ReadTimeout(str(error), request=response.request) from error
    except httpcore.NetworkError as error:
        raise httpx.ReadError(str(error), request=response.request) from error
    except (Malformed, h11.RemoteProtocolError) as error:
        raise httpx.RemoteProtocolError(str(error), request=response.request) from error


def _parts(response: httpx.Response) -> tuple[h11.Connection, Stream] | None:
    if response.http_version != "HTTP/1.1":
        return None
    headers = response.headers
    if headers.get("transfer-encoding", "").lower() != "chunked":
        return None
    if headers.get("content-encoding", "identity").lower() != "identity":
        return None
    network = response.extensions.get("network_stream")
    try:  # httpx's response stream, down to httpcore's HTTP/1.1 connection
        connection = response.stream._stream._httpcore_stream._stream._connection
        state = connection._h11_state
    except AttributeError:
        return None
    if not isinstance(network, Stream) or not isinstance(state, h11.Connection):
        return None
    if connection._network_stream is not network or state.their_state is not h11.SEND_BODY:
        return None
    return state, network


async def _read(state: h11.Connection, network: Stream, silence) -> AsyncIterator[bytes]:
    # Where h11 stands when this takes over: before a chunk (fresh after the headers),
    # or after a whole chunk's data, with `held` (part of its CRLF) in its buffer.
    after_data, held = False, state.trailing_data[0]
    while held:
        # h11 first reads what it already holds, up to the end of a chunk.
        event = state.next_event()
        if event is h11.NEED_DATA:
            state.receive_data(await _more(network, silence))
        elif isinstance(event, h11.EndOfMessage):
            return
        elif isinstance(event, h11.Data):
            yield bytes(event.data)
            if event.chunk_end and CRLF.startswith(state.trailing_data[0]):
                after_data, held = True, state.trailing_data[0]
                break
    dechunker = Dechunker(after_data=after_data)
    dechunker.feed(held)
    while not dechunker.done:
        data = dechunker.feed(await _more(network, silence))
        if data:
            yield data
    if not dechunker.rest and not network.buffer.chunks:
        # The body ended cleanly: h11 sees its end, and the connection can be reused.
        state.receive_data((CRLF[len(held) :] if after_data else b"") + b"0\r\n\r\n")
        state.next_event()


async def _more(network: Stream, silence) -> bytes:
    data = await network.read(READ_SIZE, silence)  # the read timeout
    if not data:
        raise Malformed("peer closed connection without sending complete message body")
    return data
