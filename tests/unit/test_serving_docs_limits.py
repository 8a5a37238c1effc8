"""The service app's /docs page loads only files it serves itself (no CDN), also through BentoML's mount, and
request bodies over the size limit get 413 before /predict runs, whether they declare a Content-Length or not.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
from _bentoml_impl.server.mount import PassiveMount  # how BentoML mounts @bentoml.asgi_app apps
from starlette.applications import Starlette
from starlette.routing import Mount
from starlette.testclient import TestClient
from tests_support import isolate_env

from finstream.errors import UnknownSymbol
from finstream.models.champions import ABSettings
from serving.app import app
from serving.auth import Caller, Role
from serving.limits import MIB, BodyLimitMiddleware, BodyLimitOptions

LIMIT = next(m.kwargs["max_body_bytes"] for m in app.user_middleware if m.cls is BodyLimitMiddleware)
ASSETS = {  # what the page links to: content type, smallest plausible size
    "swagger-ui-bundle.js": ("javascript", 500_000),
    "swagger-ui.css": ("text/css", 50_000),
    "favicon.png": ("image/png", 100),
}


class FakeRuntime:
    """Stands in for the worker's runtime: records which requests reached /predict's key check and its
    feature read, and answers 404 (no features) for the symbols asked."""

    def __init__(self) -> None:
        self.auth = self
        self.models = SimpleNamespace(ab=ABSettings("off", 0.0))
        self.key_checks = 0
        self.reads: list[list[str]] = []

    def identify_deferred(self, presented: str | None, needed: Role) -> Caller:
        self.key_checks += 1
        return Caller("key0", Role.TRADER)

    async def read(self, caller: Caller, symbols: Sequence[str]) -> None:
        self.reads.append(list(symbols))
        raise UnknownSymbol(symbols)


@pytest.fixture
def runtime(monkeypatch: pytest.MonkeyPatch) -> FakeRuntime:
    fake = FakeRuntime()
    monkeypatch.setattr(app.state, "runtime", fake, raising=False)
    return fake


@pytest.fixture
def client(runtime: FakeRuntime) -> Iterator[TestClient]:
    with TestClient(app) as c:
        yield c


def _page_urls(html: str) -> list[str]:
    """Every URL the docs page loads: stylesheet, icon, script and the OpenAPI document."""
    return re.findall(r'(?:href|src)="([^"]+)"', html) + re.findall(r"url: '([^']+)'", html)


def _check_docs(client: TestClient, root: str) -> None:
    page = client.get(f"{root}/docs")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    html = page.text
    assert "http://" not in html and "https://" not in html  # no CDN, no absolute URL of any host
    assert '"validatorUrl": null' in html  # Swagger UI's default badge image comes from validator.swagger.io
    urls = _page_urls(html)
    assert sorted(urls) == sorted(
        [f"{root}/docs/assets/{name}" for name in ASSETS] + [f"{root}/openapi.json"]
    )
    for name, (content_type, min_size) in ASSETS.items():
        asset = client.get(f"{root}/docs/assets/{name}")
        assert asset.status_code == 200, name
        assert content_type in asset.headers["content-type"], name
        assert len(asset.content) >= min_size, name
    assert b"SwaggerUIBundle" in client.get(f"{root}/docs/assets/swagger-ui-bundle.js").content
    assert client.get(f"{root}/docs/assets/favicon.png").content.startswith(b"\x89PNG")
    spec = client.get(f"{root}/openapi.json")
    assert spec.status_code == 200 and spec.json()["openapi"].startswith("3.1")  # Swagger UI 5 renders 3.1
    assert not any(path.startswith("/docs") for path in spec.json()["paths"])


def test_docs_page_loads_only_local_assets(client: TestClient) -> None:
    _check_docs(client, "")
    assert client.get("/docs/oauth2-redirect").status_code == 200


def test_docs_assets_resolve_through_bentomls_mount_and_below_a_prefix(runtime: FakeRuntime) -> None:
    """BentoML mounts the app at "/" with its PassiveMount; behind a prefix the URLs follow the root path."""
    for outer, root in (
        (Starlette(routes=[PassiveMount("/", app)]), ""),
        (Starlette(routes=[Mount("/api", app)]), "/api"),
    ):
        with TestClient(outer) as client:
            _check_docs(client, root)


def test_body_limit_is_a_serving_setting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    isolate_env(monkeypatch, tmp_path)
    assert BodyLimitOptions().max_body_bytes == MIB
    monkeypatch.setenv("FINSTREAM_SERVE_MAX_BODY_BYTES", "2048")
    assert BodyLimitOptions().max_body_bytes == 2048
    with pytest.raises(ValueError, match="positive"):
        BodyLimitMiddleware(app, 0)


def test_declared_oversize_body_is_refused_before_the_endpoint_runs(
    client: TestClient, runtime: FakeRuntime
) -> None:
    body = b'{"symbols": ["' + b"A" * (2 * MIB) + b'"]}'
    response = client.post("/predict", content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 413
    detail = response.json()["detail"]
    assert f"{len(body)} bytes" in detail and f"limit of {LIMIT} bytes" in detail
    assert response.headers["connection"] == "close"
    assert runtime.key_checks == 0 and runtime.reads == []


def test_chunked_oversize_body_is_refused(client: TestClient, runtime: FakeRuntime) -> None:
    """No Content-Length: httpx sends a generator chunked (the TestClient passes it on in one message)."""

    def chunks() -> Iterator[bytes]:
        yield b'{"symbols": ["'
        for _ in range(32):
            yield b"A" * (64 * 1024)
        yield b'"]}'

    response = client.post("/predict", content=chunks(), headers={"Content-Type": "application/json"})
    assert response.status_code == 413
    detail = response.json()["detail"]
    assert "chunked" in detail and f"limit of {LIMIT} bytes" in detail
    assert runtime.key_checks == 0 and runtime.reads == []


def test_streamed_body_is_read_only_up_to_the_limit(runtime: FakeRuntime) -> None:
    """httpx's ASGI transport passes each chunk as one message: reading stops at the one that crosses."""
    chunk = 64 * 1024
    pulled = 0

    async def chunks() -> AsyncIterator[bytes]:
        nonlocal pulled
        for _ in range(4 * LIMIT // chunk):
            pulled += 1
            yield b"A" * chunk

    async def post() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
            return await http.post("/predict", content=chunks(), headers={"Content-Type": "application/json"})

    response = asyncio.run(post())
    assert response.status_code == 413
    assert pulled == LIMIT // chunk + 1  # the first chunk past the limit, not one more
    assert f"at least {pulled * chunk} bytes" in response.json()["detail"]
    assert runtime.key_checks == 0 and runtime.reads == []


@pytest.mark.parametrize("chunked", [False, True])
def test_small_body_reaches_the_endpoint(client: TestClient, runtime: FakeRuntime, chunked: bool) -> None:
    body = b'{"symbols": ["000300.SH", "^GSPC"]}'
    content = iter([body[:10], body[10:]]) if chunked else body
    response = client.post("/predict", content=content, headers={"Content-Type": "application/json"})
    assert response.status_code == 404  # the fake runtime's answer: /predict parsed the body and read
    assert "no features for 000300.SH, ^GSPC" in response.json()["detail"]
    assert runtime.key_checks == 1 and runtime.reads == [["000300.SH", "^GSPC"]]


def test_body_at_exactly_the_limit_is_accepted(client: TestClient, runtime: FakeRuntime) -> None:
    head, tail = b'{"symbols": ["', b'"]}'
    body = head + b"A" * (LIMIT - len(head) - len(tail)) + tail
    assert len(body) == LIMIT
    response = client.post("/predict", content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 404  # not refused: parsed, and the (fake) store knows no such symbol
    assert [len(symbols[0]) for symbols in runtime.reads] == [LIMIT - len(head) - len(tail)]
