"""The worker pool: every computation runs in a worker process the web process supervises.

Each worker is a ``pebble.ProcessPool`` of one process (pebble starts it, reports its death
and starts a replacement); its tasks go over a :class:`~app.workers.channel.Channel`, a socket
pair that the event loop (or a waiting thread) writes and reads itself, which is a fifth of the
trip through pebble's own scheduling threads. Keeping one pool per worker lets the dispatcher
here choose *which* worker takes a task:

- **lanes** (:func:`lanes_of`): ``light`` tasks may use any worker; ``heavy`` and ``train``
  tasks never use the last worker (kept for light work) when there are two or more, so a slow
  compile or a room's training never queues a small run behind it; and with three or more,
  ``heavy`` tasks never use the last but one either (kept for training and light work), so
  heavy runs sent in a loop never hold every worker that training may use;
- **fairness**: the tasks of a client address that used the workers little lately go first
  (:class:`ClientUsage`: seconds of worker time, halved every :data:`USAGE_HALF_LIFE_SECONDS`,
  counted in steps of :data:`USAGE_STEP_SECONDS`), so a few clients sending heavy work in a
  loop wait behind everyone else's runs and training rather than before them;
- **priority**: then runs (``light``, ``heavy``) before training chunks (``train``), first come
  first served within a priority;
- **affinity**: a free worker that ran the same affinity before (its compiled functions are
  warm) is preferred.

The workers that take heavy runs run at a lower CPU priority (``heavy_nice``, a ``nice``
value) than the web process and the workers kept for light work and training: on a machine
with a core or two, a compile bomb then slows the room's pages, small runs and training
little.

A supervisor thread checks every busy worker every :data:`SUPERVISE_SECONDS`: past its task's
time limit or past ``worker_memory_mb`` of resident memory, the worker is killed (SIGKILL) and
replaced, and the task ends with :class:`RunLimitExceeded` naming the limit and the stage the
worker reported. :meth:`TaskHandle.cancel` kills the same way (:class:`RunCancelled`).

``workers=0`` runs tasks inline, in the calling thread of the web process, for the test suite:
arguments and results still go through pickle (so what cannot cross to a worker fails there
too), but time limits and killing do not apply.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import multiprocessing
import os
import pickle
import signal
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Literal

import anyio.to_thread
import pebble

from app.workers import stage as stage_module
from app.workers.channel import Channel, ChannelClosed
from app.workers.errors import RunCancelled, RunLimitExceeded, WorkerLost, WorkersBusy
from app.workers.process import initialize
from app.workers.stage import CODES, STAGES

logger = logging.getLogger("playground.workers")

Lane = Literal["light", "heavy", "train"]
PRIORITY = {"light": 0, "heavy": 0, "train": 1}
SUPERVISE_SECONDS = 0.05
"""How often the supervisor looks at busy workers' time and memory."""
USAGE_HALF_LIFE_SECONDS = 60.0
"""A client's worker time counts half as much after this long."""
USAGE_STEP_SECONDS = 2.0
"""Clients whose recent worker time is within one step of each other are served in the same
turn (by priority, then first come first served)."""
MAX_CLIENTS = 4096
"""Client addresses whose recent worker time is remembered."""
MAX_AFFINITIES = 256
"""Affinities each worker remembers."""
MAX_WAITING_THREADS = 128
"""Threads that wait for a worker on behalf of :meth:`WorkerPool.submit`."""
PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")
SPAWN = multiprocessing.get_context("spawn")
"""Workers start as new interpreters: forking a process that runs JAX's threads is unsafe."""


def resident_bytes(pid: int) -> int:
    """The resident memory of process ``pid`` (0 when it is gone)."""
    try:
        with open(f"/proc/{pid}/statm") as statm:
            return int(statm.read().split()[1]) * PAGE_BYTES
    except (OSError, ValueError, IndexError):
        return 0


class TaskHandle:
    """One task's view from the web process: its stage and elapsed time, and a way to cancel
    it. Made by :meth:`WorkerPool.handle`."""

    def __init__(self, pool: WorkerPool):
        self._pool = pool
        self.created = time.monotonic()
        self._stage_code = CODES["waiting"]
        self._slot: _Slot | None = None
        self.cancelled = False
        self.done = False

    @property
    def stage(self) -> str:
        """``waiting`` for a worker, then the stage the task reports, then ``done``."""
        if self.done:
            return "done"
        slot = self._slot
        if slot is not None and slot.process is not None:
            code = slot.stage_value.value
            return STAGES[code] if code != CODES["idle"] else "starting"
        return STAGES[self._stage_code]

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.created

    def cancel(self) -> None:
        """Stop the task: its worker is killed (and replaced) if it has started; a task still
        waiting for a worker never starts. The caller then gets :class:`RunCancelled`."""
        self._pool._cancel(self)


@dataclass(eq=False)
class _Slot:
    """One worker: its pebble pool (None inline), what it shares with the web process, the
    channel its tasks go over, and the task it runs."""

    index: int
    lanes: frozenset[str]
    """The lanes whose tasks it takes (:func:`lanes_of`)."""
    nice: int
    """The CPU priority its worker process runs at (``os.nice``)."""
    process: pebble.ProcessPool | None
    pid_value: Any
    stage_value: Any
    handle: TaskHandle | None = None
    limit: float = float("inf")
    """The running task's time limit, counted from when the worker starts it (a worker being
    replaced takes seconds to start)."""
    deadline: float = float("inf")
    kill: tuple[str, str] | None = None
    """Why the supervisor or a cancel killed the worker: ``(reason, stage)``."""
    affinities: OrderedDict = field(default_factory=OrderedDict)
    dead_pid: int = 0
    channel: Channel | None = None
    """Its tasks' channel (None: opened with the next task, its worker having died)."""

    @property
    def ready(self) -> bool:
        """Its worker process has started (and is not the one that died last)."""
        return self.pid_value.value not in (0, self.dead_pid)

    def accepts(self, lane: Lane) -> bool:
        return lane in self.lanes


def lanes_of(index: int, count: int) -> frozenset[str]:
    """The lanes worker ``index`` of ``count`` takes: the last only light work (when there are
    two or more), the last but one light work and training (when there are three or more),
    the others everything."""
    if count >= 2 and index == count - 1:
        return frozenset({"light"})
    if count >= 3 and index == count - 2:
        return frozenset({"light", "train"})
    return frozenset({"light", "heavy", "train"})


@dataclass(eq=False)
class _Ticket:
    priority: int
    order: int
    lane: Lane
    client: Hashable | None = None
    rank: tuple = ()


class ClientUsage:
    """Each client's recent worker time: seconds, halved every
    :data:`USAGE_HALF_LIFE_SECONDS` (not thread-safe: the pool calls it under its lock)."""

    def __init__(self, max_clients: int = MAX_CLIENTS):
        self._seconds: dict[Hashable, tuple[float, float]] = {}
        self._max = max_clients

    def add(self, client: Hashable, seconds: float, now: float) -> None:
        self._seconds[client] = (self.get(client, now) + seconds, now)
        if len(self._seconds) > self._max:  # forget the clients with the least left
            kept = sorted(self._seconds, key=lambda c: self.get(c, now))[-self._max // 2 :]
            self._seconds = {c: self._seconds[c] for c in kept}

    def get(self, client: Hashable | None, now: float) -> float:
        if client is None or client not in self._seconds:
            return 0.0
        seconds, when = self._seconds[client]
        return seconds * 0.5 ** ((now - when) / USAGE_HALF_LIFE_SECONDS)

    def step(self, client: Hashable | None, now: float) -> int:
        """The client's turn: 0 for little recent worker time, one more per
        :data:`USAGE_STEP_SECONDS`."""
        return int(self.get(client, now) // USAGE_STEP_SECONDS)


class RunTracker:
    """Tasks that users may follow or cancel by an id of their choosing, per workspace."""

    def __init__(self, max_entries: int = 4096):
        self._handles: OrderedDict[tuple[str, str], TaskHandle] = OrderedDict()
        self._lock = threading.Lock()
        self._max = max_entries

    def register(self, workspace: str, run_id: str, handle: TaskHandle) -> None:
        with self._lock:
            self._handles[(workspace, run_id)] = handle
            self._handles.move_to_end((workspace, run_id))
            while len(self._handles) > self._max:
                self._handles.popitem(last=False)

    def get(self, workspace: str, run_id: str) -> TaskHandle | None:
        with self._lock:
            return self._handles.get((workspace, run_id))


class WorkerPool:
    """``workers`` supervised worker processes (``0``: inline); see the module's docstring.

    ``setup(*setup_args)`` runs in each worker before its first task (a module-level
    function: it travels by reference). ``heavy_nice``: the CPU priority (``nice``) of the
    workers that take heavy runs. ``client_of()``: the client a task is for when
    :meth:`call` is not told (e.g. the request's address), for fairness."""

    def __init__(
        self,
        workers: int,
        *,
        max_run_seconds: float,
        memory_mb: int,
        wait_seconds: float,
        inline_slots: int = 2,
        setup: Callable | None = None,
        setup_args: tuple = (),
        heavy_nice: int = 0,
        client_of: Callable[[], Hashable | None] | None = None,
    ):
        self.workers = workers
        self.max_run_seconds = max_run_seconds
        self.memory_mb = memory_mb
        self.wait_seconds = wait_seconds
        self.tracker = RunTracker()
        self._cond = threading.Condition()
        self._waiting: list[_Ticket] = []
        self._order = itertools.count()
        self._closed = False
        self.tasks = 0
        self.killed = 0
        self.usage = ClientUsage()
        self._client_of = client_of
        self._setup = (setup, setup_args)
        count = workers if workers > 0 else max(1, inline_slots)
        self._slots = []
        if workers > 0:
            # Every worker shares one accelerator: none may take most of its memory up front.
            os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
        for index in range(count):
            lanes = lanes_of(index, count)
            nice = heavy_nice if "heavy" in lanes else 0
            pid_value = SPAWN.Value("i", 0, lock=False)
            stage_value = SPAWN.Value("i", CODES["idle"], lock=False)
            process = self._new_process(pid_value, stage_value, nice) if workers > 0 else None
            self._slots.append(_Slot(index, lanes, nice, process, pid_value, stage_value))
        self._waiters = ThreadPoolExecutor(MAX_WAITING_THREADS, thread_name_prefix="worker-wait")
        self._supervisor = None
        if workers > 0:
            self._supervisor = threading.Thread(
                target=self._supervise, name="worker-supervisor", daemon=True
            )
            self._supervisor.start()

    def _new_process(self, pid_value: Any, stage_value: Any, nice: int) -> pebble.ProcessPool:
        return pebble.ProcessPool(
            max_workers=1,
            initializer=initialize,
            initargs=(pid_value, stage_value, nice, *self._setup),
            context=SPAWN,
        )

    # -- public
    def handle(self) -> TaskHandle:
        return TaskHandle(self)

    def start(self) -> WorkerPool:
        """Start every worker process now rather than at its first task."""
        for slot in self._slots:
            if slot.process is not None:
                self._channel(slot)
        return self

    def pids(self) -> list[int]:
        """The worker processes' pids (0 for one still starting)."""
        return [
            slot.pid_value.value if slot.ready else 0
            for slot in self._slots
            if slot.process is not None
        ]

    def status(self) -> dict[str, Any]:
        """Workers, how many are busy, tasks run and workers killed."""
        with self._cond:
            busy = sum(slot.handle is not None for slot in self._slots)
        return {
            "workers": self.workers,
            "inline": self.workers == 0,
            "busy": busy,
            "waiting": len(self._waiting),
            "tasks": self.tasks,
            "killed": self.killed,
        }

    def capacity(self, lane: Lane) -> int:
        """How many workers take tasks of ``lane`` (inline: the threads that stand for them)."""
        return sum(slot.accepts(lane) for slot in self._slots)

    def resident_bytes(self) -> int:
        """The workers' resident memory, together."""
        return sum(resident_bytes(pid) for pid in self.pids() if pid)

    def call(
        self,
        fn: Callable,
        *args: Any,
        lane: Lane = "light",
        timeout: float | None = None,
        handle: TaskHandle | None = None,
        affinity: Hashable | None = None,
        wait: float | None = None,
        client: Hashable | None = None,
    ) -> Any:
        """Run ``fn(*args)`` in a worker and answer its result (see the package docstring for
        what it raises). ``wait``: how long to wait for a free worker (default
        ``wait_seconds``), then :class:`WorkersBusy`; ``client``: whose worker time it is
        (default ``client_of()``)."""
        handle = handle or self.handle()
        if client is None and self._client_of is not None:
            client = self._client_of()
        wait = self.wait_seconds if wait is None else wait
        slot = self._acquire(handle, lane, affinity, wait, client)
        started = time.monotonic()
        try:
            if slot.process is None:
                return self._inline(slot, handle, fn, args)
            return self._in_worker(slot, handle, fn, args, timeout)
        finally:
            handle.done = True
            self._release(slot, affinity, client, started)

    async def call_async(
        self,
        fn: Callable,
        *args: Any,
        lane: Lane = "light",
        timeout: float | None = None,
        handle: TaskHandle | None = None,
        affinity: Hashable | None = None,
        wait: float | None = None,
        client: Hashable | None = None,
    ) -> Any:
        """:meth:`call` from the event loop. A worker free now takes the task at once and the
        loop awaits its result, with no thread waiting for it (a trip two thread hand-overs
        shorter); when none is free, or inline, :meth:`call` waits in the thread pool."""
        handle = handle or self.handle()
        if client is None and self._client_of is not None:
            client = self._client_of()
        slot = self._acquire_now(handle, lane, affinity, client) if self.workers > 0 else None
        if slot is None:
            return await anyio.to_thread.run_sync(
                partial(
                    self.call,
                    fn,
                    *args,
                    lane=lane,
                    timeout=timeout,
                    handle=handle,
                    affinity=affinity,
                    wait=wait,
                    client=client,
                )
            )
        started = time.monotonic()
        try:
            limit, channel = self._schedule(slot, timeout)
            try:
                with self._answering(slot, limit):
                    return await channel.call_async(fn, args)
            except asyncio.CancelledError:  # the request was cancelled: so is its task
                with self._cond:
                    self._kill(slot, "cancelled")
                self._ended(slot, limit)
                raise
        finally:
            handle.done = True
            self._release(slot, affinity, client, started)

    def submit(self, fn: Callable, *args: Any, **options: Any) -> Future:
        """:meth:`call` without blocking: a future of its result (its client is the caller's,
        unless ``client`` is given)."""
        if options.get("client") is None and self._client_of is not None:
            options["client"] = self._client_of()
        return self._waiters.submit(self.call, fn, *args, **options)

    def close(self, timeout: float = 5.0) -> None:
        """Stop every worker process (killing what runs) and the supervisor."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        for slot in self._slots:
            if slot.process is not None:
                slot.process.stop()
        for slot in self._slots:
            if slot.process is not None:
                slot.process.join(timeout)
            if slot.channel is not None:
                slot.channel.close()
        self._waiters.shutdown(wait=False, cancel_futures=True)

    # -- running
    def _inline(self, slot: _Slot, handle: TaskHandle, fn: Callable, args: tuple) -> Any:
        fn, args = pickle.loads(pickle.dumps((fn, args)))
        stage_module._local.handle = handle
        handle._stage_code = CODES["computing"]
        try:
            result = pickle.loads(pickle.dumps(fn(*args)))
        finally:
            stage_module._local.handle = None
        if handle.cancelled:
            raise RunCancelled(STAGES[handle._stage_code])
        return result

    def _schedule(self, slot: _Slot, timeout: float | None) -> tuple[float, Channel]:
        """Ready ``slot``'s worker for a task: the task's time limit, and the channel to send
        it over."""
        limit = self.max_run_seconds if timeout is None else timeout
        with self._cond:
            slot.limit = limit
        return limit, self._channel(slot)

    def _channel(self, slot: _Slot) -> Channel:
        """``slot``'s channel, opened anew when its worker died (pebble starts a replacement)."""
        if not slot.process.active:  # broken: its process died while idle, or could not start
            slot.process.stop()
            slot.process = self._new_process(slot.pid_value, slot.stage_value, slot.nice)
            self._close_channel(slot)
        if slot.channel is not None and slot.channel.served.done():  # it died while idle
            self._close_channel(slot)
        if slot.channel is None:
            slot.channel = Channel.open(slot.process)
        return slot.channel

    def _close_channel(self, slot: _Slot) -> None:
        if slot.channel is not None:
            slot.channel.close()
            slot.channel = None

    def _in_worker(
        self, slot: _Slot, handle: TaskHandle, fn: Callable, args: tuple, timeout: float | None
    ) -> Any:
        limit, channel = self._schedule(slot, timeout)
        with self._answering(slot, limit):
            return channel.call(fn, args)

    @contextmanager
    def _answering(self, slot: _Slot, limit: float):
        """Around waiting for a task's answer: a task whose worker died (its channel closed)
        raises what :meth:`_ended` says instead."""
        try:
            yield
        except ChannelClosed as error:
            raise self._ended(slot, limit) from error
        except Exception as error:
            if slot.kill is not None:  # killed while its error was on the way
                raise self._ended(slot, limit) from error
            raise

    def _ended(self, slot: _Slot, limit: float) -> Exception:
        """What a task whose worker died answers. Its channel is closed (the replacement gets
        a new one); the dead worker's last stage is cleared (it would start the next task's
        clock before the new worker starts it), and so is what was warm there."""
        kill = slot.kill
        lost_stage = STAGES[slot.stage_value.value]
        self._close_channel(slot)
        with self._cond:
            slot.stage_value.value = CODES["idle"]
            slot.dead_pid = slot.pid_value.value  # not ready until its replacement says its pid
            slot.affinities.clear()
        if kill is None:
            return WorkerLost(lost_stage)
        reason, stage = kill
        if reason == "cancelled":
            return RunCancelled(stage)
        if reason == "max_run_seconds":
            return RunLimitExceeded("max_run_seconds", limit, stage)
        return RunLimitExceeded("worker_memory_mb", self.memory_mb, stage)

    # -- dispatch
    def _acquire(
        self,
        handle: TaskHandle,
        lane: Lane,
        affinity: Hashable | None,
        wait: float,
        client: Hashable | None,
    ) -> _Slot:
        ticket = _Ticket(PRIORITY[lane], next(self._order), lane, client)
        deadline = time.monotonic() + wait
        with self._cond:
            self._waiting.append(ticket)
            self._reorder()
            try:
                while True:
                    if handle.cancelled:
                        raise RunCancelled("waiting")
                    if self._closed:
                        raise WorkersBusy(self.workers, 0)
                    slot = self._pick(ticket, affinity)
                    if slot is not None:
                        return self._take(slot, handle)
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise WorkersBusy(max(self.workers, len(self._slots)), wait)
                    self._cond.wait(remaining)
            finally:
                self._waiting.remove(ticket)
                self._cond.notify_all()

    def _acquire_now(
        self, handle: TaskHandle, lane: Lane, affinity: Hashable | None, client: Hashable | None
    ) -> _Slot | None:
        """A worker for the task if one is free now (as :meth:`_acquire` would choose it),
        else None (:meth:`call` then waits, or answers why not)."""
        try:
            return self._acquire(handle, lane, affinity, 0, client)
        except (WorkersBusy, RunCancelled):
            return None

    def _take(self, slot: _Slot, handle: TaskHandle) -> _Slot:
        """Give ``slot`` to the task of ``handle`` (under the lock)."""
        slot.handle, slot.kill = handle, None
        handle._slot = slot
        self.tasks += 1
        return slot

    def _reorder(self) -> None:
        """Put the waiting tasks in the order they are served (under the lock; every waiting
        thread then reads the same order): the clients that used the workers least lately
        first, then runs before training chunks, then first come first served."""
        now = time.monotonic()
        for ticket in self._waiting:
            ticket.rank = (self.usage.step(ticket.client, now), ticket.priority, ticket.order)
        self._waiting.sort(key=lambda t: t.rank)

    def _pick(self, ticket: _Ticket, affinity: Hashable | None) -> _Slot | None:
        free = [slot for slot in self._slots if slot.handle is None]
        for other in self._waiting:  # those ahead in line go first
            if other is ticket:
                break
            if any(slot.accepts(other.lane) for slot in free):
                return None
        mine = [slot for slot in free if slot.accepts(ticket.lane)]
        if not mine:
            return None
        # a worker that is still starting (a replacement takes seconds) only when no other is free
        mine = [slot for slot in mine if slot.ready] or mine
        if affinity is not None:
            for slot in mine:
                if affinity in slot.affinities:
                    return slot
        # light work and training fill the workers kept for them first, leaving the others
        return mine[0] if ticket.lane == "heavy" else mine[-1]

    def _release(
        self, slot: _Slot, affinity: Hashable | None, client: Hashable | None, started: float
    ) -> None:
        with self._cond:
            if client is not None:
                now = time.monotonic()
                self.usage.add(client, now - started, now)
                self._reorder()
            if slot.kill is None and affinity is not None:
                slot.affinities[affinity] = True
                slot.affinities.move_to_end(affinity)
                while len(slot.affinities) > MAX_AFFINITIES:
                    slot.affinities.popitem(last=False)
            if slot.handle is not None:
                slot.handle._slot = None
            slot.handle, slot.limit, slot.deadline = None, float("inf"), float("inf")
            self._cond.notify_all()

    # -- supervision
    def _cancel(self, handle: TaskHandle) -> None:
        with self._cond:
            handle.cancelled = True
            slot = handle._slot
            if slot is not None and slot.handle is handle and slot.process is not None:
                self._kill(slot, "cancelled")
            self._cond.notify_all()

    def _kill(self, slot: _Slot, reason: str) -> None:
        """Kill ``slot``'s worker (under the lock); pebble starts a new one."""
        if slot.kill is not None:
            return
        slot.kill = (reason, STAGES[slot.stage_value.value])
        pid = slot.pid_value.value
        self.killed += 1
        logger.warning("killing worker %s (pid %s): %s while %s", slot.index, pid, *slot.kill)
        if pid:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def _supervise(self) -> None:
        limit_bytes = self.memory_mb * 1_000_000
        while not self._closed:
            time.sleep(SUPERVISE_SECONDS)
            now = time.monotonic()
            with self._cond:
                for slot in self._slots:
                    if slot.handle is None or slot.kill is not None:
                        continue
                    if slot.deadline == float("inf"):
                        if slot.stage_value.value != CODES["idle"]:
                            slot.deadline = now + slot.limit  # the worker began the task
                        continue
                    if now > slot.deadline:
                        self._kill(slot, "max_run_seconds")
                    elif slot.pid_value.value and (
                        resident_bytes(slot.pid_value.value) > limit_bytes
                    ):
                        self._kill(slot, "worker_memory_mb")
