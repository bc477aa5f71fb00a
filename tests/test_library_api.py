"""The public names of docs/library.md import from their modules and from `library`."""

import equinox as eqx

import library

LIBRARY_IMPORTS = """
from library.states import State, SequentialState
from library.modules import (AbstractModule, Layer, Adapter, Linear,
    RecurrentDiscrete, Ferromagnetic, FullyConnected, FrozenFullyConnected,
    OutputLayer)
from library.layermaps import LayerMap
from library.orchestrators import SequentialOrchestrator
from library.rules import perceptron_rule
"""

EXTRA = ["RecurrentTanh", "trainable_filter", "data", "training"]


def test_library_md_imports_and_reexports():
    namespace: dict = {}
    exec(LIBRARY_IMPORTS, namespace)
    names = [name for name in namespace if not name.startswith("__")]
    assert len(names) == 14
    for name in names:
        assert getattr(library, name) is namespace[name], name
        assert name in library.__all__
        if name != "perceptron_rule":
            assert issubclass(namespace[name], eqx.Module), name
    for name in EXTRA:
        assert name in library.__all__ and hasattr(library, name)
    assert sorted(library.__all__) == library.__all__
    for name in library.__all__:
        exec(f"from library import {name}", {})


def test_training_and_data_api():
    from library import data, training

    for name in ("prototype_task", "circle", "xor", "two_gaussians", "spiral", "sine"):
        assert callable(getattr(data, name)), name
    for name in ("train_test_split", "make_prototypes", "prototype_samples", "to_one_vs_all"):
        assert callable(getattr(data, name)), name
    for name in (
        "train_step",
        "eval_step",
        "infer",
        "run_dynamics",
        "train_orchestrator",
        "evaluate",
        "gradient_step",
        "make_gradient_step",
        "train_model",
        "init_opt_state",
        "infer_state",
    ):
        assert callable(getattr(training, name)), name
    assert training.STEPS_TRAIN == 10 and training.STEPS_INFERENCE == 10
