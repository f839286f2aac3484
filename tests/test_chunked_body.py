"""providers.chunked: a streamed body read past h11, against real loopback servers.

The servers write their bytes in chosen pieces, so the takeover is tested from
each place h11 can stand: nothing of the body read yet, whole chunks read with
the headers, and a chunk cut in the middle.
"""

import asyncio
import gzip

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from providers import chunked
from providers import http as provider_http
from providers.chunked import Dechunker, Malformed
from tests.test_network import LOOPS, chunk, headers, loops
from tests.test_network import serve as serve_requests

PIECES = [b'data: {"n": %d}\n\n' % i for i in range(50)]
BODY = b"".join(PIECES)
END = b"0\r\n\r\n"


def encode(pieces, extensions=(), trailer=b"") -> bytes:
    out = b""
    for i, piece in enumerate(pieces):
        ext = extensions[i % len(extensions)] if extensions else b""
        out += b"%x%s\r\n%s\r\n" % (len(piece), ext, piece)
    return out + b"0\r\n" + trailer + b"\r\n"


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in zip(points, points[1:], strict=False)]


@given(
    pieces=st.lists(st.binary(min_size=1, max_size=300), max_size=20),
    cuts=st.lists(st.integers(min_value=0, max_value=10_000), max_size=30),
    extensions=st.lists(st.sampled_from([b"", b";a=b", b" ;x", b"\t"]), max_size=3),
    trailer=st.sampled_from([b"", b"X-Checksum: 1\r\n", b"A: 1\r\nB: 2\r\n"]),
    after=st.sampled_from([b"", b"HTTP/1.1 200 OK\r\n"]),
)
def test_any_cut_of_a_chunked_body_decodes_to_the_same_bytes(
    pieces, cuts, extensions, trailer, after
):
    wire = encode(pieces, extensions, trailer)
    dechunker = Dechunker()
    out = b"".join(dechunker.feed(part) for part in split(wire + after, cuts))
    assert out == b"".join(pieces)
    assert dechunker.done
    assert dechunker.rest == after


def test_a_decoder_taking_over_after_a_chunk_expects_its_crlf_first():
    dechunker = Dechunker(after_data=True)
    assert dechunker.feed(b"\r\n5\r\nhello\r\n" + END) == b"hello"
    assert dechunker.done
    with pytest.raises(Malformed):
        Dechunker(after_data=True).feed(b"5\r\nhello\r\n")


@pytest.mark.parametrize(
    "wire",
    [
        b"zz\r\n",  # not hex
        b"0x5\r\nhello\r\n",  # Python's int() would take these three; HTTP does not
        b"+5\r\nhello\r\n",
        b"1_0\r\n",
        b"\r\n",  # no size at all
        b"3\r\nhello\r\n",  # data longer than its size
        b"1" * (chunked.MAX_LINE + 10),  # a size line that never ends
    ],
)
def test_broken_framing_is_refused(wire):
    with pytest.raises(Malformed):
        Dechunker().feed(wire)


async def serve(writes):
    """tests.test_network's server, answering each request by `writes(writer)`; it also
    counts connections (one writer per connection)."""
    writers = set()

    async def handler(writer):
        writers.add(writer)
        return await writes(writer)

    server, host = await serve_requests(handler)
    return server, f"http://{host}/", writers


async def read_all(http, url, timeout=5.0) -> tuple[bytes, bool]:
    """The body through providers.chunked, and whether it took the fast path."""
    request = http.build_request("GET", url, extensions={"timeout": {"read": timeout}})
    response = await http.send(request, stream=True)
    try:
        fast = chunked._parts(response) is not None
        return b"".join([piece async for piece in chunked.body(response)]), fast
    finally:
        await response.aclose()


def in_pieces(*parts, pause=0.002):
    """Each part written on its own, `pause` apart: what a read can find at once."""

    async def writes(writer):
        for part in parts:
            writer.write(part)
            await writer.drain()
            await asyncio.sleep(pause)
        return True

    return writes


TAKEOVERS = {
    "headers alone": in_pieces(headers(), *map(chunk, PIECES), END),
    "headers with whole chunks": in_pieces(
        headers() + b"".join(map(chunk, PIECES[:3])), *map(chunk, PIECES[3:]), END
    ),
    "headers with a chunk cut in two": in_pieces(
        headers() + chunk(PIECES[0]) + chunk(PIECES[1])[:7],
        chunk(PIECES[1])[7:] + chunk(PIECES[2])[:-1],
        chunk(PIECES[2])[-1:],
        *map(chunk, PIECES[3:]),
        END,
    ),
}
EVERYTHING = TAKEOVERS["everything at once"] = in_pieces(headers() + encode(PIECES))


@loops
@pytest.mark.parametrize("writes", TAKEOVERS.values(), ids=TAKEOVERS.keys())
def test_the_body_arrives_whole_and_the_connection_serves_the_next_request(
    run, writes, monkeypatch
):
    decoded = []  # what the decoder here undid, rather than h11
    feed = Dechunker.feed
    monkeypatch.setattr(
        Dechunker, "feed", lambda self, data: decoded.append(feed(self, data)) or decoded[-1]
    )

    async def main():
        server, url, seen = await serve(writes)
        async with server, provider_http.client() as http:
            for _ in range(3):
                decoded.clear()
                body, fast = await read_all(http, url)
                assert body == BODY
                assert fast
                # All but what came with the headers (or all of it at once) went past h11.
                assert BODY.endswith(b"".join(decoded))
                assert len(b"".join(decoded)) >= len(b"".join(PIECES[4:])) or writes is EVERYTHING
            assert len(seen) == 1

    run(main())


@loops
def test_a_server_that_hangs_up_mid_body_is_a_protocol_error(run):
    async def writes(writer):
        writer.write(headers() + chunk(b"first"))
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.write(b"100\r\nonly part")
        await writer.drain()
        return False

    async def main():
        server, url, _ = await serve(writes)
        async with server, provider_http.client() as http:
            with pytest.raises(httpx.RemoteProtocolError):
                await read_all(http, url)

    run(main())


@loops
def test_broken_framing_mid_body_is_a_protocol_error_and_the_connection_is_dropped(run):
    broken = in_pieces(headers(), chunk(b"fine"), b"zz\r\nnot a size\r\n")
    answers = iter([broken, TAKEOVERS["headers alone"]])

    async def writes(writer):
        return await next(answers)(writer)

    async def main():
        server, url, seen = await serve(writes)
        async with server, provider_http.client() as http:
            with pytest.raises(httpx.RemoteProtocolError):
                await read_all(http, url)
            assert (await read_all(http, url))[0] == BODY
            assert len(seen) == 2

    run(main())


@loops
def test_silence_longer_than_the_read_timeout_is_a_read_timeout(run):
    async def writes(writer):
        writer.write(headers())
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.write(chunk(b"first"))
        await writer.drain()
        await writer.wait_closed()  # silent until the client hangs up
        return False

    async def main():
        server, url, _ = await serve(writes)
        async with server, provider_http.client() as http:
            with pytest.raises(httpx.ReadTimeout):
                await read_all(http, url, timeout=0.2)

    run(main())


@pytest.mark.parametrize(
    "answer",
    [
        headers(len(BODY)) + BODY,  # a length, not chunks
        headers(extra="Content-Encoding: gzip\r\n") + encode([gzip.compress(BODY)]),
    ],
    ids=["content-length", "gzip"],
)
def test_other_bodies_are_read_by_httpx_itself(answer):
    async def main():
        server, url, _ = await serve(in_pieces(answer))
        async with server, provider_http.client() as http:
            body, fast = await read_all(http, url)
            assert (body if b"data" in body else gzip.decompress(body)) == BODY
            assert not fast

    LOOPS["asyncio"](main())
