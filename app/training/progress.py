"""A job's progress as the page shows it: the fragment's context and the live frames.

The fragment (``partials/train_progress.html``) is rendered once per state (queued, running,
paused, ended); while the job plays, the page follows a stream of *frames* (server-sent events,
at most ``FRAME_SECONDS`` apart) that carry the counters' texts and the figures, and redraws
only those. Both come from :func:`progress_texts` and :func:`job_figures`, so the first frame
and the fragment always agree.
"""

from __future__ import annotations

from typing import Any

from app.training.figures import job_figures

FRAME_SECONDS = 0.15
"""The least time between two frames of a playing job: at most about 6 a second (the page
needs 4; the margin covers a busy server)."""
METRIC_NAMES = ("loss", "test_loss", "accuracy", "test_accuracy")


def _last(metrics: dict, name: str) -> float | None:
    values = [v for v in metrics.get(name, []) if v is not None]
    return values[-1] if values else None


def _epochs_text(epoch: float) -> str:
    return f"{epoch:.2f}".rstrip("0").rstrip(".") if epoch else "0"


def progress_texts(job: dict) -> dict[str, str]:
    """The counters and the last metrics in words (what a frame updates in place)."""
    metrics = job["metrics"]
    unit = "Batch" if job["mode"] == "local" else "Step"
    counter = f"{unit} {job['step']:,} of {job['total']:,}"
    if job.get("steps_per_epoch"):
        counter += f" · epoch {_epochs_text(job.get('epoch') or 0.0)}"
        if job["mode"] == "local":
            counter += f" of {job['settings'].get('epochs')}"
    texts = {"counter": counter, "status": status_text(job)}
    for name in METRIC_NAMES:
        value = _last(metrics, name)
        if value is None:
            texts[name] = "–"
        elif name.endswith("accuracy"):
            texts[name] = f"{value:.3f}"
        else:
            texts[name] = f"{value:.4g}"
    return texts


def status_text(job: dict) -> str:
    """One sentence on where the job is."""
    status = job["status"]
    if status == "queued":
        return "Queued: waiting for a free worker…"
    if status == "paused":
        return "Paused. Play goes on; Step trains one batch."
    if status == "running" and job.get("stop_requested"):
        return "Stopping…"
    if status == "running" and job.get("pause_requested"):
        return "Pausing after this step…"
    if status == "running" and job["step"] == 0:
        return "Starting: compiling the training step (once per module structure and data shape)…"
    if status == "running":
        how = (
            "local rule"
            if job["mode"] == "local"
            else f"{job['settings'].get('optimizer')}, "
            f"{str(job['settings'].get('loss', '')).replace('_', ' ')}"
        )
        return f"Training {job['kind']} on {job['dataset']['name']} ({how})."
    if status == "done":
        return f"Done in {job['elapsed']:.1f} s."
    if status == "stopped":
        unit = "batch" if job["mode"] == "local" else "step"
        return f"Stopped at {unit} {job['step']:,} of {job['total']:,}."
    return "Failed."


def progress_context(job: dict, polled: bool = False, form: bool = False) -> dict[str, Any]:
    """What ``partials/train_progress.html`` needs. ``form``: the fragment is the module
    page's, whose training form holds the job's one Stop (its Train button); its own
    requests then bring the form's buttons along, out of band."""
    finished = job["status"] in ("done", "failed", "stopped")
    metrics = job["metrics"]
    return {
        "job": job,
        "finished": finished,
        "figures": job_figures(job),
        "texts": progress_texts(job),
        "last": {name: _last(metrics, name) for name in METRIC_NAMES},
        "percent": percent(job),
        "polled": polled,
        "form": form,
        "actions_oob": form,
        "classification": job.get("dataset", {}).get("num_classes") is not None
        or bool(metrics.get("accuracy")),
    }


def percent(job: dict) -> int:
    return round(100 * job["step"] / job["total"]) if job["total"] else 0


def frame(job: dict) -> dict[str, Any]:
    """One live frame: the state (the page re-renders the fragment when it changes), the texts
    and the figures."""
    return {
        "status": job["status"],
        "pause_requested": bool(job.get("pause_requested")),
        "stop_requested": bool(job.get("stop_requested")),
        "step": job["step"],
        "total": job["total"],
        "percent": percent(job),
        "texts": progress_texts(job),
        "figures": {k: v for k, v in job_figures(job).items() if k != "diff"},
    }
