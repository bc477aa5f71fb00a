"""Warm after a restart: the first page's presets compiled in the background at start-up, and
JAX's persistent compilation cache reused by a new process (as ``bench/warm_restart.py``
measures)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.catalog import SEED_KIND, parse_spec
from app.main import create_app
from app.runs.view import presets
from app.settings import Settings

BENCH = Path(__file__).resolve().parent.parent / "bench" / "warm_restart.py"


def _bench():
    spec = importlib.util.spec_from_file_location("warm_restart", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_first_pages_presets_are_compiled_at_start_up(tmp_path):
    settings = Settings(data_dir=tmp_path / "data", warm_start=True)
    app = create_app(settings)
    with TestClient(app) as client:
        warmup = app.state.services.warmup
        assert warmup.done.wait(120), "the warm-up did not finish"
        spec = parse_spec(SEED_KIND, {})
        engine = app.state.services.runs
        items = presets(spec, engine.structures.get(spec.build()).simple)
        assert warmup.compiled == engine.compiles == len(items) >= 5
        page = client.get("/")  # a new visitor: the seed's module and its panel
        assert page.status_code == 200
        module_id = client.get("/api/modules").json()[0]["id"]
        for preset in items:
            body = preset.form.request().model_dump(mode="json")
            answer = client.post(f"/api/modules/{module_id}/run", json=body)
            assert answer.status_code == 200, (preset.name, answer.text[:300])
            assert answer.json()["compiled"] is False, preset.name  # found warm
        assert engine.compiles == len(items)


def test_the_persistent_cache_is_reused_after_a_restart(tmp_path):
    bench = _bench()
    first = bench.start(str(tmp_path), cache=True)
    again = bench.start(str(tmp_path), cache=True)  # a new process on the same data directory
    # grad of mean(out) for Linear(2, 3) on ones of shape (5, 2): each weight gets 1/3
    for answer in (first, again):
        assert answer["status"] == 200
        assert answer["weight_grad"] == [[pytest.approx(1 / 3)] * 3] * 2
    assert first["cache_hits"] == 0 and first["cache_misses"] >= 1 and first["cached_files"] >= 1
    assert again["cache_hits"] >= 1 and again["cache_misses"] == 0


def test_no_persistent_cache_when_the_setting_is_off(tmp_path):
    bench = _bench()
    first = bench.start(str(tmp_path), cache=False)
    again = bench.start(str(tmp_path), cache=False)
    assert first["cache_hits"] == again["cache_hits"] == 0
    assert not (tmp_path / "jax-cache").exists()
