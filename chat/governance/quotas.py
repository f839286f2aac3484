"""Quotas: requests per minute, tokens per day, cost per month, replies at once.

Checked on the server before anything is stored, for every way of starting a
reply. Usage comes from the ledger (UsageRecord), whose row is created when a
reply starts, so a burst of regenerations counts like a burst of messages.
Days and months are UTC.
"""

import functools
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import connection
from django.db.models import F, Q, Sum
from django.utils import timezone

from chat import ownership, rows
from chat.models import ApiKey, Message, Quota, UsageRecord

CONCURRENCY_RETRY_SECONDS = 5  # a guess: replies take seconds
# An API request still marked running after this long died with its process: it
# no longer counts, and the sweep marks it interrupted. Longer than any request's
# total deadline (Provider.total_timeout, 600 s by default).
API_STALE = timedelta(hours=1)
FIELDS = ("requests_per_minute", "tokens_per_day", "cost_per_month", "max_concurrent")


class QuotaExceeded(Exception):
    """A limit is reached; the message says which and when it resets."""

    def __init__(self, message: str, retry_after: float = 1.0):
        super().__init__(message)
        self.retry_after = max(1, round(retry_after))  # seconds, for the API's Retry-After


@dataclass
class Limits:
    requests_per_minute: int | None = None
    tokens_per_day: int | None = None
    cost_per_month: Decimal | None = None
    max_concurrent: int | None = None

    def is_open(self) -> bool:
        """No limit that the ledger counts against (the concurrency cap counts replies)."""
        ledger_limits = (self.requests_per_minute, self.tokens_per_day, self.cost_per_month)
        return all(limit is None for limit in ledger_limits)


def limits_for(user) -> Limits:
    if not _any(_quota_sql(), [user.pk, user.pk]):  # most people: no quota, no ORM query
        return Limits(max_concurrent=settings.MAX_CONCURRENT_GENERATIONS)
    quotas = list(Quota.objects.filter(Q(user=user) | Q(group__user=user)))
    own = next((quota for quota in quotas if quota.user_id == user.pk), None)
    groups = [quota for quota in quotas if quota.user_id != user.pk]
    limits = Limits()
    if own is None and user.is_staff:
        limits.max_concurrent = settings.MAX_CONCURRENT_GENERATIONS
        return limits  # admins are exempt unless a quota is set for them
    for field in FIELDS:
        value = getattr(own, field) if own else None
        if value is None and groups:
            values = [getattr(q, field) for q in groups]
            value = None if None in values else max(values)  # the most generous group
        setattr(limits, field, value)
    if limits.max_concurrent is None:
        limits.max_concurrent = settings.MAX_CONCURRENT_GENERATIONS
    return limits


def day_start(now: datetime) -> datetime:
    return now.replace(hour=0, minute=0, second=0, microsecond=0)


def month_start(now: datetime) -> datetime:
    return day_start(now).replace(day=1)


def next_month(now: datetime) -> datetime:
    start = month_start(now)
    return (start + timedelta(days=32)).replace(day=1)


def _in(delta: timedelta) -> str:
    seconds = max(1, int(delta.total_seconds()))
    if seconds < 120:
        return f"{seconds} seconds"
    hours, minutes = divmod(seconds // 60, 60)
    return f"{hours} h {minutes} min" if hours else f"{minutes} min"


@dataclass
class Usage:
    requests_last_minute: int
    oldest_in_minute: datetime | None
    tokens_today: int
    cost_this_month: Decimal


def usage_of(user, now: datetime, limits: Limits | None = None) -> Usage:
    """What the user used; with `limits`, only the parts a limit applies to (the rest are
    zero), so that sending with no quota set costs no ledger queries."""
    used = Usage(0, None, 0, Decimal(0))
    if limits is not None and limits.is_open():
        return used  # most people: not even a queryset built (a send made one every time)
    records = UsageRecord.objects.filter(user=user)
    if limits is None or limits.requests_per_minute is not None:
        minute = records.filter(created__gt=now - timedelta(minutes=1))
        used.requests_last_minute = minute.count()
        used.oldest_in_minute = minute.order_by("created").values_list("created", flat=True).first()
    if limits is None or limits.tokens_per_day is not None:
        tokens = records.filter(created__gte=day_start(now)).aggregate(
            total=Sum(F("prompt_tokens") + F("completion_tokens"))
        )["total"]
        used.tokens_today = tokens or 0
    if limits is None or limits.cost_per_month is not None:
        cost = records.filter(created__gte=month_start(now)).aggregate(total=Sum("cost"))["total"]
        used.cost_this_month = cost or Decimal(0)
    return used


@dataclass
class InFlight:
    """What the concurrency cap counts: the person's replies being written, in any
    conversation and process, and their API requests in flight (their ledger rows)."""

    replies: list[int]
    api_requests: int = 0

    def count(self, leaving_out: int | None = None) -> int:
        """How many; `leaving_out`: a start's own reply, already written."""
        return len([pk for pk in self.replies if pk != leaving_out]) + self.api_requests


def in_flight(user_id) -> InFlight:
    """One statement, as every start asks it under the account's lock (on PostgreSQL,
    each statement there is a round trip the account's other starts wait through). The
    ledger is read only for people with a key: for the rest, one indexed lookup."""
    since = rows.db_value(UsageRecord, "created", timezone.now() - API_STALE)
    streaming, api = Message.Status.STREAMING.value, UsageRecord.Purpose.API.value
    with connection.cursor() as cursor:
        cursor.execute(
            _in_flight_sql(), [user_id, streaming, user_id, user_id, api, streaming, since]
        )
        found = cursor.fetchall()
    return InFlight(
        replies=[pk for kind, pk in found if kind == "reply"],
        api_requests=sum(1 for kind, _ in found if kind == "api"),
    )


@functools.cache
def _in_flight_sql() -> str:
    ledger, keys = UsageRecord._meta.db_table, ApiKey._meta.db_table
    return f"""
        SELECT 'reply', s.id FROM ({ownership.streaming_sql()}) s
        UNION ALL
        SELECT 'api', u.id FROM {ledger} u
        WHERE EXISTS (SELECT 1 FROM {keys} k WHERE k.user_id = %s)
        AND u.user_id = %s AND u.purpose = %s AND u.status = %s AND u.created > %s"""  # noqa: S608


def _any(sql: str, params) -> bool:
    """Whether a plain query finds a row. Every start asks; the ORM spent 0.3 ms
    building it, and the answer is nearly always no."""
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchone() is not None


@functools.cache
def _quota_sql() -> str:
    """A quota of the person's own, or of one of their groups."""
    memberships = get_user_model().groups.through._meta.db_table
    return f"""
        SELECT 1 FROM {Quota._meta.db_table} WHERE user_id = %s
        OR group_id IN (SELECT group_id FROM {memberships} WHERE user_id = %s)"""  # noqa: S608


@dataclass
class Allowance:
    """What is left of the limits that bound a reply's length (None: no limit)."""

    tokens_left: int | None = None
    cost_left: Decimal | None = None


def check(user, running: int, limits: Limits | None = None) -> Allowance:
    """Raise QuotaExceeded with a message saying which limit and when it resets;
    otherwise say how many tokens and how much money are left to spend. `limits`:
    limits_for(user), if read already."""
    limits = limits or limits_for(user)
    if running >= limits.max_concurrent:
        raise QuotaExceeded(
            f"You already have {running} replies being written; wait for one to finish or stop it.",
            CONCURRENCY_RETRY_SECONDS,
        )
    now = timezone.now()
    used = usage_of(user, now, limits)
    rpm = limits.requests_per_minute
    if rpm is not None and used.requests_last_minute >= rpm:
        wait = (used.oldest_in_minute or now) + timedelta(minutes=1) - now
        raise QuotaExceeded(
            f"You have used your {rpm} requests per minute; try again in {_in(wait)}.",
            wait.total_seconds(),
        )
    if limits.tokens_per_day is not None and used.tokens_today >= limits.tokens_per_day:
        reset = day_start(now) + timedelta(days=1)
        raise QuotaExceeded(
            f"You have used your {limits.tokens_per_day:,} tokens for today; the limit resets "
            f"at 00:00 UTC, in {_in(reset - now)}.",
            (reset - now).total_seconds(),
        )
    if limits.cost_per_month is not None and used.cost_this_month >= limits.cost_per_month:
        reset = next_month(now)
        raise QuotaExceeded(
            f"You have used your ${limits.cost_per_month:.2f} budget for this month; it resets "
            f"on {reset:%-d %B} at 00:00 UTC.",
            (reset - now).total_seconds(),
        )
    return Allowance(
        tokens_left=None
        if limits.tokens_per_day is None
        else limits.tokens_per_day - used.tokens_today,
        cost_left=None
        if limits.cost_per_month is None
        else limits.cost_per_month - used.cost_this_month,
    )


def no_room_message(kind: str) -> str:
    """The quota left cannot pay for the prompt itself: which one, and when it resets."""
    now = timezone.now()
    if kind == "tokens":
        reset = day_start(now) + timedelta(days=1)
        return (
            "Not enough of your daily tokens are left for this message; the limit resets at "
            f"00:00 UTC, in {_in(reset - now)}."
        )
    return (
        "Not enough of your monthly budget is left for this message; it resets on "
        f"{next_month(now):%-d %B} at 00:00 UTC."
    )
