"""Login brute-force protection: after repeated failures, refuse for a while.

Failures are counted per account name and per client address in the cache
(Redis when REDIS_URL is set, so every process sees the same counts). While an
account or address is locked, even the right password is refused, so guessing
gains nothing; the person is told when to try again.
"""

import hashlib
import ipaddress
import time

from django.conf import settings
from django.core.cache import cache

WINDOW_SECONDS = 15 * 60
MAX_PER_ACCOUNT = 5
MAX_PER_ADDRESS = 20


def client_address(request) -> str:
    """The address of whoever is on the other side of our trusted reverse proxies.

    With TRUSTED_PROXY_COUNT = N, each of the N proxies appended the address it
    saw to X-Forwarded-For, so the client is the Nth entry from the right.
    Anything to the left of it came from the client and proves nothing (daphne's
    --proxy-headers takes the leftmost entry, which is why we do not rely on it).
    """
    peer = request.META.get("REMOTE_ADDR", "")
    hops = settings.TRUSTED_PROXY_COUNT
    if not hops:
        return peer
    forwarded = [a.strip() for a in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",")]
    forwarded = [a for a in forwarded if a]
    if not forwarded:
        return peer
    candidate = forwarded[-hops] if len(forwarded) >= hops else forwarded[0]
    try:
        return str(ipaddress.ip_address(candidate))
    except ValueError:
        return peer  # not an address: a misconfigured proxy, or a forgery


def _keys(username: str, address: str) -> list[tuple[str, int]]:
    account = hashlib.sha256(username.strip().lower().encode()).hexdigest()[:32]
    return [
        (f"login-fail:acct:{account}", MAX_PER_ACCOUNT),
        (f"login-fail:addr:{address}", MAX_PER_ADDRESS),
    ]


def locked_for(username: str, address: str) -> int:
    """Seconds until the next attempt is allowed (0 if allowed now)."""
    now = time.time()
    wait = 0
    for key, limit in _keys(username, address):
        entry = cache.get(key)
        if entry and entry["count"] >= limit:
            wait = max(wait, int(entry["first"] + WINDOW_SECONDS - now) + 1)
    return max(wait, 0)


def record_failure(username: str, address: str):
    now = time.time()
    for key, _ in _keys(username, address):
        entry = cache.get(key) or {"count": 0, "first": now}
        if now - entry["first"] > WINDOW_SECONDS:
            entry = {"count": 0, "first": now}
        entry["count"] += 1
        cache.set(key, entry, WINDOW_SECONDS)


def clear(username: str, address: str):
    cache.delete(_keys(username, address)[0][0])
