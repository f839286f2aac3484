"""Websockets only from this site's own pages: scheme, host and port must all match.

Channels' AllowedHostsOriginValidator checks the Origin's host name against
ALLOWED_HOSTS and ignores its scheme and port, so a page on
http://chat.example.com:8080 (another program on the same host) could open a
socket with the user's cookies. Here the Origin must be exactly the address the
socket was opened on (the Host header, with https when the socket is wss or the
trusted proxy says so), or one of CSRF_TRUSTED_ORIGINS.
"""

from urllib.parse import urlsplit

from channels.security.websocket import WebsocketDenier
from django.conf import settings
from django.http.request import split_domain_port, validate_host

DEFAULT_PORTS = {"http": 80, "https": 443}


def _address(scheme: str, netloc: str) -> tuple[str, str, int] | None:
    """(scheme, host, port) with the scheme's default port filled in, or None if unreadable."""
    try:
        parsed = urlsplit(f"{scheme}://{netloc}")
        port = parsed.port or DEFAULT_PORTS.get(scheme)
    except ValueError:
        return None
    if not parsed.hostname or port is None:
        return None
    return scheme, parsed.hostname.lower(), port


def _allowed_hosts() -> list[str]:
    hosts = settings.ALLOWED_HOSTS
    if settings.DEBUG and not hosts:
        return [".localhost", "127.0.0.1", "[::1]"]  # as Django allows in development
    return hosts


def _request_scheme(scope, headers: dict) -> str:
    if scope.get("scheme") in ("wss", "https"):
        return "https"
    proxy_header = settings.SECURE_PROXY_SSL_HEADER
    if proxy_header and headers.get(b"x-forwarded-proto", b"").decode("latin-1") == "https":
        return "https"
    return "http"


def origin_allowed(scope) -> bool:
    headers = dict(scope.get("headers") or [])
    origin = headers.get(b"origin", b"").decode("latin-1").strip()
    host = headers.get(b"host", b"").decode("latin-1").strip()
    parsed = urlsplit(origin) if origin and origin != "null" else None
    if parsed is None or parsed.scheme not in DEFAULT_PORTS:
        return False
    claimed = _address(parsed.scheme, parsed.netloc)
    trusted = [_address(*urlsplit(o)[:2]) for o in settings.CSRF_TRUSTED_ORIGINS]
    if claimed is not None and claimed in trusted:
        return True
    domain, _ = split_domain_port(host)
    if not domain or not validate_host(domain, _allowed_hosts()):
        return False
    return claimed is not None and claimed == _address(_request_scheme(scope, headers), host)


class SameOriginValidator:
    def __init__(self, application):
        self.application = application

    async def __call__(self, scope, receive, send):
        if scope["type"] == "websocket" and not origin_allowed(scope):
            return await WebsocketDenier()(scope, receive, send)
        return await self.application(scope, receive, send)
