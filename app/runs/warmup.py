"""Warm after a restart: JAX's persistent compilation cache under the data directory, and the
first page's run presets compiled in the background at start-up.

The persistent cache keeps every compiled program on disk (``data_dir/jax-cache``), keyed by
the program itself, so a restarted server (or another process sharing the directory) loads
what it compiled before instead of compiling it again. The warm-up then compiles the seed
module's presets, so that the first visitor's clicks find them in memory.
"""

from __future__ import annotations

import gc
import logging
import threading
from pathlib import Path
from typing import Any

import jax
from jax.experimental.compilation_cache import compilation_cache

from app.catalog import SEED_KIND, parse_spec
from app.runs.view import presets
from app.settings import Settings
from app.workers import worker_state

logger = logging.getLogger(__name__)

CACHE_FOLDER = "jax-cache"
_configure_lock = threading.Lock()


def configure_compilation_cache(settings: Settings) -> Path | None:
    """Point JAX's persistent compilation cache at ``data_dir/jax-cache`` (every program,
    however small or quick to compile, is kept); ``None`` when the setting is off.

    JAX's configuration belongs to the process: the last app configured wins."""
    if not settings.persistent_compile_cache:
        return None
    path = (settings.data_dir / CACHE_FOLDER).resolve()
    path.mkdir(parents=True, exist_ok=True)
    with _configure_lock:
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
        jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)
        if jax.config.jax_compilation_cache_dir != str(path):
            jax.config.update("jax_compilation_cache_dir", str(path))
            compilation_cache.reset_cache()  # the next compile opens the new folder
    return path


def prepare_worker(settings: Settings) -> None:
    """A worker process's set-up, before its first task: JAX's persistent compilation cache
    configured and its backend started (so no task pays for them within its time limit);
    what that made is left out of the collector's full collections (``gc.freeze``). The
    settings stay in ``worker_state()`` for the runs, which then travel without them."""
    configure_compilation_cache(settings)
    jax.devices()
    worker_state()["settings"] = settings
    gc.freeze()


class Warmup:
    """The first page's presets compiled in a background thread; ``stop`` skips the rest."""

    def __init__(self, runs: Any):
        self.runs = runs
        self.done = threading.Event()
        self.compiled = 0
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._work, name="warm-presets", daemon=True)

    def start(self) -> Warmup:
        self._thread.start()
        return self

    def stop(self, timeout: float = 1.0) -> None:
        self._stopping.set()
        self._thread.join(timeout)

    def _work(self) -> None:
        try:
            spec = parse_spec(SEED_KIND, {})
            model = spec.build()
            simple = self.runs.structures.get(model).simple
            for preset in presets(spec, simple):
                if self._stopping.is_set():
                    break
                try:
                    outcome = self.runs.run(spec, model, preset.form.request())
                except Exception:  # noqa: BLE001 - a preset that fails only stays cold
                    logger.exception("warming the preset %r failed", preset.name)
                    continue
                self.compiled += int(outcome.compiled)
        finally:
            self.done.set()
