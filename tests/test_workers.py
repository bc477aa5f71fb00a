"""The worker pool with real worker processes: results, errors, time and memory limits,
cancelling, a worker killed from outside, lanes and the inline mode the suite's apps use."""

from __future__ import annotations

import os
import pickle
import signal
import threading
import time

import pytest
import worker_tasks as tasks

from app.errors import PlaygroundError
from app.workers import (
    ClientUsage,
    RunCancelled,
    RunLimitExceeded,
    WorkerLost,
    WorkerPool,
    WorkersBusy,
    resident_bytes,
)

LIMIT_SECONDS = 1.5
MEMORY_MB = 400


@pytest.fixture(scope="module")
def pool():
    pool = WorkerPool(
        2,
        max_run_seconds=LIMIT_SECONDS,
        memory_mb=MEMORY_MB,
        wait_seconds=20,
        setup=tasks.prepare,
    )
    pool.start()
    yield pool
    pool.close()


def wait_for(predicate, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.02)


def test_a_task_runs_in_another_process_and_its_result_comes_back(pool):
    assert pool.call(tasks.add, 2, 3) == 5
    assert pool.call(tasks.pid) != os.getpid()
    assert pool.call(tasks.jax_sum, 10, timeout=60) == 45.0  # compiles: slow on a busy machine


def test_errors_raised_in_a_worker_are_raised_in_the_caller(pool):
    with pytest.raises(PlaygroundError) as refused:
        pool.call(tasks.refuse)
    assert (refused.value.status_code, refused.value.field) == (422, "x")
    with pytest.raises(ValueError, match="a plain failure"):
        pool.call(tasks.fail)
    assert pool.call(tasks.add, 1, 1) == 2


def test_a_worker_error_carries_its_traceback_from_the_worker(pool):
    with pytest.raises(ValueError) as failed:
        pool.call(tasks.fail)
    assert "worker_tasks.py" in str(failed.value.__cause__)  # where it was raised, in the worker


def test_what_cannot_cross_between_processes_is_named_and_the_worker_goes_on(pool):
    with pytest.raises(TypeError, match="result cannot be sent back"):
        pool.call(tasks.unpicklable_result)
    with pytest.raises(TypeError, match="error .*made in the worker.* cannot be sent back"):
        pool.call(tasks.raise_unpicklable)
    with pytest.raises((pickle.PicklingError, AttributeError, TypeError)):
        pool.call(tasks.echo, lambda: None)  # the task itself: raised here, nothing sent
    assert pool.call(tasks.add, 2, 5) == 7


def test_large_arguments_and_results_cross_whole_both_ways(pool):
    assert len(pool.call(tasks.large, 30)) == 30_000_000  # many times a socket's buffer
    payload = bytes(range(256)) * 40_000
    assert pool.call(tasks.echo, payload) == payload


def test_tasks_from_the_event_loop_and_from_threads_share_the_workers(pool):
    import asyncio

    async def both() -> list:
        loop = asyncio.get_running_loop()
        from_thread = loop.run_in_executor(None, lambda: pool.call(tasks.add, 1, 2))
        awaited = [pool.call_async(tasks.add, n, n) for n in range(6)]
        return [await from_thread, *await asyncio.gather(*awaited)]

    assert asyncio.run(both()) == [3, 0, 2, 4, 6, 8, 10]


def test_a_worker_that_died_while_idle_is_replaced_for_the_next_task(pool):
    pool.call(tasks.add, 0, 0, lane="heavy")
    (slot,) = [slot for slot in pool._slots if slot.accepts("heavy")]
    os.kill(slot.pid_value.value, signal.SIGKILL)
    wait_for(lambda: slot.channel.served.done())  # pebble saw it die
    assert pool.call(tasks.add, 3, 4, lane="heavy") == 7


def test_workers_are_reused_and_keep_their_state(pool):
    first = pool.call(tasks.count_calls, lane="heavy")
    assert pool.call(tasks.count_calls, lane="heavy") == first + 1


def test_past_the_time_limit_the_worker_is_killed_and_the_stage_named(pool):
    before = pool.killed
    with pytest.raises(RunLimitExceeded) as limit:
        pool.call(tasks.sleep_in, "compiling", 30)
    error = limit.value
    assert (error.status_code, error.setting, error.value, error.stage) == (
        422,
        "max_run_seconds",
        LIMIT_SECONDS,
        "compiling",
    )
    assert "PLAYGROUND_MAX_RUN_SECONDS" in error.message and "1.5 s" in error.message
    assert pool.killed == before + 1
    assert pool.call(tasks.add, 2, 2) == 4  # a new worker took its place


def test_a_task_may_have_its_own_time_limit(pool):
    with pytest.raises(RunLimitExceeded) as limit:
        pool.call(tasks.sleep_in, "training", 30, timeout=0.5)
    assert (limit.value.value, limit.value.stage) == (0.5, "training")
    assert pool.call(tasks.sleep_in, "running", 0.1, timeout=5) == 0.1


def test_past_the_memory_limit_the_worker_is_killed_and_memory_comes_back(pool):
    pool.call(tasks.add, 0, 0)
    wait_for(lambda: all(pool.pids()))
    before = pool.resident_bytes()
    with pytest.raises(RunLimitExceeded) as limit:
        pool.call(tasks.allocate, 2 * MEMORY_MB, lane="heavy")
    assert (limit.value.setting, limit.value.value, limit.value.stage) == (
        "worker_memory_mb",
        MEMORY_MB,
        "running",
    )
    assert pool.call(tasks.add, 1, 2, lane="heavy") == 3
    wait_for(lambda: all(pool.pids()))
    assert pool.resident_bytes() < before + 200_000_000


def test_a_worker_killed_from_outside_answers_503_with_retry_after(pool):
    handle = pool.handle()
    outcome = {}

    def run():
        try:
            pool.call(tasks.sleep_in, "running", 30, handle=handle, lane="heavy")
        except Exception as error:  # noqa: BLE001 - the test looks at it
            outcome["error"] = error

    thread = threading.Thread(target=run)
    thread.start()
    wait_for(lambda: handle.stage == "running")
    os.kill(handle._slot.pid_value.value, signal.SIGKILL)
    thread.join(10)
    error = outcome["error"]
    assert isinstance(error, WorkerLost)
    assert error.status_code == 503 and error.headers["Retry-After"]
    assert pool.call(tasks.add, 5, 5, lane="heavy") == 10


def test_cancel_stops_a_running_task_and_its_worker(pool):
    handle = pool.handle()
    threading.Timer(0.5, handle.cancel).start()
    started = time.monotonic()
    with pytest.raises(RunCancelled) as cancelled:
        pool.call(tasks.sleep_in, "compiling", 30, handle=handle)
    assert time.monotonic() - started < 5
    assert cancelled.value.stage == "compiling" and cancelled.value.status_code == 409
    assert handle.stage == "done"
    assert pool.call(tasks.add, 1, 1) == 2


def test_a_task_cancelled_while_waiting_never_starts():
    pool = WorkerPool(0, max_run_seconds=5, memory_mb=100, wait_seconds=10, inline_slots=1)
    busy = pool.submit(tasks.sleep_in, "running", 0.5)
    handle = pool.handle()
    waiting = pool.submit(tasks.add, 1, 1, handle=handle)
    wait_for(lambda: pool.status()["waiting"] == 1)
    assert handle.stage == "waiting"
    handle.cancel()
    with pytest.raises(RunCancelled):
        waiting.result(5)
    assert busy.result(5) == 0.5
    pool.close()


def test_light_work_is_not_queued_behind_heavy_work(pool):
    wait_for(lambda: all(slot.ready for slot in pool._slots))  # none is being replaced
    heavy = [pool.submit(tasks.sleep_in, "compiling", 1.0, lane="heavy") for _ in range(2)]
    wait_for(lambda: pool.status()["busy"] >= 1)
    started = time.monotonic()
    assert pool.call(tasks.add, 3, 4) == 7
    light_seconds = time.monotonic() - started
    assert [future.result(10) for future in heavy] == [1.0, 1.0]
    # the second heavy task waited for the first (one heavy worker of two); the light one did not
    assert light_seconds < 0.9


def test_a_full_pool_answers_503_after_the_wait():
    pool = WorkerPool(0, max_run_seconds=5, memory_mb=100, wait_seconds=0.2, inline_slots=1)
    busy = pool.submit(tasks.sleep_in, "running", 1.0)
    wait_for(lambda: pool.status()["busy"] == 1)
    with pytest.raises(WorkersBusy) as full:
        pool.call(tasks.add, 1, 1)
    assert full.value.status_code == 503 and "PLAYGROUND_WORKERS" in full.value.message
    assert busy.result(5) == 1.0
    pool.close()


def test_inline_tasks_still_cross_pickle():
    pool = WorkerPool(0, max_run_seconds=5, memory_mb=100, wait_seconds=1)
    assert pool.call(tasks.add, 2, 2) == 4
    with pytest.raises((pickle.PicklingError, AttributeError)):
        pool.call(lambda: 1)
    pool.close()


def test_stage_is_seen_while_the_task_runs(pool):
    handle = pool.handle()
    future = pool.submit(tasks.sleep_in, "tracing", 0.6, handle=handle)
    wait_for(lambda: handle.stage == "tracing")
    assert 0 <= handle.elapsed < 5
    assert future.result(10) == 0.6
    assert handle.stage == "done"


def test_resident_bytes_of_a_missing_process_is_zero():
    assert resident_bytes(2**22 + 12345) == 0
    assert resident_bytes(os.getpid()) > 0


def test_a_task_goes_to_a_ready_worker_rather_than_one_still_starting(pool):
    """After a worker is killed, its replacement takes a while to start: a light task meanwhile
    goes to the other worker, which is ready, instead of waiting for it."""
    pool.call(tasks.add, 0, 0)
    wait_for(lambda: all(pool.pids()))
    with pytest.raises(RunLimitExceeded):
        pool.call(tasks.sleep_in, "compiling", 30)  # light: on the worker kept for light work
    survivor = pool.pids()[0]
    assert pool.call(tasks.pid) == survivor


def test_recent_worker_time_halves_every_minute():
    usage = ClientUsage()
    usage.add("a", 8.0, 100.0)
    assert usage.get("a", 100.0) == 8.0
    assert usage.get("a", 160.0) == pytest.approx(4.0)
    assert usage.get("a", 220.0) == pytest.approx(2.0)
    assert usage.step("a", 160.0) == 2 and usage.step("a", 220.0) == 1
    usage.add("a", 1.0, 160.0)
    assert usage.get("a", 160.0) == pytest.approx(5.0)
    assert usage.get("nobody", 160.0) == 0.0 and usage.step(None, 160.0) == 0


@pytest.mark.parametrize("hog_seconds, first", [(0.0, "heavy run"), (30.0, "training chunk")])
def test_a_client_that_used_the_workers_lately_waits_behind_the_others(hog_seconds, first):
    """Runs go before training chunks, unless the run's client used the workers a lot lately:
    a few clients sending heavy work in a loop cannot starve the room's training."""
    pool = WorkerPool(0, max_run_seconds=5, memory_mb=100, wait_seconds=10, inline_slots=1)
    pool.usage.add("hog", hog_seconds, time.monotonic())
    busy = pool.submit(tasks.sleep_in, "running", 0.5, client="someone")
    wait_for(lambda: pool.status()["busy"] == 1)
    order = []
    heavy = pool.submit(tasks.add, 1, 1, lane="heavy", client="hog")
    heavy.add_done_callback(lambda _: order.append("heavy run"))
    wait_for(lambda: pool.status()["waiting"] == 1)
    train = pool.submit(tasks.add, 2, 2, lane="train", client="learner")
    train.add_done_callback(lambda _: order.append("training chunk"))
    wait_for(lambda: pool.status()["waiting"] == 2)
    assert (busy.result(5), heavy.result(5), train.result(5)) == (0.5, 2, 4)
    assert order[0] == first and len(order) == 2
    assert pool.usage.get("someone", time.monotonic()) == pytest.approx(0.5, abs=0.2)
    pool.close()


def test_the_workers_for_heavy_work_run_at_a_lower_cpu_priority():
    pool = WorkerPool(3, max_run_seconds=5, memory_mb=400, wait_seconds=20, heavy_nice=7)
    try:
        pool.start()
        wait_for(lambda: all(pool.pids()), seconds=30)
        mine = os.getpriority(os.PRIO_PROCESS, 0)
        niceness = [os.getpriority(os.PRIO_PROCESS, pid) - mine for pid in pool.pids()]
        assert niceness == [7, 0, 0]  # those kept for training and light work: at 0
        # a worker killed and replaced comes back at its priority
        killed = pool.pids()[0]
        os.kill(killed, signal.SIGKILL)
        wait_for(lambda: resident_bytes(killed) == 0)
        with pytest.raises(WorkerLost):  # the task sent to the dead worker says so
            pool.call(tasks.pid, lane="heavy")
        other = pool.submit(tasks.sleep_in, "running", 1.0, lane="heavy")  # the other one busy
        wait_for(lambda: pool.status()["busy"] == 1)
        replaced = pool.call(tasks.pid, lane="heavy")
        assert other.result(10) == 1.0
        assert replaced not in (0, killed) and replaced == pool.pids()[0]
        assert os.getpriority(os.PRIO_PROCESS, replaced) - mine == 7
    finally:
        pool.close()


def test_with_three_workers_heavy_runs_leave_one_for_training_and_one_for_light_work():
    pool = WorkerPool(0, max_run_seconds=5, memory_mb=100, wait_seconds=10, inline_slots=3)
    assert [sorted(slot.lanes) for slot in pool._slots] == [
        ["heavy", "light", "train"],
        ["light", "train"],
        ["light"],
    ]
    heavy = [pool.submit(tasks.sleep_in, "compiling", 0.6, lane="heavy") for _ in range(2)]
    wait_for(lambda: pool.status()["busy"] == 1 and pool.status()["waiting"] == 1)
    started = time.monotonic()
    assert pool.call(tasks.add, 1, 2, lane="train") == 3  # the worker kept for training
    assert pool.call(tasks.add, 3, 4) == 7  # a light run
    assert time.monotonic() - started < 0.5
    assert [future.result(10) for future in heavy] == [0.6, 0.6]  # one after the other
    pool.close()
