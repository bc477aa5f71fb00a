"""The composition root: everything shared, built once per app and reached through dependencies.

:meth:`Services.create` builds the database engine (every table of the one
:data:`app.database.metadata` created), the module store, the compute slots, the rooms, the
event-stream slots, the worker pool (``app.workers``), the runs' web side (``app.runs.client``;
JAX's persistent compilation cache configured), the training storage, the job manager and the
warm-up of the first page's presets; :meth:`Services.close` stops the warm-up, the jobs and the
workers and closes the database. The app
factory calls both from its lifespan (``app.main``). Routers receive each shared thing through
the typed dependencies below (``StoreDep``, ``RunsDep``, ...).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.engine import Engine

from app.compute import ComputeSlots
from app.database import create_database_engine
from app.rooms import RoomStore
from app.runs.client import RunClient
from app.runs.warmup import Warmup, configure_compilation_cache, prepare_worker
from app.serving import KeyedSlots, current_client
from app.settings import Settings
from app.store import ModuleRecord, ModuleStore
from app.training.jobs import JobManager
from app.training.storage import TrainingStorage
from app.workers import WorkerPool


@dataclass(frozen=True)
class Services:
    """The app's shared objects (one of each per app, made by :meth:`create`)."""

    settings: Settings
    engine: Engine
    """The database engine (SQLite under the data directory, or PostgreSQL)."""
    store: ModuleStore
    compute: ComputeSlots
    rooms: RoomStore
    event_streams: KeyedSlots
    runs: RunClient
    """Runs as the web process sees them: early refusals, the compile scopes, "what changed";
    the work itself goes to a worker (``app.runs.worker``)."""
    storage: TrainingStorage
    """Uploaded CSV datasets and the records of training jobs."""
    jobs: JobManager
    workers: WorkerPool
    """The worker processes every trace, compile, run and training step happens in."""
    warmup: Warmup | None
    """The first page's presets compiling in the background (``warm_start``), else None."""

    @classmethod
    def create(cls, settings: Settings) -> Services:
        if not settings.database_url:
            settings.data_dir.mkdir(parents=True, exist_ok=True)
        engine = create_database_engine(settings.sqlalchemy_url)
        store = ModuleStore(
            engine,
            settings.max_modules_per_workspace,
            max_shares=settings.max_shares_per_workspace,
            max_stored_bytes=settings.max_stored_bytes_per_workspace,
        )
        storage = TrainingStorage(engine)
        configure_compilation_cache(settings)  # before anything compiles
        workers = WorkerPool(
            settings.workers,
            max_run_seconds=settings.max_run_seconds,
            memory_mb=settings.worker_memory_mb,
            wait_seconds=settings.compute_wait_seconds,
            inline_slots=settings.max_concurrent_computations,
            setup=prepare_worker,
            setup_args=(settings,),
            heavy_nice=settings.heavy_worker_nice,
            client_of=current_client,
        ).start()
        runs = RunClient(settings, store, workers)
        return cls(
            settings=settings,
            engine=engine,
            store=store,
            compute=ComputeSlots(
                settings.max_concurrent_computations,
                settings.compute_wait_seconds,
                per_client=settings.max_computations_per_client,
            ),
            rooms=RoomStore(engine, settings),
            event_streams=KeyedSlots(
                settings.max_event_streams_per_workspace,
                "event streams (training progress, rooms) open",
                "max_event_streams_per_workspace",
            ),
            runs=runs,
            storage=storage,
            jobs=JobManager(store, storage, settings, workers),
            workers=workers,
            warmup=Warmup(runs).start() if settings.warm_start else None,
        )

    def close(self) -> None:
        """Stop the warm-up and every training job (their parameters saved), then close the
        database's pool."""
        if self.warmup is not None:
            self.warmup.stop()
        self.jobs.shutdown()
        self.workers.close()
        self.runs.close()
        self.store.close()
        self.engine.dispose()


# Dependencies -------------------------------------------------------------------------------


def get_services(request: Request) -> Services:
    return request.app.state.services


ServicesDep = Annotated[Services, Depends(get_services)]


def _part(name: str):
    """A dependency that answers the shared object ``services.<name>``."""

    def get(services: ServicesDep):
        return getattr(services, name)

    get.__name__ = f"get_{name}"
    return get


def get_workspace(request: Request) -> str:
    """The caller's workspace id (set by the workspace middleware from its cookie)."""
    return request.state.workspace


SettingsDep = Annotated[Settings, Depends(_part("settings"))]
StoreDep = Annotated[ModuleStore, Depends(_part("store"))]
ComputeDep = Annotated[ComputeSlots, Depends(_part("compute"))]
RunsDep = Annotated[RunClient, Depends(_part("runs"))]
JobsDep = Annotated[JobManager, Depends(_part("jobs"))]
WorkersDep = Annotated[WorkerPool, Depends(_part("workers"))]
TrainingStorageDep = Annotated[TrainingStorage, Depends(_part("storage"))]
WorkspaceDep = Annotated[str, Depends(get_workspace)]


def get_module_record(
    module_id: str,
    workspace: WorkspaceDep,
    store: StoreDep,
) -> ModuleRecord:
    """The module ``module_id`` of the caller's workspace; 404 for any other (the same answer
    as for a module that does not exist, so ids of other workspaces cannot be probed)."""
    return store.find(workspace, module_id)


RecordDep = Annotated[ModuleRecord, Depends(get_module_record)]
