"""The shared things every request may need, made once per app and reached through dependencies."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request
from sqlalchemy.engine import Engine

from app.compute import ComputeSlots
from app.database import create_database_engine
from app.rooms import RoomStore
from app.serving import KeyedSlots
from app.settings import Settings
from app.store import ModuleRecord, ModuleStore


@dataclass
class Services:
    settings: Settings
    engine: Engine
    store: ModuleStore
    compute: ComputeSlots
    rooms: RoomStore
    event_streams: KeyedSlots
    extras: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def create(cls, settings: Settings) -> Services:
        if not settings.database_url:
            settings.data_dir.mkdir(parents=True, exist_ok=True)
        engine = create_database_engine(settings.sqlalchemy_url)
        return cls(
            settings=settings,
            engine=engine,
            store=ModuleStore(
                engine,
                settings.max_modules_per_workspace,
                max_shares=settings.max_shares_per_workspace,
                max_stored_bytes=settings.max_stored_bytes_per_workspace,
            ),
            compute=ComputeSlots(
                settings.max_concurrent_computations, settings.compute_wait_seconds
            ),
            rooms=RoomStore(engine, settings),
            event_streams=KeyedSlots(
                settings.max_event_streams_per_workspace,
                "event streams (training progress, rooms)",
                "max_event_streams_per_workspace",
            ),
        )


def get_services(request: Request) -> Services:
    return request.app.state.services


ServicesDep = Annotated[Services, Depends(get_services)]


def get_settings(services: ServicesDep) -> Settings:
    return services.settings


def get_store(services: ServicesDep) -> ModuleStore:
    return services.store


def get_workspace(request: Request) -> str:
    """The caller's workspace id (set by the workspace middleware from its cookie)."""
    return request.state.workspace


def get_module_record(
    module_id: str,
    workspace: Annotated[str, Depends(get_workspace)],
    store: Annotated[ModuleStore, Depends(get_store)],
) -> ModuleRecord:
    """The module ``module_id`` of the caller's workspace; 404 for any other (the same answer
    as for a module that does not exist, so ids of other workspaces cannot be probed)."""
    record = store.get(workspace, module_id) if len(module_id) <= 32 else None
    if record is None:
        raise HTTPException(
            status_code=404, detail=f"No module {module_id[:40]!r} in your workspace."
        )
    return record
