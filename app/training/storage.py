"""The training part's storage: uploaded CSV datasets and the records of training jobs.

They live in the playground's database (SQLite under the data directory, or PostgreSQL), as
tables of the one :data:`app.database.metadata`, so uploads and the record of every job survive a
restart.
"""

from __future__ import annotations

import io
import json
import threading
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy import delete, insert, select, update
from sqlalchemy.engine import Engine

from app.database import csv_datasets, training_jobs, workspace_transaction

MAX_CSV_PER_WORKSPACE = 20
"""Uploaded CSV files kept per workspace; the oldest go first."""
MAX_JOBS_KEPT_PER_WORKSPACE = 50
"""Finished jobs remembered per workspace; the oldest go first."""


@dataclass(frozen=True)
class CsvRecord:
    id: str
    workspace: str
    filename: str
    columns: list[str]
    rows: int
    data: np.ndarray


def _to_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def _from_bytes(blob: bytes) -> np.ndarray:
    return np.load(io.BytesIO(blob), allow_pickle=False)


class TrainingStorage:
    """CSV uploads and job records of every workspace, in the playground's database."""

    def __init__(self, engine: Engine):
        self.engine = engine
        self._lock = threading.Lock()

    # CSV -----------------------------------------------------------------------------------
    def save_csv(
        self, csv_id: str, workspace: str, filename: str, columns: list[str], data: np.ndarray
    ) -> None:
        """Store an upload; a workspace keeps its newest ``MAX_CSV_PER_WORKSPACE`` (counted under
        the workspace's lock, so concurrent uploads cannot keep more)."""
        with workspace_transaction(self.engine, workspace) as connection:
            connection.execute(
                insert(csv_datasets).values(
                    id=csv_id,
                    workspace=workspace,
                    filename=filename,
                    columns=columns,
                    rows=int(data.shape[0]),
                    data=_to_bytes(data),
                    created_at=time.time(),
                )
            )
            old = connection.execute(
                select(csv_datasets.c.id)
                .where(csv_datasets.c.workspace == workspace)
                .order_by(csv_datasets.c.created_at.desc())
                .offset(MAX_CSV_PER_WORKSPACE)
            ).all()
            if old:
                connection.execute(
                    delete(csv_datasets).where(csv_datasets.c.id.in_([row[0] for row in old]))
                )

    def get_csv(self, workspace: str, csv_id: str) -> CsvRecord | None:
        with self.engine.connect() as connection:
            row = (
                connection.execute(
                    select(csv_datasets).where(
                        csv_datasets.c.id == csv_id, csv_datasets.c.workspace == workspace
                    )
                )
                .mappings()
                .first()
            )
        if row is None:
            return None
        return CsvRecord(
            id=row["id"],
            workspace=row["workspace"],
            filename=row["filename"],
            columns=list(row["columns"]),
            rows=row["rows"],
            data=_from_bytes(row["data"]),
        )

    def list_csv(self, workspace: str) -> list[dict[str, Any]]:
        with self.engine.connect() as connection:
            rows = connection.execute(
                select(
                    csv_datasets.c.id,
                    csv_datasets.c.filename,
                    csv_datasets.c.columns,
                    csv_datasets.c.rows,
                )
                .where(csv_datasets.c.workspace == workspace)
                .order_by(csv_datasets.c.created_at.desc())
            ).all()
        return [
            {"csv_id": r[0], "filename": r[1], "columns": list(r[2]), "rows": r[3]} for r in rows
        ]

    def delete_workspace(self, workspace: str) -> int:
        """Delete the workspace's uploads and job records; answers how many rows went."""
        with self.engine.begin() as connection:
            gone = connection.execute(
                delete(csv_datasets).where(csv_datasets.c.workspace == workspace)
            ).rowcount
            gone += connection.execute(
                delete(training_jobs).where(training_jobs.c.workspace == workspace)
            ).rowcount
        return gone

    # Jobs ----------------------------------------------------------------------------------
    def save_job(self, job_id: str, workspace: str, module_id: str, record: dict) -> None:
        """Insert or replace the stored record of a job."""
        text = json.dumps(record, allow_nan=False)
        now = time.time()
        with self._lock, self.engine.begin() as connection:
            done = connection.execute(
                update(training_jobs)
                .where(training_jobs.c.id == job_id)
                .values(record=text, updated_at=now)
            ).rowcount
            if not done:
                connection.execute(
                    insert(training_jobs).values(
                        id=job_id,
                        workspace=workspace,
                        module_id=module_id,
                        record=text,
                        updated_at=now,
                    )
                )
                old = connection.execute(
                    select(training_jobs.c.id)
                    .where(training_jobs.c.workspace == workspace)
                    .order_by(training_jobs.c.updated_at.desc())
                    .offset(MAX_JOBS_KEPT_PER_WORKSPACE)
                ).all()
                if old:
                    connection.execute(
                        delete(training_jobs).where(training_jobs.c.id.in_([row[0] for row in old]))
                    )

    def get_job(self, workspace: str, job_id: str) -> dict | None:
        with self.engine.connect() as connection:
            text = connection.execute(
                select(training_jobs.c.record).where(
                    training_jobs.c.id == job_id, training_jobs.c.workspace == workspace
                )
            ).scalar_one_or_none()
        return json.loads(text) if text else None

    def list_jobs(self, workspace: str, module_id: str | None = None) -> list[dict]:
        query = select(training_jobs.c.record).where(training_jobs.c.workspace == workspace)
        if module_id is not None:
            query = query.where(training_jobs.c.module_id == module_id)
        with self.engine.connect() as connection:
            rows = connection.execute(query.order_by(training_jobs.c.updated_at.desc())).all()
        return [json.loads(row[0]) for row in rows]
