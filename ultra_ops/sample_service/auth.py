"""Bearer-token authentication for the sample service: one user, a password from the environment.

Tokens are signed with a key made at start, so a restart (deploy, rollback) signs everyone out,
which is what a release of a real backend with in-memory sessions does too.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import time

TOKEN_TTL_S = 3600


class Auth:
    """Off when no password is configured: every protected endpoint then answers as `anonymous`."""

    def __init__(self, user: str, password: str | None) -> None:
        self.user, self._password = user, password
        self._key = os.urandom(32)

    @property
    def enabled(self) -> bool:
        return bool(self._password)

    def login(self, username: object, password: object) -> str | None:
        if not self.enabled or not isinstance(username, str) or not isinstance(password, str):
            return None
        # Both compared in constant time, so timing says nothing about which one was wrong.
        user_ok = hmac.compare_digest(username.encode(), self.user.encode())
        password_ok = hmac.compare_digest(password.encode(), (self._password or "").encode())
        if not (user_ok and password_ok):
            return None
        claims = f"{username}:{int(time.time()) + TOKEN_TTL_S}".encode()
        return _b64(claims) + "." + _b64(self._sign(claims))

    def user_for(self, authorization: str | None) -> str | None:
        """The user a request's `Authorization` header proves, or None."""
        if not self.enabled:
            return "anonymous"
        if not authorization or not authorization.startswith("Bearer "):
            return None
        try:
            claims_b64, signature_b64 = authorization[len("Bearer ") :].strip().split(".", 1)
            claims, signature = _unb64(claims_b64), _unb64(signature_b64)
        except ValueError:
            return None
        if not hmac.compare_digest(signature, self._sign(claims)):
            return None
        user, _, expires = claims.decode(errors="replace").rpartition(":")
        if not expires.isdigit() or int(expires) < time.time():
            return None
        return user

    def _sign(self, claims: bytes) -> bytes:
        return hmac.new(self._key, claims, hashlib.sha256).digest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (ValueError, TypeError) as exc:
        raise ValueError("malformed token") from exc
