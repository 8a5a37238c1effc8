"""Sign-in for people: users with hashed passwords, and the short-lived JWTs the service issues to them.

Users come from `FINSTREAM_USERS` (JSON) or the file `FINSTREAM_USERS_FILE` (JSON), e.g.
``{"alice": {"role": "viewer", "password_hash": "$argon2id$v=19$..."}}``; hashes are Argon2id
(`pwdlib`), made with `finstream hash-password`; no password is ever stored or logged in clear. A user
signs in at `POST /auth/token` and gets a JWT (PyJWT, HS256, key `FINSTREAM_JWT_SECRET`, at least 32
bytes) with `sub`, `role`, `iat`, `exp` (`FINSTREAM_JWT_TTL_S`, default 900 s) and `iss` "finstream". The
token is presented like an API key (`Authorization: Bearer <token>`, or `{"token": ...}` as a WebSocket's
first message). Verification accepts HS256 only (so `alg: none` and algorithm swaps fail), requires every
claim, and grants the lower of the token's role and the user's current one: a user removed or demoted
since the token was issued loses the access at once.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from finstream.errors import ConfigError

log = logging.getLogger(__name__)

USERS_ENV = "FINSTREAM_USERS"
USERS_FILE_ENV = "FINSTREAM_USERS_FILE"
SECRET_ENV = "FINSTREAM_JWT_SECRET"
TTL_ENV = "FINSTREAM_JWT_TTL_S"
ALGORITHM = "HS256"
ISSUER = "finstream"
MIN_SECRET_BYTES = 32
DEFAULT_TTL_S = 900


@dataclass(frozen=True)
class User:
    name: str
    role: int  # serving.auth.Role's value
    password_hash: str


def _hasher() -> Any:
    from pwdlib import PasswordHash

    return PasswordHash.recommended()


def hash_password(password: str) -> str:
    """The Argon2id hash of `password` (what FINSTREAM_USERS holds)."""
    if len(password) < 8:
        raise ConfigError("a password needs at least 8 characters")
    return str(_hasher().hash(password))


def parse_users(text: str | None, roles: dict[str, int]) -> dict[str, User]:
    """{name: User} from the JSON of FINSTREAM_USERS; ConfigError naming the bad entry."""
    if not text or not text.strip():
        return {}
    try:
        raw = json.loads(text)
    except ValueError as exc:
        raise ConfigError(f"{USERS_ENV} is not JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(
            f'{USERS_ENV} must be an object: {{"alice": {{"role": ..., "password_hash": ...}}}}'
        )
    users: dict[str, User] = {}
    for name, entry in raw.items():
        if not isinstance(entry, dict):
            raise ConfigError(f"{USERS_ENV}: user {name!r} must be an object with role and password_hash")
        role, hashed = entry.get("role"), entry.get("password_hash")
        if role not in roles:
            raise ConfigError(f"{USERS_ENV}: user {name!r} has role {role!r}; use one of {', '.join(roles)}")
        if not isinstance(hashed, str) or not hashed.startswith("$argon2"):
            raise ConfigError(
                f"{USERS_ENV}: user {name!r} needs an Argon2 password_hash (make one with "
                "`finstream hash-password`); plain passwords are not accepted"
            )
        users[str(name)] = User(str(name), roles[role], hashed)
    return users


class TokenIssuer:
    """Signs users in and verifies their tokens (see the module docstring)."""

    def __init__(self, users: dict[str, User], secret: str | None, ttl_s: float = DEFAULT_TTL_S) -> None:
        if users and not secret:
            raise ConfigError(f"{USERS_ENV} is set but {SECRET_ENV} is not: tokens cannot be signed")
        if secret and len(secret.encode()) < MIN_SECRET_BYTES:
            raise ConfigError(f"{SECRET_ENV} must be at least {MIN_SECRET_BYTES} bytes")
        if ttl_s <= 0:
            raise ConfigError(f"{TTL_ENV} must be positive")
        self.users = users
        self._secret = secret
        self.ttl_s = ttl_s
        self._dummy: str | None = None

    @classmethod
    def from_env(cls, roles: dict[str, int]) -> TokenIssuer:
        text = os.environ.get(USERS_ENV)
        path = os.environ.get(USERS_FILE_ENV)
        if not text and path:
            text = Path(path).read_text(encoding="utf-8")
        ttl = float(os.environ.get(TTL_ENV, DEFAULT_TTL_S))
        return cls(parse_users(text, roles), os.environ.get(SECRET_ENV), ttl)

    @property
    def enabled(self) -> bool:
        return bool(self.users and self._secret)

    def sign_in(self, username: str, password: str) -> tuple[str, User, float]:
        """(token, user, expiry as a Unix time) for valid credentials; ValueError otherwise (the same for an
        unknown user and a wrong password, after the same Argon2 work)."""
        hasher = _hasher()
        user = self.users.get(username)
        if user is None:
            if self._dummy is None:
                self._dummy = hasher.hash("not-a-password")
            hasher.verify(password, self._dummy)
            raise ValueError("wrong username or password")
        if not hasher.verify(password, user.password_hash):
            raise ValueError("wrong username or password")
        return self.issue(user)

    def issue(self, user: User, now: float | None = None) -> tuple[str, User, float]:
        import jwt

        issued = time.time() if now is None else now
        expires = issued + self.ttl_s
        claims = {"sub": user.name, "role": user.role, "iat": int(issued), "exp": int(expires), "iss": ISSUER}
        return jwt.encode(claims, self._secret, algorithm=ALGORITHM), user, expires

    def verify(self, token: str) -> tuple[str, int]:
        """(user name, granted role value) of a valid token; ValueError saying why it is not."""
        import jwt

        if not self.enabled:
            raise ValueError("this server issues no tokens (no users configured)")
        try:
            claims = jwt.decode(
                token,
                self._secret,
                algorithms=[ALGORITHM],
                issuer=ISSUER,
                options={"require": ["sub", "role", "iat", "exp", "iss"]},
            )
        except jwt.ExpiredSignatureError:
            raise ValueError("the token has expired: sign in again") from None
        except jwt.InvalidTokenError as exc:
            raise ValueError(f"invalid token ({type(exc).__name__})") from None
        user = self.users.get(str(claims["sub"]))
        if user is None:
            raise ValueError("the token's user no longer exists")
        role = claims["role"]
        if not isinstance(role, int) or isinstance(role, bool):
            raise ValueError("invalid token (role)")
        return user.name, min(role, user.role)


def looks_like_jwt(text: str) -> bool:
    """Three base64url segments separated by dots (an API key never has that shape here)."""
    return text.count(".") == 2 and all(text.split("."))
