"""The one place that talks HTTP to backends.

- One httpx.AsyncClient per event loop, with connection limits and no redirects.
- Timeouts: connect, silence between chunks (httpx's read timeout) and a total
  deadline per reply, enforced around every await with asyncio.timeout_at
  (httpx's read timeout alone would let a slow drip run forever).
- Retries only before the first byte: refused connections and 502/503.
- Errors become ProviderError; upstream bodies are read (capped) only to be
  classified and are never kept.
- SSE is decoded with httpx-sse's decoders, with a cap on line length so an
  endless line cannot eat memory.
"""

import asyncio
import email.utils
import json
import re
import time
import weakref
from collections.abc import AsyncIterator
from contextlib import aclosing, asynccontextmanager

import httpx

# httpx-sse's public API wants the whole response; its decoders let us cap line
# length and flush a final event that has no blank line after it.
from httpx_sse._decoders import SSEDecoder, SSELineDecoder

from providers.base import Endpoint, ProviderError

MAX_SSE_LINE = 1 << 20  # 1 MiB in one line is not a token stream
MAX_ERROR_BODY = 64 << 10
MAX_JSON_BODY = 8 << 20
ATTEMPTS = 3  # before the first byte only
RETRY_STATUSES = {502, 503}
MAX_RETRY_WAIT = 3.0

_clients: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, httpx.AsyncClient]" = (
    weakref.WeakKeyDictionary()
)


def client() -> httpx.AsyncClient:
    loop = asyncio.get_running_loop()
    if loop not in _clients:
        _clients[loop] = httpx.AsyncClient(
            follow_redirects=False,
            limits=httpx.Limits(max_connections=500, max_keepalive_connections=50),
            headers={"User-Agent": "chatsite"},
        )
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


def _headers(endpoint: Endpoint, accept: str) -> dict:
    headers = {"Accept": accept, **endpoint.headers}
    if endpoint.api_key:
        headers["Authorization"] = f"Bearer {endpoint.api_key}"
    return headers


# --- classifying errors -------------------------------------------------------

_CONTEXT = re.compile(
    r"context[ _](length|size|window)|maximum context|exceeds? the available context"
    r"|too many tokens|prompt is too long|input is too long|max_model_len",
    re.IGNORECASE,
)
# Cloudflare's numeric error codes that say more than the HTTP status.
WORKERS_AI_CODES = {"10000": "auth", "3036": "rate_limited", "3040": "unavailable"}
_SAFE = re.compile(r"[^A-Za-z0-9_.-]")


def _error_fields(payload) -> tuple[str, str, str]:
    """(type, code, message) from OpenAI, llama.cpp or Workers AI error shapes."""
    if not isinstance(payload, dict):
        return "", "", ""
    error = payload.get("error")
    if isinstance(error, str):
        return "", "", error
    if not isinstance(error, dict):
        errors = payload.get("errors")
        error = errors[0] if isinstance(errors, list) and errors else {}
        if not isinstance(error, dict):
            return "", "", ""
    return (str(error.get("type") or ""), str(error.get("code") or ""), str(error.get("message")))


def retry_after(headers: httpx.Headers) -> float | None:
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def classify(status: int, payload, headers: httpx.Headers | None = None) -> ProviderError:
    """Map an HTTP status and a parsed error body onto a ProviderError."""
    kind_type, code, message = _error_fields(payload)
    detail = f"HTTP {status} {_SAFE.sub('', kind_type)[:40]} {_SAFE.sub('', code)[:40]}".strip()
    wait = retry_after(headers) if headers is not None else None
    if (
        code == "context_length_exceeded"
        or kind_type == "exceed_context_size_error"
        or status == 413
        or _CONTEXT.search(message)
    ):
        return ProviderError("context_too_long", detail)
    if status in (401, 403) or kind_type == "authentication_error" or code in ("invalid_api_key",):
        return ProviderError("auth", detail)
    if status == 429 or code in ("rate_limit_exceeded",):
        return ProviderError("rate_limited", detail, retry_after=wait)
    if status in (408, 504):
        return ProviderError("timeout", detail)
    if code in WORKERS_AI_CODES:
        return ProviderError(WORKERS_AI_CODES[code], detail, retry_after=wait)
    if status >= 500 or kind_type == "server_error":
        return ProviderError("unavailable", detail, retry_after=wait)
    if status == 200 and kind_type != "invalid_request_error":
        # An error object inside a reply that had started: the server gave up.
        return ProviderError("unavailable", detail)
    return ProviderError("bad_request", detail)


def error_in(payload) -> ProviderError | None:
    """The ProviderError an in-band error object (status 200) stands for, if any."""
    if isinstance(payload, dict) and ("error" in payload or payload.get("errors")):
        return classify(200, payload)
    return None


async def _read_capped(response: httpx.Response, cap: int) -> bytes:
    body = b""
    async for chunk in response.aiter_bytes():
        body += chunk
        if len(body) > cap:
            raise ProviderError("malformed", f"body over {cap} bytes")
    return body


def parse_json(raw: bytes | str):
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise ProviderError("malformed", "invalid JSON") from None


async def _error_from(response: httpx.Response) -> ProviderError:
    try:
        payload = json.loads(await _read_capped(response, MAX_ERROR_BODY))
    except (ValueError, UnicodeDecodeError, ProviderError, httpx.HTTPError):
        payload = None
    return classify(response.status_code, payload, response.headers)


# --- sending ------------------------------------------------------------------


async def _send(endpoint, method, url, *, json_body=None, params=None, accept="*/*"):
    """Send and return a response whose headers are in and whose body is not yet read."""
    http = client()
    for attempt in range(1, ATTEMPTS + 1):
        wait = 0.25 * attempt
        try:
            request = http.build_request(
                method,
                url,
                json=json_body,
                params=params,
                headers=_headers(endpoint, accept),
                timeout=_timeout(endpoint),
            )
            response = await http.send(request, stream=True)
        except httpx.ConnectTimeout:
            error = ProviderError("timeout", "connect timed out")
        except httpx.TimeoutException:
            raise ProviderError("timeout", "no response") from None
        except httpx.TransportError as exc:
            error = ProviderError("unavailable", type(exc).__name__)
        else:
            if response.is_success:
                return response
            error = await _error_from(response)
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


async def sse_data(response: httpx.Response, deadline: float) -> AsyncIterator[str]:
    """The `data` of each server-sent event, including a final one with no blank line."""
    lines, events = SSELineDecoder(), SSEDecoder()
    chunks = response.aiter_text()
    while True:
        try:
            async with asyncio.timeout_at(deadline):
                text = await anext(chunks)
        except StopAsyncIteration:
            break
        except TimeoutError:
            raise ProviderError("timeout", "total deadline mid-reply") from None
        for line in lines.decode(text):
            event = events.decode(line)
            if event is not None and event.data:
                yield event.data
        if sum(map(len, lines.buffer)) > MAX_SSE_LINE:
            raise ProviderError("malformed", "endless line")
    for line in [*lines.flush(), ""]:
        event = events.decode(line)
        if event is not None and event.data:
            yield event.data


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
        raise ProviderError("unavailable", type(exc).__name__) from None
