"""``GET /api/health``: is the server up, and where do runs go."""

from __future__ import annotations

import jax
from fastapi import APIRouter

from app.devices import device_label, devices

router = APIRouter(tags=["health"])


@router.get("/api/health")
def health() -> dict:
    """``{"status": "ok", "backend": ..., "devices": [...]}``."""
    return {
        "status": "ok",
        "backend": jax.default_backend(),
        "devices": devices(),
        "device": device_label(),
    }
