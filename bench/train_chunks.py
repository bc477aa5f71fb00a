"""What a training chunk costs to send: the job's plan whole (its first chunk) against by key.

    .venv/bin/python bench/train_chunks.py                 # 20,000 rows, 40 chunks each way
    .venv/bin/python bench/train_chunks.py --rows 2000 --chunks 100

A job of the 2-16-16-1 tanh MLP on ``--rows`` rows of circle (Adam, batches of 32). One real
worker process runs its chunks of one step each (the chunk's own cost is then the smallest),
first carrying the whole plan (as its first chunk does, and as every chunk did before plans
were kept by the workers), then carrying only the plan's key. It prints the pickled size of
each kind of chunk and the median and quickest round trip through the worker.
"""

from __future__ import annotations

import argparse
import pickle
import statistics
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20_000, help="rows of the dataset")
    parser.add_argument("--chunks", type=int, default=40, help="chunks timed each way")
    args = parser.parse_args()

    from app.catalog import CATALOG
    from app.settings import Settings
    from app.training.chunks import PlanParcel, train_chunk
    from app.training.datasets import GeneratedDataset, generate
    from app.training.gradient import GradientPlan, prepare_objective
    from app.workers import WorkerPool

    entry = CATALOG["eqx.nn.MLP"](in_size=2, out_size=1, width_size=16, depth=2, activation="tanh")
    model = entry.build()
    data = generate(GeneratedDataset(name="circle", num_examples=args.rows), Settings())
    plan = GradientPlan(
        model,
        prepare_objective(entry, model, data, "auto"),
        data,
        optimizer_name="adam",
        learning_rate=0.01,
        weight_decay=None,
        steps=10**6,
        batch_size=32,
        seed=0,
    )
    parcel, state = PlanParcel.of(plan), plan.start_state()
    pool = WorkerPool(1, max_run_seconds=120, memory_mb=4000, wait_seconds=60).start()
    try:
        state, _ = pool.call(train_chunk, parcel, state, 5, 10.0, False, False, lane="train")
        print(f"a chunk of one step, {args.rows:,} rows, {args.chunks} chunks each way:")
        for name, sent in (("whole plan", parcel), ("plan's key", parcel.bare())):
            times = []
            for _ in range(args.chunks):
                began = time.perf_counter()
                task = (sent, state, 1, 10.0, False, False)
                state, _ = pool.call(train_chunk, *task, lane="train")
                times.append(time.perf_counter() - began)
            size = len(pickle.dumps(task))
            print(
                f"  {name:10}  {size:>9,} bytes pickled   round trip: median "
                f"{statistics.median(times) * 1e3:.2f} ms, quickest {min(times) * 1e3:.2f} ms"
            )
    finally:
        pool.close()


if __name__ == "__main__":
    main()
