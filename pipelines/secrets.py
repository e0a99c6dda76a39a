"""Secrets at rest: Fernet tokens under RAILYARD_ENCRYPTION_KEYS (first key encrypts, all
decrypt, so keys can be rotated). Plain values exist only in memory, never in a log line."""

from __future__ import annotations

import base64
import hashlib

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured


def _fernet() -> MultiFernet:
    keys = list(settings.RAILYARD_ENCRYPTION_KEYS)
    if not keys:
        if not settings.RAILYARD_DEV:
            raise ImproperlyConfigured(
                "RAILYARD_ENCRYPTION_KEYS is not set. Generate one with "
                "`python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())'`."
            )
        # Development only: a key derived from SECRET_KEY.
        digest = hashlib.sha256(("railyard-secrets:" + settings.SECRET_KEY).encode()).digest()
        keys = [base64.urlsafe_b64encode(digest).decode()]
    try:
        return MultiFernet([Fernet(key.encode() if isinstance(key, str) else key) for key in keys])
    except ValueError:
        raise ImproperlyConfigured(
            "RAILYARD_ENCRYPTION_KEYS holds a value that is not a Fernet key (32 url-safe base64 bytes)."
        ) from None


def encrypt(plain: str) -> str:
    if not plain:
        return ""
    return _fernet().encrypt(plain.encode()).decode()


def decrypt(token: str) -> str:
    if not token:
        return ""
    try:
        return _fernet().decrypt(token.encode()).decode()
    except InvalidToken:
        raise ImproperlyConfigured(
            "A stored secret cannot be decrypted with RAILYARD_ENCRYPTION_KEYS: was a key removed?"
        ) from None
