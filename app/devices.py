"""The devices runs use (JAX's default backend), in words for the pages and the API."""

from __future__ import annotations

import functools

import jax


@functools.cache
def device_label() -> str:
    """The device runs use, in words: "CPU" or the GPU's name (a process's devices never change)."""
    device = jax.devices()[0]
    if device.platform == "cpu":
        return "CPU"
    return f"{device.platform.upper()}: {getattr(device, 'device_kind', str(device))}"


def devices() -> list[dict]:
    """Every device JAX sees: ``{"id", "platform", "kind"}``."""
    return [
        {"id": d.id, "platform": d.platform, "kind": getattr(d, "device_kind", d.platform)}
        for d in jax.devices()
    ]
