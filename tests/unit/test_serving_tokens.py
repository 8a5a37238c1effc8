"""Sign-in and JWTs (serving.tokens, serving.auth): Argon2id password hashes, tokens that expire, and every
forged or stale token refused: tampered claims, `alg: none`, another algorithm, another key, missing
claims, a removed or demoted user; roles apply as for API keys; neither passwords nor tokens reach the
logs."""

from __future__ import annotations

import base64
import json
import logging
import time
from types import SimpleNamespace

import jwt
import pytest
from fastapi.testclient import TestClient

from finstream.errors import ConfigError
from serving.auth import Authenticator, AuthError, Role, TokenBucket
from serving.tokens import TokenIssuer, hash_password, parse_users

SECRET = "s" * 40
ROLES = {r.name.lower(): r.value for r in Role}


@pytest.fixture(scope="module")
def hashes() -> dict[str, str]:
    return {"alice": hash_password("alice-password"), "bob": hash_password("bob-password")}


def issuer_for(hashes: dict[str, str], roles: dict[str, str] | None = None, ttl: float = 900) -> TokenIssuer:
    roles = roles or {"alice": "viewer", "bob": "admin"}
    users = {name: {"role": roles[name], "password_hash": hashes[name]} for name in roles}
    return TokenIssuer(parse_users(json.dumps(users), ROLES), SECRET, ttl)


def auth_for(issuer: TokenIssuer) -> Authenticator:
    return Authenticator({"a-key": Role.TRADER}, TokenBucket(100, 100), issuer)


def test_hashes_are_argon2id_and_plain_passwords_are_refused(hashes: dict[str, str]) -> None:
    assert hashes["alice"].startswith("$argon2id$") and "alice-password" not in hashes["alice"]
    with pytest.raises(ConfigError, match="Argon2 password_hash"):
        parse_users(json.dumps({"eve": {"role": "admin", "password_hash": "hunter22"}}), ROLES)
    with pytest.raises(ConfigError, match="role 'root'"):
        parse_users(json.dumps({"eve": {"role": "root", "password_hash": hashes["alice"]}}), ROLES)
    with pytest.raises(ConfigError, match="FINSTREAM_JWT_SECRET"):
        TokenIssuer(
            parse_users(json.dumps({"a": {"role": "viewer", "password_hash": hashes["alice"]}}), ROLES), None
        )
    with pytest.raises(ConfigError, match="at least 32 bytes"):
        TokenIssuer({}, "short")


def test_sign_in_gives_a_token_that_works_like_a_key_with_its_role(hashes: dict[str, str]) -> None:
    issuer = issuer_for(hashes)
    token, user, expires = issuer.sign_in("alice", "alice-password")
    assert user.name == "alice" and expires == pytest.approx(time.time() + 900, abs=5)
    claims = jwt.decode(token, SECRET, algorithms=["HS256"])
    assert claims["sub"] == "alice" and claims["role"] == Role.VIEWER and claims["iss"] == "finstream"
    auth = auth_for(issuer)
    caller = auth.check(token, Role.VIEWER)
    assert caller.key_id == "user:alice" and caller.role == Role.VIEWER
    with pytest.raises(AuthError) as forbidden:
        auth.check(token, Role.TRADER)
    assert forbidden.value.status == 403 and "grants viewer" in str(forbidden.value)
    assert auth.check("a-key", Role.TRADER).role == Role.TRADER  # keys keep working
    for name, password in (("alice", "wrong-password"), ("mallory", "alice-password")):
        with pytest.raises(ValueError, match="wrong username or password"):
            issuer.sign_in(name, password)


def _forge(claims: dict, header: dict) -> str:
    def part(obj: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()

    return f"{part(header)}.{part(claims)}."


def test_forged_expired_and_stale_tokens_are_401_or_403(hashes: dict[str, str]) -> None:
    issuer = issuer_for(hashes)
    auth = auth_for(issuer)
    token, _, _ = issuer.sign_in("alice", "alice-password")
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    now = int(time.time())
    admin_claims = {**claims, "role": int(Role.ADMIN)}
    cases = {
        "expired": issuer.issue(issuer.users["alice"], now=time.time() - 2000)[0],
        "tampered role": ".".join([header, _forge(admin_claims, {})[:-1].split(".")[1], signature]),
        "alg none": _forge(admin_claims, {"alg": "none", "typ": "JWT"}),
        "other algorithm": jwt.encode(admin_claims, SECRET * 2, algorithm="HS512"),
        "other key": jwt.encode(admin_claims, "k" * 40, algorithm="HS256"),
        "no exp": jwt.encode(
            {k: v for k, v in admin_claims.items() if k != "exp"}, SECRET, algorithm="HS256"
        ),
        "unknown user": jwt.encode(
            {**admin_claims, "sub": "mallory", "exp": now + 60}, SECRET, algorithm="HS256"
        ),
    }
    for case, forged in cases.items():
        with pytest.raises(AuthError) as refused:
            auth.check(forged, Role.VIEWER)
        assert refused.value.status == 401, case
    with pytest.raises(AuthError, match="expired: sign in again"):
        auth.check(cases["expired"], Role.VIEWER)
    # a token signed for bob as admin; bob is then demoted: the lower role applies at once
    bob_token, _, _ = issuer.sign_in("bob", "bob-password")
    demoted = auth_for(issuer_for(hashes, {"alice": "viewer", "bob": "viewer"}))
    assert demoted.check(bob_token, Role.VIEWER).role == Role.VIEWER
    with pytest.raises(AuthError) as escalation:
        demoted.check(bob_token, Role.ADMIN)
    assert escalation.value.status == 403


def test_the_sign_in_endpoint_and_no_secret_in_the_logs(
    hashes: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    from serving.app import app

    issuer = issuer_for(hashes)
    app.state.runtime = SimpleNamespace(auth=Authenticator({}, TokenBucket(0.001, 3), issuer))
    caplog.set_level(logging.DEBUG)
    with TestClient(app) as client:
        good = client.post("/auth/token", json={"username": "bob", "password": "bob-password"})
        bad = client.post("/auth/token", json={"username": "bob", "password": "nope-nope"})
        unknown = client.post("/auth/token", json={"username": "eve", "password": "nope-nope"})
        extra = client.post("/auth/token", json={"username": "bob", "password": "x", "role": "admin"})
        throttled = [client.post("/auth/token", json={"username": "bob", "password": "x"}) for _ in range(3)]
    assert good.status_code == 200, good.text
    body = good.json()
    assert body["token_type"] == "bearer" and body["role"] == "admin" and body["expires_in"] == 900
    assert app.state.runtime.auth.check(body["access_token"], Role.ADMIN).key_id == "user:bob"
    assert bad.status_code == unknown.status_code == 401
    assert bad.json() == unknown.json() == {"detail": "wrong username or password"}
    assert extra.status_code == 422
    assert throttled[-1].status_code == 429 and "Retry-After" in throttled[-1].headers
    assert body["access_token"] not in caplog.text and "bob-password" not in caplog.text
