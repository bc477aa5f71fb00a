"""``GET /api/health``: is the server up, and where do runs go."""

from __future__ import annotations

import jax
from fastapi import APIRouter

from app.devices import device_label, devices
from app.services import WorkersDep

router = APIRouter(tags=["health"])


@router.get("/api/health")
async def health(workers: WorkersDep) -> dict:
    """``{"status": "ok", "backend": ..., "devices": [...], "workers": {...}}``.

    Answered on the event loop, never in the thread pool that requests waiting for a worker
    may fill."""
    return {
        "status": "ok",
        "backend": jax.default_backend(),
        "devices": devices(),
        "device": device_label(),
        "workers": workers.status(),
    }
