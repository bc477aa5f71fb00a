"""``GET /api/health``: is the server up, and where do runs go."""

from __future__ import annotations

import jax
from fastapi import APIRouter

router = APIRouter(tags=["health"])


def device_label() -> str:
    """The device runs use, in words: "CPU" or the GPU's name."""
    device = jax.devices()[0]
    if device.platform == "cpu":
        return "CPU"
    return f"{device.platform.upper()}: {getattr(device, 'device_kind', str(device))}"


@router.get("/api/health")
def health() -> dict:
    """``{"status": "ok", "backend": ..., "devices": [...]}``."""
    return {
        "status": "ok",
        "backend": jax.default_backend(),
        "devices": [
            {"id": d.id, "platform": d.platform, "kind": getattr(d, "device_kind", d.platform)}
            for d in jax.devices()
        ],
        "device": device_label(),
    }
