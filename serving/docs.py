"""Swagger UI at /docs from files installed with the service, so the page works with no internet.

The JS, CSS and favicon are the Swagger UI 5 dist files shipped in the `fastapi-offline` wheel (MIT; only
its static folder is used). Swagger UI 4 cannot render the OpenAPI 3.1 documents FastAPI writes. The page
is FastAPI's own `get_swagger_ui_html` pointed at a StaticFiles mount; every URL starts with the request's
root path, so it also works when the app is mounted below "/". Without the files the service still starts and
/docs answers 503 with what to install.
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

from finstream.errors import FinstreamError

log = logging.getLogger(__name__)

ASSETS_PACKAGE = "fastapi_offline"
ASSET_FILES = ("swagger-ui-bundle.js", "swagger-ui.css", "favicon.png")


class DocsAssetsMissing(FinstreamError):
    """The Swagger UI files are not installed (the API maps it to 503)."""


def assets_dir() -> Path:
    """The folder holding Swagger UI's dist files (located without importing the package's code)."""
    spec = importlib.util.find_spec(ASSETS_PACKAGE)
    folder = Path(spec.origin).parent / "static" if spec is not None and spec.origin else None
    if folder is None or not all((folder / name).is_file() for name in ASSET_FILES):
        raise DocsAssetsMissing(
            f"Swagger UI files ({', '.join(ASSET_FILES)}) not found in the {ASSETS_PACKAGE} package: "
            "reinstall finstream's dependencies (`pip install -e . -c constraints.txt`)"
        )
    return folder


def mount_docs(app: FastAPI, docs_url: str = "/docs") -> None:
    """Serve Swagger UI at `docs_url` (the app is built with docs_url=None) and its files under
    `{docs_url}/assets`; the online validator badge is off, so the page requests nothing off-host."""
    if app.openapi_url is None:
        raise ValueError("the docs page needs the app's OpenAPI document (openapi_url is None)")
    openapi_url = app.openapi_url
    assets_url = f"{docs_url}/assets"
    oauth2_redirect_url = app.swagger_ui_oauth2_redirect_url
    parameters = {**(app.swagger_ui_parameters or {}), "validatorUrl": None}
    missing: DocsAssetsMissing | None = None
    try:
        app.mount(assets_url, StaticFiles(directory=assets_dir()), name="docs-assets")
    except DocsAssetsMissing as exc:  # the API still serves; only the docs page is unavailable
        log.error("%s", exc)
        missing = exc

    async def swagger_ui(request: Request) -> HTMLResponse:
        if missing is not None:
            raise DocsAssetsMissing(str(missing))
        root = request.scope.get("root_path", "").rstrip("/")
        return get_swagger_ui_html(
            openapi_url=root + openapi_url,
            title=f"{app.title} - Swagger UI",
            swagger_js_url=f"{root}{assets_url}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{assets_url}/swagger-ui.css",
            swagger_favicon_url=f"{root}{assets_url}/favicon.png",
            oauth2_redirect_url=root + oauth2_redirect_url if oauth2_redirect_url else None,
            init_oauth=app.swagger_ui_init_oauth,
            swagger_ui_parameters=parameters,
        )

    app.add_route(docs_url, swagger_ui, include_in_schema=False)
    if oauth2_redirect_url:

        async def swagger_ui_redirect(_: Request) -> HTMLResponse:
            return get_swagger_ui_oauth2_redirect_html()

        app.add_route(oauth2_redirect_url, swagger_ui_redirect, include_in_schema=False)
