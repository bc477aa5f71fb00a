"""What the playground keeps, and for how long: deleting a workspace, cleaning idle ones.

* ``delete_workspace``: the owner deletes their workspace and everything it owns (modules,
  their undo history, notices, shares, uploads, job records; running jobs are stopped);
  snapshots that nothing else holds go with them.
* ``IdleCleaner``: a workspace none of whose modules is saved and that has not been used for
  ``workspace_idle_days`` is cleaned away: its modules, history, notices, uploads and job
  records. Its shares stay (their links keep working). It runs at most every
  ``CLEAN_EVERY_SECONDS`` per process, on a request that notes a workspace's use, and cleans at
  most ``CLEAN_BATCH`` workspaces each time.

The quotas themselves (shares, stored bytes) are checked where rows are written, in
``app.store``.
"""

from __future__ import annotations

import logging
import threading
import time

from app.services import Services

logger = logging.getLogger("playground")

CLEAN_EVERY_SECONDS = 600.0
CLEAN_BATCH = 100


def delete_workspace(services: Services, workspace: str) -> dict[str, int]:
    """Delete ``workspace`` and everything it owns; answers what went, by kind."""
    stopped = services.jobs.stop_workspace(workspace)
    counts = services.store.delete_workspace(workspace)
    counts["uploads_and_job_records"] = services.storage.delete_workspace(workspace)
    counts["jobs_stopped"] = stopped
    return counts


class IdleCleaner:
    """Cleans unsaved workspaces idle for ``workspace_idle_days`` (shares stay)."""

    def __init__(self, services: Services):
        self.services = services
        self.idle_seconds = services.settings.workspace_idle_days * 86_400
        self._last = time.monotonic()
        self._lock = threading.Lock()

    def maybe_clean(self) -> None:
        """Clean if the last pass was ``CLEAN_EVERY_SECONDS`` ago (one caller at a time)."""
        if time.monotonic() - self._last < CLEAN_EVERY_SECONDS or not self._lock.acquire(False):
            return
        try:
            self._last = time.monotonic()
            self.clean(time.time())
        except Exception:  # noqa: BLE001 - a failed pass must not fail the request
            logger.exception("cleaning idle workspaces failed")
        finally:
            self._lock.release()

    def clean(self, now: float) -> list[str]:
        """Clean the workspaces idle at ``now``; answers their ids."""
        before = now - self.idle_seconds
        cleaned = []
        for workspace in self.services.store.idle_workspaces(before, CLEAN_BATCH):
            if self.services.store.clean_idle_workspace(workspace, before):
                self.services.jobs.stop_workspace(workspace)
                self.services.storage.delete_workspace(workspace)
                cleaned.append(workspace)
        return cleaned
