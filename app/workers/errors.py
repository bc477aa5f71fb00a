"""What a task in a worker can end with besides its result: each a :class:`PlaygroundError`."""

from __future__ import annotations

from app.errors import PlaygroundError

RETRY_AFTER_SECONDS = 2

LIMIT_WORDS = {
    "max_run_seconds": ("time limit", "s"),
    "worker_memory_mb": ("memory limit", "MB"),
}


class RunLimitExceeded(PlaygroundError):
    """422: the task went past ``max_run_seconds`` or ``worker_memory_mb``; its worker was
    stopped (and replaced). The message names the setting, its value and the stage reached."""

    def __init__(self, setting: str, value: float, stage: str):
        words, unit = LIMIT_WORDS[setting]
        hint = (
            "make it smaller (fewer layers, fewer transformations, a smaller input)"
            if setting == "max_run_seconds"
            else "make its arrays smaller (a smaller input or fewer, narrower layers)"
        )
        super().__init__(
            422,
            f"Stopped while {stage}: this computation went past the {words} of {value:g} {unit} "
            f"({setting}, PLAYGROUND_{setting.upper()}). Try again after you {hint}.",
            field=setting,
        )
        self.setting = setting
        self.value = value
        self.stage = stage


class WorkerLost(PlaygroundError):
    """503 with ``Retry-After``: the worker process died for another reason; a new one is
    starting."""

    def __init__(self, stage: str):
        super().__init__(
            503,
            f"The computation stopped unexpectedly while {stage} (its worker process ended); "
            "a new worker is starting. Try again in a moment.",
            headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
        )
        self.stage = stage


class RunCancelled(PlaygroundError):
    """409: the task was cancelled (by its user, or because its client went away)."""

    def __init__(self, stage: str):
        super().__init__(409, f"Cancelled while {stage}: nothing was computed.")
        self.stage = stage


class WorkersBusy(PlaygroundError):
    """503 with ``Retry-After``: no worker that may take the task became free in time."""

    def __init__(self, workers: int, wait_seconds: float):
        super().__init__(
            503,
            f"The server is busy: all {workers} of its workers are computing (workers, "
            f"PLAYGROUND_WORKERS) and none became free within {wait_seconds:g} s. "
            "Try again in a moment.",
            headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
        )
