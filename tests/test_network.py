"""providers.network: the bytes under httpx, against real loopback servers, on both
event loops the site runs on (asyncio's own in tests, uvloop under daphne)."""

import asyncio
import datetime
import itertools
import ssl

import httpcore
import httpx
import pytest
import uvloop
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from providers import http as provider_http
from providers.errors import connection_failure
from providers.network import HIGH_WATER, Backend, pace_reads

LOOPS = {"asyncio": asyncio.run, "uvloop": uvloop.run}
loops = pytest.mark.parametrize("run", LOOPS.values(), ids=LOOPS.keys())


def headers(length: int | None = None, extra: str = "") -> bytes:
    size = f"Content-Length: {length}" if length is not None else "Transfer-Encoding: chunked"
    return f"HTTP/1.1 200 OK\r\n{size}\r\n{extra}\r\n".encode()


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


async def send_chunked(writer, pieces, pause: float = 0.0):
    """A chunked answer, one chunk per piece, `pause` seconds apart."""
    writer.write(headers())
    for piece in pieces:
        writer.write(chunk(piece))
        await writer.drain()
        await asyncio.sleep(pause)
    writer.write(b"0\r\n\r\n")
    await writer.drain()


def answers_chunked(pieces, pause: float = 0.0, keep_open: bool = False):
    """A handler for serve(): a chunked answer (send_chunked), then the connection kept
    for the next request or closed."""

    async def handler(writer):
        await send_chunked(writer, pieces, pause)
        return keep_open

    return handler


async def first_chunk_then_silence(writer):
    """A handler for serve(): one chunk, then nothing until the client hangs up."""
    writer.write(headers() + chunk(b"first"))
    await writer.drain()
    await writer.wait_closed()
    return False


async def serve(handler, ssl_context=None):
    """A loopback server that reads one request head, then runs `handler(writer)`."""

    async def on_connect(reader, writer):
        try:
            while True:
                await reader.readuntil(b"\r\n\r\n")
                if not await handler(writer):
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(on_connect, "127.0.0.1", 0, ssl=ssl_context)
    return server, f"127.0.0.1:{server.sockets[0].getsockname()[1]}"


def pool(**extra) -> httpcore.AsyncConnectionPool:
    return httpcore.AsyncConnectionPool(network_backend=Backend(), **extra)


def test_the_providers_client_moves_its_bytes_through_this_backend():
    async def main():
        http = provider_http.client()
        assert isinstance(http._transport._pool._network_backend, Backend)
        # TLS settings made once, as the module loaded, not by each loop's first reply
        assert http._transport._pool._ssl_context is provider_http.TLS
        await http.aclose()

    asyncio.run(main())


@loops
def test_a_stream_of_small_chunks_arrives_whole_and_in_order(run):
    pieces = [b'data: {"n": %d}\n\n' % i for i in range(300)]

    async def main():
        server, host = await serve(answers_chunked(pieces, 0.001, keep_open=True))
        async with server, pool() as http:
            body = b""
            async with http.stream("GET", f"http://{host}/") as response:
                async for data in response.aiter_stream():
                    body += data
            assert body == b"".join(pieces)
            # The connection went back to the pool and serves a second request.
            response = await http.request("GET", f"http://{host}/")
            assert response.content == b"".join(pieces)
            assert len(http.connections) == 1

    run(main())


@loops
def test_a_body_far_larger_than_the_buffer_arrives_whole(run):
    body = bytes(range(256)) * (5 * HIGH_WATER // 256)

    async def handler(writer):
        writer.write(headers(len(body)) + body)
        await writer.drain()
        return True

    async def main():
        server, host = await serve(handler)
        async with server, pool() as http:
            async with http.stream("GET", f"http://{host}/") as response:
                received = b""
                async for data in response.aiter_stream():
                    received += data
                    await asyncio.sleep(0.001)  # a slow reader: the socket pauses meanwhile
            assert received == body

    run(main())


@loops
def test_silence_longer_than_the_read_timeout_is_a_read_timeout(run):
    async def main():
        server, host = await serve(first_chunk_then_silence)
        async with server, pool() as http:
            started = asyncio.get_running_loop().time()
            extensions = {"timeout": {"read": 0.3}}
            async with http.stream("GET", f"http://{host}/", extensions=extensions) as response:
                stream = response.aiter_stream()
                assert await anext(stream) == b"first"
                with pytest.raises(httpcore.ReadTimeout):
                    await anext(stream)
            waited = asyncio.get_running_loop().time() - started
            assert 0.3 <= waited < 1.5

    run(main())


@loops
def test_chunks_closer_than_the_read_timeout_never_time_out(run):
    """The one timer per connection moves on; it must not fire while data keeps coming,
    even when the reply lasts many times the read timeout."""

    async def main():
        # 1.2 s of data, 0.03 s apart, against a 0.2 s read timeout
        server, host = await serve(answers_chunked([b"tok "] * 40, 0.03))
        async with server, pool() as http:
            extensions = {"timeout": {"read": 0.2}}
            response = await http.request("GET", f"http://{host}/", extensions=extensions)
            assert response.content == b"tok " * 40

    run(main())


async def paced_reads(host: str, gap: float | None, read_timeout: float = 5.0) -> list:
    """The body's reads as a paced reader makes them: (when, bytes) each."""
    if gap is not None:
        pace_reads(lambda: gap)
    loop, reads = asyncio.get_running_loop(), []
    async with pool() as http:
        extensions = {"timeout": {"read": read_timeout}}
        async with http.stream("GET", f"http://{host}/", extensions=extensions) as response:
            async for data in response.aiter_stream():
                reads.append((loop.time(), data))
    return reads


@loops
def test_paced_reads_gather_what_came_meanwhile_and_lose_nothing(run):
    pieces = [b"tok%02d " % i for i in range(40)]  # 0.01 s apart: 0.4 s in all

    async def main():
        server, host = await serve(answers_chunked(pieces, 0.01))
        async with server:
            unpaced = await paced_reads(host, None)
            paced = await asyncio.create_task(paced_reads(host, 0.1))  # its own context
        assert b"".join(data for _, data in paced) == b"".join(pieces)
        assert b"".join(data for _, data in unpaced) == b"".join(pieces)
        # h11 hands over each chunk on its own; the chunks of one read come together.
        assert len(wakeups(unpaced)) > 20  # about one read per chunk
        woke = wakeups(paced, within=0.02)
        assert len(woke) <= 8  # about one per 0.1 s
        gaps = [later - earlier for earlier, later in itertools.pairwise(woke)]
        assert min(gaps[:-1]) >= 0.09  # the last one ends when the response does

    run(main())


def wakeups(reads, within: float = 0.002):
    """When the reader woke: reads less than `within` apart came from one network read.

    The pieces of one network read are handed over back to back, but on a busy machine
    that burst can take a few milliseconds; paced readers, whose wake-ups are far apart,
    are judged with a wider `within`."""
    times = [when for when, _ in reads]
    return [t for i, t in enumerate(times) if i == 0 or t - times[i - 1] > within]


async def send_until_close(writer, pieces, pause: float):
    """An answer with neither a length nor chunks: it ends when the server closes."""
    writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n")
    for piece in pieces:
        writer.write(piece)
        await writer.drain()
        await asyncio.sleep(pause)
    return False


@loops
@pytest.mark.parametrize("ending", ["last chunk, connection kept", "connection closed"])
def test_the_end_of_the_response_cuts_a_paced_gap_short(run, ending):
    """A reply's last words and its end are not held back for the rest of a gap."""
    pieces = [b"tok%02d " % i for i in range(5)]  # 0.01 s apart, then the end

    async def main():
        if ending == "connection closed":
            handler = lambda writer: send_until_close(writer, pieces, 0.01)  # noqa: E731
        else:
            handler = answers_chunked(pieces, 0.01, keep_open=True)
        server, host = await serve(handler)
        async with server:
            started = asyncio.get_running_loop().time()
            reads = await asyncio.create_task(paced_reads(host, 2.0))
            took = asyncio.get_running_loop().time() - started
        assert b"".join(data for _, data in reads) == b"".join(pieces)
        assert len(wakeups(reads, within=0.02)) == 2  # the first piece, then the rest and the end
        assert took < 1.0  # not the 2 s gap

    run(main())


@loops
def test_pacing_stays_with_the_task_that_asked_for_it(run):
    pieces = [b"tok%02d " % i for i in range(20)]

    async def main():
        server, host = await serve(answers_chunked(pieces, 0.01))
        async with server:
            await asyncio.create_task(paced_reads(host, 0.1))  # another task asked
            started = asyncio.get_running_loop().time()
            reads = await paced_reads(host, None)  # this one did not
        assert reads[0][0] - started < 0.05
        assert b"".join(data for _, data in reads) == b"".join(pieces)
        assert all(b - a < 0.05 for (a, _), (b, _) in itertools.pairwise(reads))

    run(main())


@loops
def test_a_paced_read_still_times_out_on_silence(run):
    async def main():
        server, host = await serve(first_chunk_then_silence)
        async with server:
            started = asyncio.get_running_loop().time()
            with pytest.raises(httpcore.ReadTimeout):
                await asyncio.create_task(paced_reads(host, 0.05, read_timeout=0.3))
            assert asyncio.get_running_loop().time() - started < 1.5

    run(main())


@loops
def test_a_server_that_hangs_up_mid_body_is_an_error_not_a_short_reply(run):
    async def handler(writer):
        writer.write(headers(1000) + b"only part of it")
        await writer.drain()
        return False

    async def main():
        server, host = await serve(handler)
        async with server, pool() as http:
            with pytest.raises(httpcore.RemoteProtocolError):
                await http.request("GET", f"http://{host}/")

    run(main())


@loops
def test_an_idle_connection_the_server_closed_is_not_reused(run):
    async def handler(writer):
        writer.write(headers(2) + b"ok")
        await writer.drain()
        return False  # close after one answer, though HTTP/1.1 keeps connections

    async def main():
        server, host = await serve(handler)
        async with server, pool() as http:
            for _ in range(3):
                response = await http.request("GET", f"http://{host}/")
                assert response.content == b"ok"
                await asyncio.sleep(0.05)  # the close reaches the idle connection

    run(main())


@loops
def test_a_refused_connection_says_so(run):
    async def main():
        server, host = await serve(lambda writer: None)
        server.close()
        await server.wait_closed()
        async with httpx.AsyncClient() as http:
            http._transport._pool._network_backend = Backend()
            with pytest.raises(httpx.ConnectError) as failure:
                await http.get(f"http://{host}/")
        assert connection_failure(failure.value) == "connection refused"

    run(main())


def certificate() -> tuple[bytes, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


@loops
def test_https_works_and_a_certificate_nobody_trusts_is_refused(run, tmp_path):
    cert, key = certificate()
    (tmp_path / "cert.pem").write_bytes(cert)
    (tmp_path / "key.pem").write_bytes(key)
    server_side = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_side.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
    trusting = ssl.create_default_context(cafile=str(tmp_path / "cert.pem"))

    async def handler(writer):
        await send_chunked(writer, [b"secret ", b"stream"])
        return True

    async def main():
        server, host = await serve(handler, ssl_context=server_side)
        port = host.split(":")[1]
        async with server:
            async with pool(ssl_context=trusting) as http:
                response = await http.request("GET", f"https://localhost:{port}/")
                assert response.content == b"secret stream"
            async with pool(ssl_context=ssl.create_default_context()) as http:
                with pytest.raises(httpcore.ConnectError) as failure:
                    await http.request("GET", f"https://localhost:{port}/")
            assert connection_failure(failure.value) == "TLS handshake failed"

    run(main())
