"""The app factory: ``app.main:app`` is the playground with settings from the environment."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import plotly
from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from app.errors import install_error_handlers
from app.lessons import lessons
from app.retention import IdleCleaner
from app.routers import (
    api_docs,
    health,
    modules,
    pages,
    pytree_ops,
    reference,
    rooms,
    runs,
    sharing,
    training,
    workspace,
)
from app.routers import lessons as lessons_router
from app.security import SecurityMiddleware
from app.services import Services
from app.serving import ClientAddress, RequestLimit
from app.settings import Settings
from app.workspaces import WorkspaceMiddleware

ROOT = Path(__file__).resolve().parent.parent
PLOTLY_JS_DIR = Path(plotly.__file__).parent / "package_data"


class PlaygroundApp(FastAPI):
    """FastAPI with the security middleware outside Starlette's own error layer, so that its
    headers are on every answer, the 500 of an unexpected error and the 503 of too many
    requests at once (``RequestLimit``) included; ``ClientAddress`` notes each request's client
    address for the per-client limits."""

    def __init__(self, settings: Settings, **kwargs):
        self.settings = settings
        super().__init__(**kwargs)

    def build_middleware_stack(self):
        limited = RequestLimit(
            ClientAddress(super().build_middleware_stack()), self.settings.max_concurrent_requests
        )
        return SecurityMiddleware(limited, self.settings)


def services_lifespan(settings: Settings):
    """The app's lifespan: :meth:`Services.create` at start-up, :meth:`Services.close` at
    shut-down. Servers that run one app at once (two test clients, say) share its services,
    which close when the last of them stops."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state = app.state
        if getattr(state, "lifespans", 0) == 0:
            state.services = Services.create(settings)
            # the idle-workspace cleaner runs on requests that note a workspace's use
            state.services.store.after_touch = IdleCleaner(state.services).maybe_clean
            # What start-up made (JAX, Equinox, the catalog: millions of objects) lives as long
            # as the server: the collector need not look at it again (a full collection of it
            # held a request for 300 ms).
            gc.freeze()
        state.lifespans = getattr(state, "lifespans", 0) + 1
        try:
            yield
        finally:
            state.lifespans -= 1
            if state.lifespans == 0:
                state.services.close()

    return lifespan


def create_app(settings: Settings | None = None) -> FastAPI:
    """A playground app; ``settings`` default to the environment's."""
    settings = settings or Settings()
    app = PlaygroundApp(
        settings,
        title="Pytree Playground",
        summary="Build JAX/Equinox modules, see their pytrees, run grad, vmap and jit live.",
        version="0.1.0",
        docs_url=None,  # app.routers.api_docs serves /docs without a CDN
        redoc_url=None,
        lifespan=services_lifespan(settings),
    )
    lessons()  # every lesson file validated at start-up: a broken one stops the server here
    app.mount("/static", StaticFiles(directory=ROOT / "static"), name="static")
    app.mount("/vendor/plotly", StaticFiles(directory=PLOTLY_JS_DIR), name="plotly")
    # Starlette tries the routes in order, and every try costs: the runs first (a small run's
    # whole answer takes about a millisecond), then training (its progress is polled).
    for router in (
        runs.router,
        training.router,
        health.router,
        modules.router,
        pytree_ops.router,
        sharing.router,
        lessons_router.router,
        rooms.router,
        workspace.router,
        pages.router,
        api_docs.router,
        reference.router,
    ):
        app.include_router(router)
    install_error_handlers(app)
    app.add_middleware(WorkspaceMiddleware, secure=settings.cookie_secure)
    return app


def __getattr__(name: str):
    # ``app.main:app`` is made on first use, so importing ``create_app`` touches no data.
    if name == "app":
        globals()["app"] = create_app()
        return globals()["app"]
    raise AttributeError(name)
