"""Every setting of the playground, read from the environment (prefix ``PLAYGROUND_``)."""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Annotated
from urllib.parse import urlsplit

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

LOOPBACK_HOSTS = ["localhost", "127.0.0.1", "::1"]


class Settings(BaseSettings):
    """The playground's settings. Each field is ``PLAYGROUND_<NAME>`` in the environment."""

    model_config = SettingsConfigDict(env_prefix="PLAYGROUND_", extra="ignore")

    data_dir: Path = Field(Path("./data"), description="Where the SQLite database lives.")
    database_url: str | None = Field(
        None, description="SQLAlchemy URL; PostgreSQL for several replicas. Default: SQLite."
    )
    cookie_secure: bool = Field(False, description="Mark the workspace cookie Secure (HTTPS).")
    allowed_hosts: Annotated[list[str], NoDecode] = Field(
        LOOPBACK_HOSTS,
        description="Host names the server answers (comma-separated; name or name:port; * for "
        "any). Other Host headers get 400, and cross-site checks compare Origin with these. "
        "`python -m app --host H` adds H. A public deployment sets its own name here.",
    )
    public_url: str | None = Field(
        None,
        description="The public address (https://playground.example.org) share links are "
        "built from; its host is allowed. Default: the request's own (allowed) host.",
    )
    header_timeout_seconds: float = Field(
        5.0,
        description="`python -m app` closes a connection whose request head is not "
        "complete this long after it opened (or after its previous answer).",
    )
    keep_alive_seconds: float = Field(
        5.0, description="`python -m app` closes an idle keep-alive connection after this long."
    )
    max_connections: int = Field(
        2_048,
        description="Open connections `python -m app` keeps at once; more are answered "
        "503 and closed.",
    )
    max_connections_per_client: int = Field(
        64,
        description="Open connections from one client address (0: no limit; behind a "
        "reverse proxy every client has the proxy's address).",
    )
    max_concurrent_requests: int = Field(
        256, description="Requests handled at once (event streams included); more get 503."
    )
    event_stream_seconds: float = Field(
        300.0,
        description="How long one event stream (a job's progress, a room's steps) stays open; "
        "the page reconnects.",
    )
    max_event_streams_per_workspace: int = Field(
        4,
        description="Event streams (jobs' progress, rooms' steps) open at once per workspace; "
        "more get 429.",
    )

    max_array_elements: int = Field(1_000_000, description="Elements in any one array.")
    max_input_elements: int = Field(100_000, description="Elements in a run's input.")
    max_module_params: int = Field(2_000_000, description="Array elements in one module.")
    max_module_leaves: int = Field(20_000, description="Leaves in one module's tree.")
    max_modules_per_workspace: int = Field(
        40, description="Modules kept per workspace; the oldest unsaved ones are evicted."
    )
    max_shares_per_workspace: int = Field(
        200, description="Shares one workspace may create; one more is a 429."
    )
    max_stored_bytes_per_workspace: int = Field(
        256 * 2**20,
        description="Bytes of stored parameters per workspace (trained modules, undo history, "
        "snapshots of its shares and forks, each distinct snapshot once); more is a 413.",
    )
    workspace_idle_days: float = Field(
        30.0,
        description="A workspace with no saved module, unused this long, is cleaned away "
        "(its shares stay).",
    )
    max_body_bytes: int = Field(2_000_000, description="Request body size in bytes.")
    max_expression_length: int = Field(500, description="Characters in one expression.")
    max_expression_nodes: int = Field(200, description="Syntax-tree nodes in one expression.")
    max_run_flops: float = Field(2e10, description="Estimated flops of one run.")
    max_traced_leaves: int = Field(
        1_500,
        description="What one run may trace and compile, checked before tracing: the module's "
        "array leaves plus the loss's parts, times 3 for each grad, value_and_grad or jacrev and 8 "
        "for each jacfwd (grad of the loss of a 250-layer MLP is about this).",
    )
    worker_memory_mb: int = Field(
        2_000,
        description="Memory in MB (10^6 bytes) one computation may use: arguments, result and "
        "temporaries by the compiler's memory analysis, checked after compiling, before running; "
        "and a worker's resident memory, past which it is killed and replaced.",
    )
    max_train_flops: float = Field(
        2e11,
        description="Estimated flops of one training job as a whole: its steps times one "
        "step's flops, plus its evaluations.",
    )
    max_job_seconds: float = Field(
        120.0,
        gt=0,
        description="Seconds of computing one training job may use as a whole (compiling left "
        "out): a job whose steps would take longer (measured for a structure trained before, "
        "else estimated from a step's flops at the machine's measured speed) is refused before "
        "it starts, one measured on its first steps to be longer fails then, and one that runs "
        "past it fails.",
    )
    workers: int = Field(
        3,
        ge=0,
        le=64,
        description="Worker processes that trace, compile, run and train (the last is kept for "
        "light work when there are two or more, the last but one for training and light work "
        "when there are three or more). 0 runs everything inline in the web process, for tests "
        "only: no time limit, no memory limit, no killing.",
    )
    heavy_worker_nice: int = Field(
        10,
        ge=0,
        le=19,
        description="How much lower the CPU priority (nice) of the workers that take heavy runs "
        "is than that of the web process and of the workers kept for training and light work: "
        "on a machine of a few cores, compile bombs then slow pages, small runs and training "
        "little. 0: all at the same priority.",
    )
    max_run_seconds: float = Field(
        20.0,
        gt=0,
        description="Seconds one computation (trace, compile and run) may take in its worker; "
        "past them the worker is killed and replaced.",
    )
    max_concurrent_computations: int = Field(
        2,
        description="Computations in the web process at once, server-wide (building a module, "
        "a snapshot, tree operations); runs and sweeps are tasks of the workers, which bound "
        "them (with workers=0, the inline runs too).",
    )
    compute_wait_seconds: float = Field(
        5.0, description="How long a request waits for a compute slot before a 503."
    )
    max_jobs_per_workspace: int = Field(2, description="Training jobs running per workspace.")
    max_computations_per_client: int = Field(
        2,
        description="Computations (runs, sweeps, tree operations that compute, builds) at once "
        "from one client address, whatever its workspaces; one more gets 429 at once (0: no "
        "limit). A room behind one NAT shares one address: raise it (see docs/serving.md).",
    )
    max_jobs_per_client: int = Field(
        4,
        description="Training jobs queued, running or paused from one client address, whatever "
        "its workspaces; one more gets 429 (0: no limit). A room behind one NAT shares one "
        "address: raise it (see docs/serving.md).",
    )
    max_paused_seconds: float = Field(
        1800.0, description="A paused training job is stopped (its parameters saved) after this."
    )
    max_train_steps: int = Field(20_000, description="Gradient steps in one training job.")
    max_train_epochs: int = Field(50, description="Epochs in one library training job.")
    max_dataset_rows: int = Field(20_000, description="Rows in a dataset or uploaded CSV.")
    compile_cache_size: int = Field(256, description="Compiled functions kept in memory.")
    compile_cache_mb: int = Field(
        1_000,
        description="Memory in MB the compiled functions kept may hold (each entry's generated "
        "code, or an estimate from its program's size, and its texts).",
    )
    persistent_compile_cache: bool = Field(
        True,
        description="Keep compiled programs on disk under data_dir/jax-cache (JAX's persistent "
        "compilation cache), so that a restarted server compiles nothing it compiled before.",
    )
    warm_start: bool = Field(
        True,
        description="At start-up, compile the first page's run presets in the background.",
    )
    max_undo_revisions: int = Field(
        10, description="Earlier revisions kept per module for Undo after an edit."
    )
    max_undo_bytes: int = Field(
        32_000_000, description="Bytes of earlier revisions kept per module for Undo."
    )
    max_tree_map_shapes: int = Field(
        64, description="Distinct leaf shapes one tree_map compiles its expression for."
    )
    room_lifetime_hours: float = Field(
        24.0, description="How long a room (its code, presenter key and progress) lives."
    )
    max_rooms_per_workspace_per_hour: int = Field(
        5, description="Rooms one workspace may create in an hour."
    )
    max_rooms_per_hour: int = Field(200, description="Rooms the whole server creates in an hour.")
    max_room_participants: int = Field(200, description="Participants in one room.")
    leaf_values_limit: int = Field(
        4_096, description="Values sent for one array; larger ones are cut (truncated=true)."
    )

    @field_validator("allowed_hosts", mode="before")
    @classmethod
    def _comma_separated(cls, value):
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                return json.loads(text)
            return [part.strip() for part in text.split(",") if part.strip()]
        return value

    def trusted_hosts(self) -> list[str]:
        """``allowed_hosts`` plus the host of ``public_url``."""
        hosts = list(self.allowed_hosts)
        if self.public_url:
            hosts.append(urlsplit(self.public_url).netloc)
        return hosts

    @property
    def sqlalchemy_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'playground.db').resolve()}"


@lru_cache
def get_settings() -> Settings:
    """The process's settings, read once from the environment."""
    return Settings()


def _default_text(value) -> str:
    if value is None:
        return "(none)"
    if isinstance(value, list):
        return ",".join(value)
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, Path):
        return f"./{value}"
    if isinstance(value, float) and value >= 1e6:
        return f"{value:.0e}".replace("e+", "e")
    if isinstance(value, int) and value >= 10_000:
        return f"{value:_}"
    return str(value)


def settings_table() -> str:
    """Every setting as a Markdown table (printed by ``python -m app.settings``)."""
    lines = [
        "| Environment variable | Default | What it sets |",
        "| --- | --- | --- |",
    ]
    for name, field in Settings.model_fields.items():
        variable = f"PLAYGROUND_{name.upper()}"
        lines.append(f"| `{variable}` | `{_default_text(field.default)}` | {field.description} |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(settings_table())
