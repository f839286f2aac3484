"""The one place that talks HTTP to backends.

- One httpx.AsyncClient per event loop, with connection limits and no redirects.
- Timeouts: connect, silence between chunks (httpx's read timeout) and a total
  deadline per reply, enforced around every await with asyncio.timeout_at
  (httpx's read timeout alone would let a slow drip run forever).
- Retries only before the first byte: refused connections and 502/503.
- Errors become ProviderError; upstream bodies are read (capped) only to be
  classified and are never kept.
- SSE is decoded by providers.sse, with a cap on line length so an endless
  line cannot eat memory.
"""

import asyncio
import json
import weakref
from collections.abc import AsyncIterator
from contextlib import aclosing, asynccontextmanager

import httpx
import orjson

from providers import chunked
from providers.base import Endpoint, ProviderError
from providers.errors import classify, connection_failure, error_in, excerpt, public_url
from providers.network import Backend
from providers.sse import EventDecoder

MAX_SSE_LINE = 1 << 20  # 1 MiB in one line is not a token stream
MAX_ERROR_BODY = 64 << 10
MAX_JSON_BODY = 8 << 20
ATTEMPTS = 3  # before the first byte only
RETRY_STATUSES = {502, 503}
MAX_RETRY_WAIT = 3.0

_clients: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, httpx.AsyncClient]" = (
    weakref.WeakKeyDictionary()
)
# httpx's own default (the CA bundle, or SSL_CERT_FILE / SSL_CERT_DIR), made once as the
# module loads: making it took 30 ms, paid by the first reply of every process.
TLS = httpx.create_ssl_context()


def client() -> httpx.AsyncClient:
    loop = asyncio.get_running_loop()
    if loop not in _clients:
        http = httpx.AsyncClient(
            verify=TLS,
            follow_redirects=False,
            limits=httpx.Limits(max_connections=500, max_keepalive_connections=200),
            headers={"User-Agent": "chatsite"},
        )
        # Direct connections move their bytes through providers.network. Set on the
        # default transport's pool (httpx has no argument for it) rather than by
        # passing a transport, which would drop the HTTP(S)_PROXY settings httpx reads.
        http._transport._pool._network_backend = Backend()
        _clients[loop] = http
    return _clients[loop]


def deadline_for(endpoint: Endpoint) -> float:
    return asyncio.get_running_loop().time() + endpoint.total_timeout


def _timeout(endpoint: Endpoint) -> httpx.Timeout:
    return httpx.Timeout(
        connect=endpoint.connect_timeout,
        read=endpoint.read_timeout,
        write=endpoint.connect_timeout,
        pool=endpoint.connect_timeout,
    )


def _headers(endpoint: Endpoint, accept: str, body: bool = False) -> dict:
    typed = {"Content-Type": "application/json"} if body else {}
    headers = {"Accept": accept, **typed, **endpoint.headers}
    if endpoint.api_key:
        headers["Authorization"] = f"Bearer {endpoint.api_key}"
    return headers


async def _read_capped(response: httpx.Response, cap: int) -> bytes:
    body = b""
    encoded = response.headers.get("content-encoding", "identity").lower() != "identity"
    # Raw bytes skip httpx's decoder layer for each token, unless the body is compressed.
    chunks = response.aiter_bytes() if encoded else response.aiter_raw()
    async for chunk in chunks:
        body += chunk
        if len(body) > cap:
            raise ProviderError("malformed", f"body over {cap} bytes")
    return body


def parse_json(raw: bytes | str):
    """JSON from a backend: by orjson (every event of every stream comes here, and it
    takes a fifth of the standard module's time), and by the standard module when
    orjson refuses, so that what only json accepts (NaN, lone surrogates) still
    reads. One difference stays: an integer past 64 bits reads as a float; no
    count or price is that large (providers.base.Usage refuses them either way)."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        pass
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise ProviderError("malformed", "invalid JSON") from None


async def _error_from(response: httpx.Response, endpoint: Endpoint) -> ProviderError:
    try:
        body = await _read_capped(response, MAX_ERROR_BODY)
    except (ProviderError, httpx.HTTPError):
        body = b""
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        payload = None
    error = classify(response.status_code, payload, response.headers)
    error.status, error.excerpt = response.status_code, excerpt(body, endpoint)
    return error


# --- sending ------------------------------------------------------------------


async def _send(endpoint, method, url, *, json_body=None, params=None, accept="*/*"):
    """Send and return a response whose headers are in and whose body is not yet read."""
    try:
        return await _send_with_retries(endpoint, method, url, json_body, params, accept)
    except ProviderError as error:
        error.url = error.url or public_url(url)
        raise


async def _send_with_retries(endpoint, method, url, json_body, params, accept):
    http = client()
    # Encoded by orjson: the same compact UTF-8 as httpx's json=, in about a fourteenth
    # of the time (34 KB of conversation: 12 µs against 167), on the event loop, for
    # every send of a long conversation.
    content = None if json_body is None else orjson.dumps(json_body)
    for attempt in range(1, ATTEMPTS + 1):
        wait = 0.25 * attempt
        try:
            request = http.build_request(
                method,
                url,
                content=content,
                params=params,
                headers=_headers(endpoint, accept, body=content is not None),
                timeout=_timeout(endpoint),
            )
            response = await http.send(request, stream=True)
        except httpx.ConnectTimeout:
            error = ProviderError("timeout", "timed out connecting")
        except httpx.TimeoutException:
            raise ProviderError("timeout", "no response in time") from None
        except httpx.TransportError as exc:
            error = ProviderError("unavailable", connection_failure(exc))
        else:
            if response.is_success:
                return response
            error = await _error_from(response, endpoint)
            await response.aclose()
            if response.status_code not in RETRY_STATUSES:
                raise error
            if error.retry_after is not None:
                if error.retry_after > MAX_RETRY_WAIT:
                    raise error
                wait = error.retry_after
        if attempt == ATTEMPTS:
            raise error
        await asyncio.sleep(wait)
    raise AssertionError("unreachable")


@asynccontextmanager
async def post_stream(endpoint: Endpoint, url: str, body: dict, deadline: float):
    """POST and yield the streaming response; map transport failures mid-stream."""
    try:
        async with asyncio.timeout_at(deadline):
            response = await _send(
                endpoint, "POST", url, json_body=body, accept="text/event-stream"
            )
    except TimeoutError:
        raise ProviderError("timeout", "total deadline before first byte") from None
    try:
        if "json" in response.headers.get("content-type", ""):
            # Some servers answer a streaming request with a JSON error and a 200.
            payload = parse_json(await _read_capped(response, MAX_ERROR_BODY))
            raise error_in(payload) or ProviderError("malformed", "JSON, not a stream")
        yield response
    except httpx.TimeoutException:
        raise ProviderError("timeout", "silence between chunks") from None
    except httpx.TransportError as exc:
        raise ProviderError(
            "unavailable", f"connection lost mid-reply: {type(exc).__name__}"
        ) from None
    finally:
        await response.aclose()
        # httpx's streamed response and its stream refer to each other: a cycle, with the
        # request, the connection and its buffers hanging off it, left for the collector's
        # slow full passes after every reply. Broken here, they are freed at once.
        response.stream = None


async def sse_data(response: httpx.Response, deadline: float) -> AsyncIterator[str]:
    """The `data` of each server-sent event, including a final one with no blank line.

    The total deadline is checked on every read rather than armed as a timer
    around each one: a timer per token was a measurable part of the relay's CPU,
    and silence is already bounded by the read timeout.
    """
    decoder = EventDecoder(MAX_SSE_LINE)
    loop = asyncio.get_running_loop()
    async with aclosing(chunked.body(response)) as chunks:
        async for chunk in chunks:
            for data in decoder.feed(chunk):
                yield data.decode(errors="replace")
            if loop.time() > deadline:
                raise ProviderError("timeout", "total deadline mid-reply")
    for data in decoder.flush():
        yield data.decode(errors="replace")


DONE = object()  # json_events yields this when the stream's end marker arrives


async def json_events(
    response: httpx.Response, deadline: float, done_marker: str | None = "[DONE]"
):
    """Each event's JSON object (then DONE, if the end marker came).

    Raises ProviderError for data that is not a JSON object and for an error
    object sent in the middle of the stream.
    """
    async with aclosing(sse_data(response, deadline)) as events:
        async for data in events:
            if done_marker and data.strip() == done_marker:
                yield DONE
                return
            event = parse_json(data)
            if not isinstance(event, dict):
                raise ProviderError("malformed", "event is not an object")
            if error := error_in(event):
                raise error
            yield event


async def post_json(endpoint: Endpoint, url: str, body: dict):
    return await _json(endpoint, "POST", url, json_body=body)


async def get_json(endpoint: Endpoint, url: str, params: dict | None = None):
    return await _json(endpoint, "GET", url, params=params)


async def _json(endpoint, method, url, **kwargs):
    try:
        return await _json_unlabelled(endpoint, method, url, **kwargs)
    except ProviderError as error:
        error.url = error.url or public_url(url)
        raise


async def _json_unlabelled(endpoint, method, url, **kwargs):
    try:
        async with asyncio.timeout(endpoint.total_timeout):
            response = await _send(endpoint, method, url, accept="application/json", **kwargs)
            try:
                return parse_json(await _read_capped(response, MAX_JSON_BODY))
            finally:
                await response.aclose()
    except TimeoutError:
        raise ProviderError("timeout", "total deadline") from None
    except httpx.TimeoutException:
        raise ProviderError("timeout", "silence") from None
    except httpx.TransportError as exc:
        raise ProviderError("unavailable", connection_failure(exc)) from None
