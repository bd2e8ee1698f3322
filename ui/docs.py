"""The API docs page (Swagger UI) served from this process, so it works offline.

FastAPI's default page loads Swagger UI's script and stylesheet from a CDN: offline (or
behind a firewall) ``/api/docs`` was a blank page. The assets come from the
``swagger-ui-bundle-v2`` package instead and are served under ``/api/docs/assets``.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

DOCS_URL = "/api/docs"
ASSETS = DOCS_URL + "/assets"


def swagger_assets() -> Path:
    """The folder of Swagger UI's bundled files (swagger-ui-bundle.js, swagger-ui.css...)."""
    import swagger_ui_bundle

    return Path(swagger_ui_bundle.swagger_ui_path)


def install_docs(app: FastAPI, openapi_url: str, title: str) -> None:
    """``GET /api/docs``: Swagger UI for ``openapi_url``, every asset from this server."""
    app.mount(ASSETS, StaticFiles(directory=swagger_assets()), name="swagger-assets")

    @app.get(DOCS_URL, include_in_schema=False)
    def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=openapi_url,
            title=f"{title} - API docs",
            swagger_js_url=f"{ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{ASSETS}/favicon-32x32.png",
            # no badge that asks an online validator about the schema
            swagger_ui_parameters={"validatorUrl": None},
        )
