"""FastAPI dependencies that authenticate the request's API key for a role and spend a rate-limit token.

They are `async`: a sync dependency would run in FastAPI's thread pool, a thread hop on every request.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Header, Request

from serving.auth import Authenticator, Caller, Role, presented_key


def _caller(role: Role, deferred: bool = False) -> Any:
    """A dependency that authenticates the request's key for `role` and spends one rate-limit token.

    `deferred`: with Redis buckets the token is left for `ServingRuntime.read` to spend in the same round
    trip as the feature read (one Redis round trip per request instead of two).
    """

    async def check(
        request: Request,
        x_api_key: Annotated[str | None, Header()] = None,
        authorization: Annotated[str | None, Header()] = None,
    ) -> Caller:
        auth: Authenticator = request.app.state.runtime.auth
        presented = presented_key(x_api_key, authorization)
        if deferred:
            return auth.identify_deferred(presented, role)
        return await auth.check_async(presented, role)

    return Depends(check)


ViewerKey = Annotated[Caller, _caller(Role.VIEWER)]
TraderKey = Annotated[Caller, _caller(Role.TRADER)]
AdminKey = Annotated[Caller, _caller(Role.ADMIN)]
# for endpoints that read features through `ServingRuntime.read`, which spends the token
ReadingViewer = Annotated[Caller, _caller(Role.VIEWER, deferred=True)]
ReadingTrader = Annotated[Caller, _caller(Role.TRADER, deferred=True)]
