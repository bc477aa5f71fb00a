"""What the module page's training and dynamics panels show: the forms' contexts, and the
job of a workspace (or of a module) a panel's fragment is about.

``app.routers.training`` renders these; the work is in :mod:`app.training.service`.
"""

from __future__ import annotations

from app.errors import PlaygroundError
from app.services import Services
from app.store import ModuleRecord
from app.training import datasets
from app.training.local import slot_sizes
from app.training.progress import progress_context
from app.training.service import DEFAULTS, default_dataset, network_state
from library.orchestrators import SequentialOrchestrator


def no_job(job_id: str) -> PlaygroundError:
    """The 404 of a job that is not the caller's (or does not exist)."""
    return PlaygroundError(404, f"No training job {job_id!r} in your workspace.")


def find_job(services: Services, workspace: str, job_id: str, with_view=False) -> dict:
    """The job ``job_id`` of ``workspace`` as the API describes it; 404 for any other."""
    found = services.jobs.describe(workspace, job_id, with_view)
    if found is None:
        raise no_job(job_id)
    return found


def module_job(services: Services, record: ModuleRecord, job_id: str) -> dict:
    """The job ``job_id`` of the module of ``record`` (with its view); 404 for any other."""
    job = find_job(services, record.workspace, job_id, with_view=True)
    if job.get("module") != record.id:
        raise no_job(job_id)
    return job


def is_network(services: Services, record: ModuleRecord) -> bool:
    """Whether the module is a library network (trained by the local rule, has dynamics)."""
    return isinstance(services.store.load(record), SequentialOrchestrator)


def train_panel_context(services: Services, workspace: str, record: ModuleRecord) -> dict:
    """What ``partials/train_form.html`` needs: defaults, datasets, uploads, the latest job."""
    network = is_network(services, record)
    entry = record.spec()
    jobs = services.jobs.list(workspace, record.id)
    latest = jobs[0] if jobs else None
    if latest is not None:
        latest = find_job(services, workspace, latest["job"], with_view=True)
    return {
        "module": record,
        "network": network,
        "defaults": DEFAULTS["local" if network else "gradient"],
        "datasets": datasets.catalog(),
        "uploads": services.storage.list_csv(workspace),
        "default_dataset": default_dataset(entry, network).name,
        "latest": progress_context(latest) if latest else None,
    }


def dynamics_panel_context(services: Services, record: ModuleRecord) -> dict | None:
    """What ``partials/dynamics_form.html`` needs; ``None`` for a module that is not a
    network (it has no dynamics panel)."""
    if not is_network(services, record):
        return None
    _, state = network_state(services, record)
    sizes = slot_sizes(state)
    return {
        "module": record,
        "sizes": sizes,
        "datasets": [d for d in datasets.catalog() if d["task"] == "classification"],
        "default_dataset": "prototypes" if sizes[:1] == [100] else "circle",
    }
