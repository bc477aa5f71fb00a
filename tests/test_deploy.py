"""The deployment files hold what they must: the Dockerfile (no Docker engine here, so it is
read, not built), the .dockerignore, and docs/serving.md documents every setting."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

from app.settings import Settings, settings_table

ROOT = Path(__file__).resolve().parent.parent


def dockerfile_instructions() -> list[tuple[str, str]]:
    """``(INSTRUCTION, arguments)`` of the Dockerfile, continuation lines joined."""
    text = (ROOT / "Dockerfile").read_text()
    text = re.sub(r"\\\n", " ", text)
    instructions = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, rest = line.partition(" ")
        instructions.append((keyword.upper(), rest.strip()))
    return instructions


def _all(keyword: str) -> list[str]:
    return [rest for key, rest in dockerfile_instructions() if key == keyword]


def test_dockerfile_base_is_python_slim():
    (base,) = _all("FROM")
    assert re.fullmatch(r"python:3\.1[1-9]-slim", base), base


def test_dockerfile_runs_as_a_non_root_user():
    users = _all("USER")
    assert users, "no USER instruction: the server would run as root"
    assert users[-1] not in {"root", "0", "0:0"}
    # the user is created, and owns the data directory
    runs = " ".join(_all("RUN"))
    assert "useradd" in runs and users[-1] in runs
    assert re.search(rf"chown\s+{users[-1]}(:\w+)?\s+/data", runs)


def test_dockerfile_healthcheck_hits_api_health_without_curl():
    (check,) = _all("HEALTHCHECK")
    assert "/api/health" in check
    assert "CMD" in check and "python" in check
    assert "curl" not in check and "wget" not in check
    # the one-liner is valid Python
    command = check.split("CMD", 1)[1].strip()
    import json

    argv = json.loads(command)
    assert argv[:2] == ["python", "-c"]
    compile(argv[2], "<healthcheck>", "exec")


def test_dockerfile_serves_on_all_interfaces_with_data_on_a_volume():
    env = " ".join(_all("ENV"))
    assert "PLAYGROUND_DATA_DIR=/data" in env
    assert "HOST=0.0.0.0" in env
    assert any("/data" in volume for volume in _all("VOLUME"))
    assert _all("EXPOSE") == ["8000"]
    (cmd,) = _all("CMD")
    assert "python -m app" in cmd and "--host" in cmd


def test_dockerfile_has_a_build_argument_for_jax_with_cuda():
    args = _all("ARG")
    assert any(arg.startswith("JAX_EXTRA") for arg in args)
    runs = " ".join(_all("RUN"))
    assert "jax[${JAX_EXTRA}]" in runs


def test_dockerfile_copies_what_the_app_needs():
    copied = " ".join(_all("COPY"))
    for path in ("pyproject.toml", "app", "library", "templates", "static"):
        assert path in shlex.split(copied), path
    ignored = (ROOT / ".dockerignore").read_text().split()
    for path in (".git", ".venv", "data", "tests"):
        assert path in ignored


def test_every_setting_is_documented_with_its_variable_and_default():
    docs = (ROOT / "docs" / "serving.md").read_text()
    readme = (ROOT / "README.md").read_text()
    for name, text in (("docs/serving.md", docs), ("README.md", readme)):
        assert settings_table() in text, (
            f"{name}'s table of settings is out of date: paste `python -m app.settings`"
        )
    for name, field in Settings.model_fields.items():
        assert f"PLAYGROUND_{name.upper()}" in docs + readme, name
        assert field.description, f"setting {name} has no description"
