"""The ASGI application: API, pages and static files first, the catch-all hub routes last."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from picklewarden import __version__
from picklewarden.server import api, pages, proxy
from picklewarden.server.config import GatewayConfig
from picklewarden.server.gateway import Gateway
from picklewarden.server.storage import Store


def create_app(config: GatewayConfig, store: Store | None = None) -> FastAPI:
    """The gateway for ``config``. The store opens now; the upstream client and store close on shutdown,
    after in-flight requests (uvicorn drains them first, so no scan is recorded half-done)."""
    gateway = Gateway(config, store)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        await gateway.close()

    app = FastAPI(
        title="picklewarden gateway",
        version=__version__,
        description="A Hugging Face pull-through proxy that scans every model file before serving it.",
        lifespan=lifespan,
        # /openapi.json documents the API; the interactive viewers would load scripts from a CDN.
        docs_url=None,
        redoc_url=None,
    )
    app.state.gateway = gateway
    app.include_router(api.router(gateway))
    app.include_router(pages.router(gateway))
    app.mount("/static", StaticFiles(directory=str(Path(__file__).parent / "static")), name="static")
    proxy.register(app, gateway)
    return app
