"""What a job's plan (``GradientPlan``, ``LocalPlan``) shares: its state at the start, and
the driver of a chunk (:meth:`ChunkedPlan.advance`, what :func:`app.training.chunks.train_chunk`
calls in a worker).

A plan says how to take one step (``one_step``), what to record before its first step and
after its last (``begin``, ``end``) and what else its state holds (``start_extra``); the
driver rebuilds the model and the optimiser state, runs the steps until the chunk's steps or
seconds are spent, and gives back the state with the chunk's report.
"""

from __future__ import annotations

from typing import Any

import equinox as eqx
import jax
import numpy as np

from app.training.chunks import ChunkClock, ChunkReport, array_leaves, model_from_leaves
from app.training.optimizers import init_optimizer, optimizer_state
from app.training.speed import StepCost, measure_speed


def plan_cost(plan: Any, leaves: list[np.ndarray]) -> StepCost | None:
    """What one step of ``plan`` costs, as a worker's task (tracing happens in workers): the
    model rebuilt from the plan's spec and ``leaves``, its flops by ``plan.flops()`` (None
    when the compiler does not say), the arrays a step passes (the model's and the optimiser
    state's) and this worker's measured speed."""
    plan.model = model_from_leaves(plan.entry, leaves)
    flops = plan.flops()
    if flops is None:
        return None
    _, opt_state = init_optimizer(
        plan.optimizer_name, plan.model, plan.learning_rate, plan.weight_decay
    )
    arrays = len(jax.tree.leaves(eqx.filter((plan.model, opt_state), eqx.is_array)))
    return StepCost(*flops, arrays=arrays, speed=measure_speed())


class ChunkedPlan:
    """The base of a plan: its subclasses set ``model`` (in the web process), ``entry``,
    ``total``, ``seed``, ``optimizer_name``, ``learning_rate``, ``weight_decay`` and
    ``cost_key``, and implement the hooks below."""

    model: Any
    entry: Any
    total: int
    seed: int
    optimizer_name: str
    learning_rate: float
    weight_decay: float | None

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["model"] = None  # a job's arrays travel in its state; the worker rebuilds it
        state.pop("_order", None)
        return state

    unit = "steps"
    """What a job counts (library networks: batches)."""
    length_field = "steps"
    """The request's field that sets a job's length."""

    @property
    def cost_key(self) -> tuple:
        raise NotImplementedError

    def advice(self, fits: int) -> str:
        """What to change, for a job over a budget that ``fits`` steps would meet."""
        if fits <= 0:
            return "Use a smaller batch, dataset or module"
        return f"Use at most {fits:,} {self.unit}, a smaller batch or a smaller module"

    def start_extra(self) -> dict:
        """What the plan keeps in a job's state beyond the step, arrays and RNG."""
        return {}

    def begin(self, clock: ChunkClock, model: Any, state: dict) -> None:
        """Before a chunk's steps (``state`` may be the job's start)."""

    def one_step(
        self, clock: ChunkClock, model: Any, opt: Any, opt_state: Any, state: dict, single: bool
    ) -> tuple[Any, Any]:
        """One step: ``(model, opt_state)`` after it; updates ``state`` (its ``step`` too) and
        appends to ``clock.report.records`` when the step records."""
        raise NotImplementedError

    def end(self, clock: ChunkClock, model: Any, state: dict) -> None:
        """The job ends (all its steps, or stopped): record what is not recorded yet."""

    def view(self, model: Any) -> dict | None:
        raise NotImplementedError

    def new_epoch(self, state: dict, rows: int) -> None:
        """A new pass over the ``rows`` training rows in a new order, drawn from the job's RNG.
        The state keeps where the RNG was before the draw (a few bytes), not the order (8
        bytes a row, sent with every chunk); :meth:`order` draws it again when needed."""
        state["epoch_rng"] = state["rng"].bit_generator.state
        self._order = (state["epoch_rng"], state["rng"].permutation(rows))

    def order(self, state: dict, rows: int) -> np.ndarray:
        """The epoch's order of the training rows (kept for the last epoch asked)."""
        kept = self.__dict__.get("_order")
        if kept is None or kept[0] != state["epoch_rng"]:
            rng = np.random.Generator(type(state["rng"].bit_generator)())
            rng.bit_generator.state = state["epoch_rng"]
            kept = self._order = (state["epoch_rng"], rng.permutation(rows))
        return kept[1]

    def flops(self) -> tuple[float, float] | None:
        """``(one step, one evaluation on every row)`` by the compiler's cost analysis."""
        raise NotImplementedError

    def start_state(self) -> dict:
        """A job's state before its first step (in the web process; plain data and NumPy)."""
        return {
            "step": 0,
            "params": array_leaves(self.model),
            "opt": None,
            "rng": np.random.default_rng(self.seed),
            **self.start_extra(),
        }

    def advance(
        self, state: dict, steps: int, seconds: float, view: bool, single: bool
    ) -> tuple[dict, ChunkReport]:
        """One chunk (see :func:`app.training.chunks.train_chunk`): the same steps, batches
        and records as one uninterrupted run, whatever the chunks' sizes."""
        report = ChunkReport()
        clock = ChunkClock(self.cost_key, report)
        state = dict(state)
        model = model_from_leaves(self.entry, state["params"])
        opt, opt_state = optimizer_state(
            self.optimizer_name,
            self.entry,
            model,
            self.learning_rate,
            self.weight_decay,
            state["opt"],
        )
        self.begin(clock, model, state)
        for _ in range(max(0, min(steps, self.total - state["step"]))):
            model, opt_state = self.one_step(clock, model, opt, opt_state, state, single)
            report.steps += 1
            if clock.elapsed() >= seconds:
                break
        final = steps == 0 or state["step"] >= self.total
        if final:
            self.end(clock, model, state)
        if view or single or final:
            report.view = clock.timed("view", self.view, model)
        state.update(params=array_leaves(model), opt=array_leaves(opt_state))
        return state, clock.done()
