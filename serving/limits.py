"""Request size limit: a body over `max_body_bytes` gets 413 `{"detail": ...}` before any route parses it.

A plain ASGI middleware (Starlette's BaseHTTPMiddleware would add a task per request). A declared
Content-Length over the limit is refused before the app is called at all; a body without one (chunked) is
counted as the app reads it, and reading stops at the first message that crosses the limit.
"""

from __future__ import annotations

import logging

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger(__name__)

MIB = 1024 * 1024


class BodyLimitOptions(BaseSettings):
    """The request size limit, from FINSTREAM_SERVE_MAX_BODY_BYTES (the prefix of the other serving knobs)."""

    model_config = SettingsConfigDict(env_prefix="FINSTREAM_SERVE_", extra="ignore")

    #: largest request body accepted, in bytes (larger ones get 413); /ws/* messages will share it
    max_body_bytes: int = Field(default=MIB, gt=0)


class BodyTooLarge(HTTPException):
    """A request body over the limit (413). Raised from `receive` while a chunked body streams in: FastAPI
    re-raises HTTPExceptions from its body read, so its exception handling answers with this detail."""

    def __init__(self, limit: int, size: int, declared: bool) -> None:
        size_text = f"{size} bytes (Content-Length)" if declared else f"at least {size} bytes (chunked)"
        super().__init__(
            413,
            f"request body too large: {size_text} exceeds the limit of {limit} bytes "
            "(FINSTREAM_SERVE_MAX_BODY_BYTES)",
            headers={"Connection": "close"},  # the rest of the body is never read
        )
        self.limit = limit
        self.size = size


class BodyLimitMiddleware:
    """Refuses request bodies over `max_body_bytes` with 413 before the app reads them."""

    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        if max_body_bytes <= 0:
            raise ValueError(f"max_body_bytes must be positive, got {max_body_bytes}")
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self._http(scope, receive, send)
            return
        # "websocket": no /ws/* channels yet. When they land, the same limit applies per message: wrap
        # `receive` here, and a "websocket.receive" whose bytes/text exceed max_body_bytes closes the
        # socket with code 1009 (message too big) before the endpoint sees it.
        await self.app(scope, receive, send)

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        limit = self.max_body_bytes
        declared = _content_length(scope)
        if declared is not None:
            if declared > limit:
                await _refuse(scope, receive, send, BodyTooLarge(limit, declared, declared=True))
                return
            # the HTTP server ends the body at Content-Length, so nothing to count (the hot path)
            await self.app(scope, receive, send)
            return

        received = 0
        refused: BodyTooLarge | None = None
        response_started = False

        async def counted() -> Message:
            nonlocal received, refused
            if refused is not None:  # the body was abandoned at the limit: to the app, the client is gone
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    refused = BodyTooLarge(limit, received, declared=False)
                    _log_refusal(scope, refused)
                    raise refused
            return message

        async def tracked(message: Message) -> None:
            nonlocal response_started
            if message["type"] == "http.response.start":
                response_started = True
            await send(message)

        try:
            await self.app(scope, counted, tracked)
        except BodyTooLarge as exc:
            if response_started:  # the app had answered already: nothing left to tell the client
                raise
            await _respond(scope, receive, send, exc)


def _content_length(scope: Scope) -> int | None:
    """The request's Content-Length, or None when absent or not a number (then the body is counted)."""
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


async def _refuse(scope: Scope, receive: Receive, send: Send, exc: BodyTooLarge) -> None:
    """Answer a declared oversize body without calling the app."""
    _log_refusal(scope, exc)
    await _respond(scope, receive, send, exc)


async def _respond(scope: Scope, receive: Receive, send: Send, exc: BodyTooLarge) -> None:
    await JSONResponse({"detail": exc.detail}, exc.status_code, exc.headers)(scope, receive, send)


def _log_refusal(scope: Scope, exc: BodyTooLarge) -> None:
    fields = {"path": scope.get("path"), "method": scope.get("method"), "limit": exc.limit, "size": exc.size}
    log.info("request body refused (413)", extra=fields)
