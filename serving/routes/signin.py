"""Sign-in (open): `POST /auth/token` with a user's name and password answers a short-lived JWT
(`serving.tokens`) that works wherever an API key does. Wrong credentials → 401, the same for an unknown
user and a wrong password; attempts are rate-limited per user name like requests per key (429)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from serving.auth import Authenticator, AuthError, RateLimited, Role
from serving.payloads import SignInRequest, TokenResponse, json_response

router = APIRouter()


@router.post(
    "/auth/token", response_model=TokenResponse, responses={401: {"description": "wrong credentials"}}
)
async def sign_in(body: SignInRequest, request: Request) -> Response:
    """A JWT for a configured user (FINSTREAM_USERS); send it as `Authorization: Bearer <token>`."""
    auth: Authenticator = request.app.state.runtime.auth
    issuer = auth.issuer
    if issuer is None or not issuer.enabled:
        raise AuthError(
            401, "sign-in is not configured on this server: set FINSTREAM_USERS and FINSTREAM_JWT_SECRET"
        )
    wait = await auth.limiter.take_async(f"login:{body.username}")
    if wait > 0:
        raise RateLimited(wait)
    try:
        token, user, expires = issuer.sign_in(body.username, body.password)
    except ValueError as exc:
        raise AuthError(401, str(exc)) from None
    return json_response(
        TokenResponse(
            access_token=token,
            expires_in=int(issuer.ttl_s),
            expires_at=expires,
            role=Role(user.role).name.lower(),  # type: ignore[arg-type]
            username=user.name,
        )
    )
