"""The real-time channels over WebSocket (viewer key): `/ws/enhanced`, `/ws/stream-metrics`,
`/ws/pipeline-status`, `/ws/ai-predictions`, `/ws/risk-alerts`.

Each socket receives the channel's JSON messages (`finstream.channels`: `{type, channel, seq, ts, data}`)
as the stream publishes them. Query parameters: `symbols=A,B` keeps only those symbols' messages (messages
about no one symbol always pass); `since=<seq>` first replays the channel's messages after that number
from its history stream (a reconnecting client passes its last `seq`).

Authentication: programs send the API key (or a signed-in user's token) as a header (`X-API-Key` or
`Authorization: Bearer`); a browser, which cannot set WebSocket headers, sends `{"key": "..."}` or
`{"token": "..."}` as its first message within AUTH_TIMEOUT_S. The
key never goes into the URL (URLs end up in logs). Refusals close the socket with 1008 (policy: no, wrong or
insufficient key), 1013 (rate limited) or 1011 (no Redis: the channels need it). A client message larger
than FINSTREAM_SERVE_MAX_BODY_BYTES closes the socket with 1009, like a 413 for a body; other client
messages are ignored (a client may send pings as text). An idle socket gets a `{"type": "heartbeat"}`
message every HEARTBEAT_S seconds (on top of the server's WebSocket ping frames, which browsers hide).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from datetime import UTC, datetime

from fastapi import APIRouter, WebSocket, WebSocketDisconnect

from finstream.channels import CHANNELS
from serving.auth import AuthError, Caller, RateLimited, Role, presented_key
from serving.limits import BodyLimitOptions
from serving.relay import ChannelRelay, symbol_of
from serving.telemetry import WS_CONNECTIONS, WS_MESSAGES

log = logging.getLogger(__name__)

router = APIRouter()

AUTH_TIMEOUT_S = 5.0
#: an idle socket gets {"type": "heartbeat", "channel": ..., "ts": ...} this often
HEARTBEAT_S = 15.0
POLICY, TOO_BIG, TRY_LATER, SERVER_ERROR = 1008, 1009, 1013, 1011
MAX_MESSAGE_BYTES = BodyLimitOptions().max_body_bytes


def relay_of(websocket: WebSocket) -> ChannelRelay | None:
    """The worker's relay (created on first use), or None without Redis."""
    runtime = websocket.app.state.runtime
    relay = getattr(runtime, "relay", None)
    if relay is None and runtime.settings.redis_url:
        relay = ChannelRelay(runtime.settings.redis_url, runtime.settings.feast_project)
        runtime.relay = relay
    return relay


async def _authenticate(websocket: WebSocket) -> Caller | None:
    """The caller of an accepted socket (header key, else the first message's), or None after closing it."""
    auth = websocket.app.state.runtime.auth
    key = presented_key(websocket.headers.get("x-api-key"), websocket.headers.get("authorization"))
    try:
        if key is None:
            text = await asyncio.wait_for(websocket.receive_text(), AUTH_TIMEOUT_S)
            if len(text.encode()) > MAX_MESSAGE_BYTES:
                await websocket.close(TOO_BIG, "message too large")
                return None
            try:
                first = json.loads(text)
                key = first.get("key") or first.get("token")
            except (ValueError, AttributeError):
                key = None
        return await auth.check_async(key if isinstance(key, str) else None, Role.VIEWER)
    except TimeoutError:
        await websocket.close(POLICY, f'send {{"key": "..."}} within {AUTH_TIMEOUT_S:g} s or a key header')
    except AuthError as exc:
        await websocket.close(POLICY, str(exc)[:120])
    except RateLimited as exc:
        await websocket.close(TRY_LATER, f"rate limited: retry in {exc.retry_after:.1f} s")
    return None


@router.websocket("/ws/{channel}")
async def channel_socket(
    websocket: WebSocket, channel: str, symbols: str | None = None, since: int | None = None
) -> None:
    """Relay one real-time channel to this socket (see the module docstring)."""
    await websocket.accept()
    if channel not in CHANNELS:
        await websocket.close(POLICY, f"unknown channel {channel!r}; channels: {', '.join(CHANNELS)}")
        return
    caller = await _authenticate(websocket)
    if caller is None:
        return
    relay = relay_of(websocket)
    if relay is None:
        await websocket.close(SERVER_ERROR, "the real-time channels need Redis (FINSTREAM_REDIS_URL)")
        return
    wanted = {s.strip() for s in symbols.split(",") if s.strip()} if symbols else None
    queue = relay.subscribe(channel)
    WS_CONNECTIONS.labels(channel=channel).inc()
    listener = asyncio.create_task(_listen(websocket))
    try:
        backlog = await relay.history(channel, since) if since is not None else []
        for text in backlog:
            await _send(websocket, channel, text, wanted)
        while not listener.done():
            getter = asyncio.ensure_future(queue.get())
            done, _ = await asyncio.wait(
                {getter, listener}, timeout=HEARTBEAT_S, return_when=asyncio.FIRST_COMPLETED
            )
            if getter in done:
                await _send(websocket, channel, getter.result(), wanted)
                continue
            getter.cancel()
            if not done:  # idle: tell the client the socket is alive (browsers cannot see ping frames)
                await websocket.send_text(heartbeat(channel))
    except (WebSocketDisconnect, RuntimeError):  # the client left (or the socket closed) mid-send
        pass
    finally:
        listener.cancel()
        with contextlib.suppress(BaseException):
            await listener
        relay.unsubscribe(channel, queue)
        WS_CONNECTIONS.labels(channel=channel).dec()
        log.info("socket closed on %s (%s)", channel, caller.key_id)


def heartbeat(channel: str) -> str:
    return json.dumps({"type": "heartbeat", "channel": channel, "ts": datetime.now(UTC).isoformat()})


async def _send(websocket: WebSocket, channel: str, text: str, wanted: set[str] | None) -> None:
    if wanted is not None:
        symbol = symbol_of(text)
        if symbol is not None and symbol not in wanted:
            return
    await websocket.send_text(text)
    WS_MESSAGES.labels(channel=channel).inc()


async def _listen(websocket: WebSocket) -> None:
    """Read (and ignore) client messages until it leaves; close with 1009 on an oversized one."""
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            return
        data = message.get("bytes")
        size = len(data) if data is not None else len((message.get("text") or "").encode())
        if size > MAX_MESSAGE_BYTES:
            await websocket.close(TOO_BIG, f"message of {size} bytes over the {MAX_MESSAGE_BYTES}-byte limit")
            return
