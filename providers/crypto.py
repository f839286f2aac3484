"""Provider API keys at rest: Fernet, keyed from PROVIDER_KEYS_SECRET.

The setting may hold several comma-separated secrets: the first encrypts, every
one decrypts, so a secret can be rotated without losing stored keys.
"""

import base64
import hashlib
from functools import cache

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings


class UndecryptableKeyError(Exception):
    """The stored key was encrypted under a secret that is no longer configured."""


def _fernet_key(secret: str) -> bytes:
    # Any string works as a secret: derive the 32-byte key Fernet wants.
    return base64.urlsafe_b64encode(hashlib.sha256(secret.encode()).digest())


@cache
def _fernet(secrets: str) -> MultiFernet:
    keys = [Fernet(_fernet_key(s.strip())) for s in secrets.split(",") if s.strip()]
    return MultiFernet(keys)


def encrypt(plaintext: str) -> str:
    return _fernet(settings.PROVIDER_KEYS_SECRET).encrypt(plaintext.encode()).decode()


def decrypt(token: str) -> str:
    try:
        return _fernet(settings.PROVIDER_KEYS_SECRET).decrypt(token.encode()).decode()
    except InvalidToken:
        raise UndecryptableKeyError(
            "stored API key cannot be decrypted with PROVIDER_KEYS_SECRET"
        ) from None
