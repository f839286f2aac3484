"""Turning what a backend answered (or failed to) into a ProviderError.

Status codes and the error bodies of OpenAI-compatible servers, llama.cpp and
Workers AI map onto a few kinds; admins also get the URL, the status and the
start of the body (with the key taken out), and a connection failure says
whether it was DNS, a refusal, TLS or a time-out.
"""

import email.utils
import re
import socket
import ssl
import time

import httpx

from providers.base import Endpoint, ProviderError

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


EXCERPT_CHARS = 300


def public_url(url) -> str:
    """The URL without its query string or any user:password part."""
    parsed = httpx.URL(str(url))
    return str(parsed.copy_with(query=None, fragment=None, userinfo=b""))


def excerpt(body: bytes, endpoint: Endpoint) -> str:
    """The start of an error body for admins, with the API key (which some servers echo)
    taken out."""
    text = body[: EXCERPT_CHARS * 4].decode("utf-8", errors="replace")
    if endpoint.api_key:
        for secret in (f"Bearer {endpoint.api_key}", endpoint.api_key):  # the longer first
            text = text.replace(secret, "[key]")
    text = " ".join(text.split())
    return text[:EXCERPT_CHARS] + ("…" if len(text) > EXCERPT_CHARS else "")


def connection_failure(exc: Exception) -> str:
    """What went wrong before any answer: DNS, refused, TLS or a time-out."""
    if isinstance(exc, httpx.TimeoutException):
        return "timed out connecting" if isinstance(exc, httpx.ConnectTimeout) else "timed out"
    chain, seen = [], exc
    while seen is not None and len(chain) < 8:
        chain.append(seen)
        seen = seen.__cause__ or seen.__context__
    text = " ".join(f"{type(e).__name__} {e}" for e in chain).lower()
    if any(isinstance(e, socket.gaierror) for e in chain) or any(
        marker in text
        for marker in ("name or service not known", "nodename nor servname", "name resolution")
    ):
        return "DNS lookup failed"
    if any(isinstance(e, ConnectionRefusedError) for e in chain) or "refused" in text:
        return "connection refused"
    if any(isinstance(e, ssl.SSLError) for e in chain) or "ssl" in text or "certificate" in text:
        return "TLS handshake failed"
    return type(exc).__name__
