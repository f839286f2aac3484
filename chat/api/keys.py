"""Personal API keys: made once, shown once, stored as a SHA-256 digest.

A key is 32 random bytes, so a plain (fast) hash is enough: there is nothing
to guess. The one way in is `Authorization: Bearer <key>`; every other header
and every cookie is ignored. A key works only while it is not revoked, not
expired, its owner is active, and the owner may use the API (the "Can create
and use personal API keys" permission, given to a group or a person in the
admin). Every check runs on every request, so a revocation, an expiry or a
deactivation counts at once.
"""

import hashlib
import secrets
from datetime import timedelta

from django.contrib.admin.models import ADDITION, CHANGE, LogEntry
from django.utils import timezone

from chat.models import ApiKey

KEY_PREFIX = "csk-"
SHOWN_CHARS = 12  # the part of a key kept in clear, to recognise it
PERMISSION = "chat.use_api"
LAST_USED_EVERY = timedelta(minutes=1)  # at most one write a minute per key


class Unauthorized(Exception):
    """401: no key, or a key that does not work (the message says which)."""


class Forbidden(Exception):
    """403: a working key whose owner may not use the API."""


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def may_use_api(user) -> bool:
    return user.is_active and user.has_perm(PERMISSION)


def create(user, name: str, expires=None, allowed_models=()) -> tuple[ApiKey, str]:
    """A new key for `user`; returns the row and the key itself, shown only now."""
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    row = ApiKey.objects.create(
        user=user, name=name, prefix=key[:SHOWN_CHARS], digest=digest(key), expires=expires
    )
    row.allowed_models.set(allowed_models)
    _audit(user, row, ADDITION, "Created API key.")
    return row, key


def revoke(by, row: ApiKey):
    if row.revoked is None:
        row.revoked = timezone.now()
        row.save(update_fields=["revoked"])
        _audit(by, row, CHANGE, "Revoked API key.")


def _audit(user, row: ApiKey, flag: int, message: str):
    """The admin's audit log (Admin → Log entries): who, which key, when."""
    LogEntry.objects.log_actions(user.pk, [row], flag, change_message=message, single_object=True)


def bearer(header: str | None) -> str:
    """The key in an Authorization header, or Unauthorized."""
    scheme, _, key = (header or "").partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise Unauthorized("Send your API key as 'Authorization: Bearer <key>'.")
    return key.strip()


def authenticate(header: str | None) -> ApiKey:
    """The key row (with its user) behind an Authorization header, or Unauthorized or
    Forbidden. Records when the key was last used."""
    key = bearer(header)
    row = ApiKey.objects.select_related("user").filter(digest=digest(key)).first()
    now = timezone.now()
    if row is None or row.revoked is not None:
        raise Unauthorized("That API key is not valid; it may have been revoked.")
    if row.expires is not None and row.expires <= now:
        raise Unauthorized("That API key has expired; make a new one on your settings page.")
    if not row.user.is_active:
        raise Unauthorized("That API key's account is deactivated.")
    if not may_use_api(row.user):
        raise Forbidden("Your account may not use the API; ask an admin.")
    if row.last_used is None or now - row.last_used >= LAST_USED_EVERY:
        ApiKey.objects.filter(pk=row.pk).update(last_used=now)
    return row
