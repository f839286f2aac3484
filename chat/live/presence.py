"""Open chat sockets, and whether the people behind them still may be here.

Each process keeps a registry of its open sockets: the user, the session key
and the session's auth hash when the socket opened. Every
SOCKET_RECHECK_SECONDS one watcher per process checks them all, with two
queries whatever their number: sessions that are gone or expired (logout, a
deleted session) and accounts that are deactivated or whose password changed
(the session's auth hash no longer matches). Those sockets are told why and
closed, and a deactivated user's running replies in this process are stopped.

It reads the database, not the channel layer, so a change made from a shell, a
management command or another daphne process is seen the same way as one made
through this process's admin.
"""

import asyncio
import logging
import weakref
from collections import Counter
from dataclasses import dataclass
from importlib import import_module

from django.conf import settings
from django.contrib.auth import HASH_SESSION_KEY, get_user_model
from django.contrib.sessions.backends import db
from django.contrib.sessions.models import Session
from django.db import DatabaseError
from django.utils import timezone

from chat.db import db_background

log = logging.getLogger(__name__)

CLOSE_SIGNED_OUT = 4401
CLOSE_DEACTIVATED = 4403
CLOSE_TOO_MANY = 4429
REASONS = {
    "signed_out": (CLOSE_SIGNED_OUT, "You were signed out. Sign in again to go on."),
    "password_changed": (
        CLOSE_SIGNED_OUT,
        "Your password was changed, which signed out this page. Sign in again to go on.",
    ),
    "deactivated": (CLOSE_DEACTIVATED, "Your account was deactivated."),
}


@dataclass
class Presence:
    user_id: int
    session_key: str
    auth_hash: str
    socket: object  # the consumer; it has ended(reason)


_sockets: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict]" = weakref.WeakKeyDictionary()
_counts: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Counter]" = (
    weakref.WeakKeyDictionary()
)
_watchers: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Task]" = (
    weakref.WeakKeyDictionary()
)


def _here() -> dict[str, Presence]:
    return _sockets.setdefault(asyncio.get_running_loop(), {})


def _per_user() -> Counter:
    """Each user's open sockets on this loop: every opening asks, and counting them
    from all the sockets made a hundred tabs opening together cost their square."""
    return _counts.setdefault(asyncio.get_running_loop(), Counter())


def count_all() -> int:
    """Open sockets on every loop of this process (one under daphne)."""
    return sum(len(sockets) for sockets in list(_sockets.values()))


def count_for(user_id: int) -> int:
    return _per_user()[user_id]


def join(channel_name: str, presence: Presence):
    leave(channel_name)
    _here()[channel_name] = presence
    _per_user()[presence.user_id] += 1


def leave(channel_name: str):
    gone = _here().pop(channel_name, None)
    if gone is not None:
        counts = _per_user()
        counts[gone.user_id] -= 1
        if not counts[gone.user_id]:
            del counts[gone.user_id]


def session_identity(session) -> tuple[str, str]:
    """(session key, auth hash) of a socket's session; run off the event loop."""
    return session.session_key or "", session.get(HASH_SESSION_KEY, "")


def _live_sessions(keys: set[str]) -> set[str]:
    store = import_module(settings.SESSION_ENGINE).SessionStore
    if issubclass(store, db.SessionStore):  # all of them in one query
        return set(
            Session.objects.filter(
                session_key__in=keys, expire_date__gt=timezone.now()
            ).values_list("session_key", flat=True)
        )
    return {key for key in keys if store().exists(key)}


def verdicts(entries: list[Presence], job_users: set[int]) -> tuple[dict[int, str], set[int]]:
    """Which entries must go (by index, with the reason), and which users are deactivated."""
    alive = _live_sessions({p.session_key for p in entries})
    user_ids = {p.user_id for p in entries} | job_users
    users = {u.pk: u for u in get_user_model().objects.filter(pk__in=user_ids)}
    gone = {pk for pk in user_ids if pk not in users or not users[pk].is_active}
    ended = {}
    for index, presence in enumerate(entries):
        user = users.get(presence.user_id)
        if presence.user_id in gone:
            ended[index] = "deactivated"
        elif presence.session_key not in alive:
            ended[index] = "signed_out"
        elif user.get_session_auth_hash() != presence.auth_hash:
            # Even the page that changed it gets a new session key, so it reloads too.
            ended[index] = "password_changed"
    return ended, gone


async def check_once(running: dict):
    """`running`: this process's jobs (chat.live.jobs.JOBS), whose owners are checked too."""
    here = _here()
    entries = list(here.values())
    job_users = {job.plan.user_id for job in list(running.values())}
    if not entries and not job_users:
        return
    try:
        ended, gone = await db_background(verdicts)(entries, job_users)
    except DatabaseError:
        log.warning("could not re-check open sockets: database unavailable")
        return
    for index, reason in ended.items():
        await entries[index].socket.ended(reason)
    for job in list(running.values()):
        if job.plan.user_id in gone:
            job.stop()  # this process's own jobs: no trip through the channel layer


async def watch_forever(running: dict):
    while True:
        await asyncio.sleep(settings.SOCKET_RECHECK_SECONDS)
        try:
            await check_once(running)
        except Exception:
            log.exception("socket re-check failed; will retry")
