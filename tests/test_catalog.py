"""The catalog: defaults, validation, estimates, forms, schemas, custom modules, exported code."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import annotated_types
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pydantic
import pytest
from helpers import SeedLinear

import library
from app.catalog import (
    CATALOG,
    CatalogEntry,
    StackEntry,
    UnknownKind,
    describe_catalog,
    params_from_form,
    parse_spec,
)
from library.modules import Linear as LibraryLinear

REPO = Path(__file__).resolve().parent.parent

CUSTOM_EVERYTHING = {
    "name": "Everything",
    "seed": 3,
    "fields": [
        {"name": "w", "role": "param", "shape": "3,2", "init": "normal"},
        {"name": "n", "role": "static", "value": 2},
        {"name": "u", "role": "param", "shape": [2], "init": "uniform"},
        {"name": "scale", "role": "buffer", "shape": "()", "init": "constant", "value": 0.5},
        {"name": "z", "role": "buffer", "shape": [2], "init": "zeros"},
        {"name": "o", "role": "param", "shape": [2], "init": "ones"},
        {"name": "eps", "role": "static", "value": 0.125},
    ],
    "call": "tanh(w @ x) ** n * scale + sum(u * o + z) + eps",
}

# Most variants keep the default sizes and change everything else: eager JAX compiles once per
# shape, so shared shapes keep this file fast. The defaults already have unequal sizes, and the
# variants that test size arithmetic (MLP depths, attention sizes, LayerNorm) change shapes.
VARIANTS: list[tuple[str, dict[str, Any]]] = [
    *[(kind, {}) for kind in CATALOG],
    ("library.Linear", {"in_dim": 3, "out_dim": 2, "seed": 42}),
    (
        "library.RecurrentDiscrete",
        {"j_d": -0.25, "threshold": 1.5, "strength": 2.0, "seed": 3},
    ),
    ("library.RecurrentTanh", {"strength": 0.5, "seed": 9}),
    ("library.Ferromagnetic", {"features": 6, "strength": -0.75}),
    ("library.FullyConnected", {"strength": 0.7, "threshold": 1.0, "seed": 11}),
    ("library.FrozenFullyConnected", {"strength": 1.25, "seed": 1}),
    (
        "library.network",
        {
            "hidden_layer": "RecurrentTanh",
            "j_d": 0.1,
            "hidden_threshold": 0.25,
            "hidden_strength": 0.8,
            "input_strength": 1.5,
            "input_threshold": 2.0,
            "feedback_strength": 0.2,
            "feedback_threshold": 0.5,
            "output_strength": 0.9,
            "output_threshold": 1.0,
            "steps": 3,
            "seed": 7,
        },
    ),
    ("eqx.nn.Linear", {"use_bias": False, "seed": 5}),
    (
        "eqx.nn.MLP",
        {
            "depth": 3,
            "activation": "tanh",
            "final_activation": "sigmoid",
            "use_bias": False,
            "seed": 2,
        },
    ),
    ("eqx.nn.MLP", {"depth": 0, "use_final_bias": False}),
    ("eqx.nn.MLP", {"depth": 1, "activation": "identity", "use_bias": False}),
    (
        "eqx.nn.Conv1d",
        {"stride": 2, "padding": 1, "use_bias": False, "seed": 4},
    ),
    ("eqx.nn.Conv2d", {"padding": "SAME", "seed": 8}),
    ("eqx.nn.GRUCell", {"use_bias": False, "seed": 6}),
    ("eqx.nn.LSTMCell", {"seed": 12}),
    ("eqx.nn.LayerNorm", {"shape": "2,3", "eps": 1e-3, "use_weight": False}),
    ("eqx.nn.Embedding", {"seed": 13}),
    (
        "eqx.nn.MultiheadAttention",
        {
            "num_heads": 3,
            "query_size": 6,
            "output_size": 5,
            "qk_size": 2,
            "vo_size": 4,
            "use_query_bias": True,
            "use_key_bias": True,
            "use_value_bias": True,
            "use_output_bias": True,
            "seed": 21,
        },
    ),
    (
        "stack",
        {
            "seed": 17,
            "rows": [
                {
                    "kind": "eqx.nn.Linear",
                    "params": {"in_features": 2, "out_features": 16},
                    "activation": "gelu",
                },
                {"kind": "eqx.nn.LayerNorm", "params": {"shape": [16]}},
                {
                    "kind": "eqx.nn.Linear",
                    "params": {"in_features": 16, "out_features": 1, "use_bias": False},
                    "activation": "tanh",
                },
            ],
        },
    ),
    (
        "stack",
        {
            "rows": [
                {"kind": "eqx.nn.MLP", "params": {"activation": "tanh"}, "activation": "softplus"},
                {"kind": "eqx.nn.LayerNorm", "params": {"shape": "1", "use_bias": False}},
            ]
        },
    ),
    ("custom", CUSTOM_EVERYTHING),
    ("custom", {"name": "Act", "fields": [], "call": "relu(x) - 0.5 * x"}),
]

VARIANT_IDS = [f"{kind}-{index}" for index, (kind, _) in enumerate(VARIANTS)]


def default_variant(kind: str) -> str:
    """The id of ``kind``'s default variant (the defaults come first, in catalog order)."""
    return f"{kind}-{list(CATALOG).index(kind)}"


def array_leaves(tree: Any) -> list[np.ndarray]:
    return [np.asarray(leaf) for leaf in jax.tree_util.tree_leaves(tree) if eqx.is_array(leaf)]


def same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


DRIVER = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import equinox as eqx
    import jax

    jobs = json.load(open(sys.argv[1]))
    saved = {}
    for job in jobs:
        namespace = {"__name__": "__main__"}
        exec(compile(job["code"], job["id"], "exec"), namespace)
        trees = {"model": namespace["model"]}
        if "state" in namespace:
            trees["state"] = namespace["state"]
        for name, tree in trees.items():
            leaves = [leaf for leaf in jax.tree_util.tree_leaves(tree) if eqx.is_array(leaf)]
            saved[f"{job['id']}|{name}|count"] = np.asarray(len(leaves))
            for index, leaf in enumerate(leaves):
                saved[f"{job['id']}|{name}|{index}"] = np.asarray(leaf)
    np.savez(sys.argv[2], **saved)
    """
)


@pytest.fixture(scope="module")
def built() -> dict[str, tuple[CatalogEntry, Any]]:
    """Every variant, validated and built once."""
    result = {}
    for variant_id, (kind, params) in zip(VARIANT_IDS, VARIANTS, strict=True):
        entry = parse_spec(kind, params)
        result[variant_id] = (entry, entry.build())
    return result


@pytest.fixture(scope="module")
def export_run(built, tmp_path_factory):
    """The exported code of every variant, run in one fresh interpreter: ``(directory of
    leaves.npz, process)``. It starts after ``built``, so the XLA compilations of the same
    initialisations come from the persistent compilation cache (see conftest.py)."""
    directory = tmp_path_factory.mktemp("export")
    jobs = [
        {"id": variant_id, "code": parse_spec(kind, params).code()}
        for variant_id, (kind, params) in zip(VARIANT_IDS, VARIANTS, strict=True)
    ]
    for job in jobs:
        compile(job["code"], job["id"], "exec")  # a syntax error names its variant here
    (directory / "jobs.json").write_text(json.dumps(jobs))
    process = subprocess.Popen(
        [sys.executable, "-c", DRIVER, str(directory / "jobs.json"), str(directory / "leaves.npz")],
        cwd=directory,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    yield directory, process
    if process.poll() is None:
        process.kill()
        process.communicate()


# --- the registry --------------------------------------------------------------------------------


def test_catalog_holds_every_kind_with_the_seed_first():
    kinds = list(CATALOG)
    assert kinds[0] == "library.Linear"
    expected = {
        "library.Linear",
        "library.RecurrentDiscrete",
        "library.RecurrentTanh",
        "library.Ferromagnetic",
        "library.FullyConnected",
        "library.FrozenFullyConnected",
        "library.OutputLayer",
        "library.network",
        "eqx.nn.Linear",
        "eqx.nn.MLP",
        "eqx.nn.Conv1d",
        "eqx.nn.Conv2d",
        "eqx.nn.GRUCell",
        "eqx.nn.LSTMCell",
        "eqx.nn.LayerNorm",
        "eqx.nn.Embedding",
        "eqx.nn.MultiheadAttention",
        "stack",
        "custom",
    }
    assert set(kinds) == expected
    for kind, entry in CATALOG.items():
        assert entry.kind == kind
        assert entry.title and entry.summary.endswith(".")
        assert entry.group in {"Seed", "Library", "Equinox", "Compose"}
        assert entry.model_config["extra"] == "forbid"


def test_unknown_kind_is_a_value_error():
    with pytest.raises(UnknownKind, match="unknown kind 'eqx.nn.Nope'") as caught:
        parse_spec("eqx.nn.Nope", {})
    assert isinstance(caught.value, ValueError)
    with pytest.raises(UnknownKind):
        params_from_form("os.system", {})
    with pytest.raises(UnknownKind):
        parse_spec(["not", "hashable"], {})  # type: ignore[arg-type]


def test_describe_catalog_lists_kind_title_and_schema():
    described = describe_catalog()
    assert [item["kind"] for item in described] == list(CATALOG)
    assert described[0]["schema"]["properties"]["in_dim"]["default"] == 2


# --- defaults ------------------------------------------------------------------------------------


def test_library_linear_default_is_the_seeds_example():
    entry = parse_spec("library.Linear", {})
    assert (entry.in_dim, entry.out_dim, entry.seed) == (2, 3, 0)
    model = entry.build()
    assert type(model) is LibraryLinear
    seed_model = SeedLinear(2, 3, jax.random.PRNGKey(0))
    for ours, theirs in zip(array_leaves(model), array_leaves(seed_model), strict=True):
        assert same_bits(ours, theirs)
    assert entry.example_input_shape() == (5, 2)
    x = entry.example_input()
    assert same_bits(np.asarray(entry.apply(model, x)), np.asarray(seed_model(x)))
    assert entry.batched_input


def test_network_default_is_the_reference_network(built):
    entry, model = built[default_variant("library.network")]
    assert entry == parse_spec("library.network", {})
    lmap = model.lmap
    assert lmap.rows() == (1, 2)
    assert lmap.cols_of(1) == (0, 1, 2) and lmap.cols_of(2) == (1, 2)
    expected_types = {
        (1, 0): library.FullyConnected,
        (1, 1): library.RecurrentDiscrete,
        (1, 2): library.FrozenFullyConnected,
        (2, 1): library.FullyConnected,
        (2, 2): library.OutputLayer,
    }
    for (i, j), module_type in expected_types.items():
        assert type(lmap[i, j]) is module_type
    assert lmap[1, 0].W.shape == (100, 256)
    assert lmap[1, 2].W.shape == (10, 256)
    assert lmap[2, 1].W.shape == (256, 10)
    np.testing.assert_array_equal(lmap[1, 0].strength, 1.0)
    np.testing.assert_array_equal(lmap[1, 0].threshold, 3.5)
    np.testing.assert_array_equal(lmap[1, 2].strength, np.float32(0.3))
    np.testing.assert_array_equal(lmap[1, 2].threshold, 0.0)
    np.testing.assert_array_equal(lmap[2, 1].threshold, 3.5)
    hidden = lmap[1, 1]
    np.testing.assert_array_equal(np.diag(hidden.J), 0.5)
    np.testing.assert_array_equal(hidden.threshold, 0.5)
    np.testing.assert_array_equal(hidden.strength, 1.0)

    # The documented key order: input edge, hidden layer, feedback edge, output edge.
    k_input, k_hidden, k_feedback, k_output = jax.random.split(jax.random.PRNGKey(0), 4)
    reference = library.SequentialOrchestrator(
        {
            1: {
                0: library.FullyConnected(100, 256, 1.0, 3.5, k_input),
                1: library.RecurrentDiscrete(256, 0.5, 0.5, k_hidden),
                2: library.FrozenFullyConnected(10, 256, 0.3, 0.0, k_feedback),
            },
            2: {1: library.FullyConnected(256, 10, 1.0, 3.5, k_output), 2: library.OutputLayer()},
        }
    )
    assert jax.tree_util.tree_structure(model) == jax.tree_util.tree_structure(reference)
    for ours, theirs in zip(array_leaves(model), array_leaves(reference), strict=True):
        assert same_bits(ours, theirs)

    state = entry.state()
    assert isinstance(state, library.SequentialState)
    assert [buffer.shape for buffer in state.states] == [(1, 100), (1, 256), (1, 10)]
    assert entry.example_input_shape() == (5, 100)


def test_network_apply_runs_the_documented_dynamics(built):
    entry, model = next(
        pair for pair in built.values() if pair[0].kind == "library.network" and pair[0].steps == 3
    )
    x = jnp.sign(jax.random.normal(jax.random.PRNGKey(1), (4, entry.input_size)))

    def dynamics(model, x):
        state, rng = entry.state().init(x), jax.random.PRNGKey(0)
        for _ in range(entry.steps):
            state, rng = model.step_inference(state, rng)
        return model.predict(state, rng)[0].readout

    expected = jax.jit(dynamics)(model, x)
    np.testing.assert_allclose(jax.jit(entry.apply)(model, x), expected, rtol=1e-6, atol=1e-6)
    # One example runs as a batch of one, so vmap over examples works.
    per_example = jax.jit(jax.vmap(entry.apply, in_axes=(None, 0)))(model, x)
    np.testing.assert_allclose(per_example, expected, rtol=1e-6, atol=1e-6)
    assert jax.eval_shape(entry.apply, model, x[0]).shape == (entry.output_size,)


def test_equinox_defaults_take_one_example():
    assert parse_spec("eqx.nn.Linear", {}).example_input_shape() == (3,)
    assert parse_spec("eqx.nn.MLP", {}).example_input_shape() == (2,)
    assert parse_spec("eqx.nn.Conv2d", {}).example_input_shape() == (1, 16, 16)
    assert parse_spec("eqx.nn.MultiheadAttention", {}).example_input_shape() == (4, 8)
    assert parse_spec("stack", {}).example_input_shape() == (2,)
    for kind in CATALOG:
        if kind.startswith("eqx."):
            assert not CATALOG[kind].batched_input
        if kind.startswith("library."):
            assert CATALOG[kind].batched_input


def test_embedding_takes_integer_indices():
    entry = parse_spec("eqx.nn.Embedding", {"num_embeddings": 5, "embedding_size": 2})
    model = entry.build()
    x = entry.example_input()
    assert x.shape == () and x.dtype == jnp.int32 and entry.input_dtype == "int32"
    np.testing.assert_array_equal(entry.apply(model, x), model.weight[1])
    np.testing.assert_array_equal(entry.apply(model, jnp.float32(3.0)), model.weight[3])


def test_recurrent_cells_start_from_zero_state(built):
    gru, model = built[default_variant("eqx.nn.GRUCell")]
    x = gru.example_input()
    expected = jax.jit(lambda model, x: model(x, jnp.zeros(4)))(model, x)
    np.testing.assert_array_equal(jax.jit(gru.apply)(model, x), expected)
    lstm, model = built[default_variant("eqx.nn.LSTMCell")]
    expected = jax.jit(lambda model, x: model(x, (jnp.zeros(4), jnp.zeros(4)))[0])(model, x)
    np.testing.assert_array_equal(jax.jit(lstm.apply)(model, x), expected)


# --- every variant: estimates, apply_code, round trip --------------------------------------------


@pytest.mark.parametrize("variant_id", VARIANT_IDS)
def test_estimates_equal_the_built_module(built, variant_id):
    entry, model = built[variant_id]
    leaves = array_leaves(model)
    assert [tuple(leaf.shape) for leaf in leaves] == list(entry.array_shapes())
    assert entry.estimated_parameters() == sum(leaf.size for leaf in leaves)
    assert entry.estimated_leaves() == len(leaves)
    assert entry.largest_array_elements() == max((leaf.size for leaf in leaves), default=0)


@pytest.mark.parametrize("variant_id", VARIANT_IDS)
def test_apply_code_agrees_with_apply(built, variant_id):
    entry, model = built[variant_id]
    x = entry.example_input()
    assert x.shape == entry.example_input_shape()
    expected = entry.apply(model, x)
    source = entry.apply_code("model", "x")
    assert "\n" not in source
    # Our own generated code, evaluated in the test only.
    namespace = {"model": model, "x": x, "jax": jax, "jnp": jnp, "eqx": eqx, "library": library}
    got = eval(source, namespace)  # noqa: S307
    assert same_bits(np.asarray(got), np.asarray(expected))
    renamed = entry.apply_code("m", "inputs")
    assert "model" not in renamed.replace("m.", "")


@pytest.mark.parametrize("variant_id", VARIANT_IDS)
def test_params_round_trip_through_json(built, variant_id):
    entry, _ = built[variant_id]
    dumped = json.loads(json.dumps(entry.model_dump(mode="json")))
    again = parse_spec(entry.kind, dumped)
    assert again.model_dump(mode="json") == dumped
    assert again.code() == entry.code()


def test_mlp_of_ten_thousand_leaves_is_allowed_and_priced_without_building():
    entry = parse_spec("eqx.nn.MLP", {"in_size": 8, "out_size": 8, "width_size": 8, "depth": 5000})
    assert entry.estimated_leaves() == 10_002
    assert entry.estimated_parameters() == 5001 * (8 * 8 + 8)
    assert entry.largest_array_elements() == 64
    huge = parse_spec("eqx.nn.MLP", {"width_size": 4096, "depth": 10_000})
    assert huge.estimated_parameters() > 10**11  # the server refuses it before allocating


def test_stack_estimates_sum_their_rows():
    entry = parse_spec(
        "stack",
        {
            "rows": [
                {"kind": "eqx.nn.MLP", "params": {"in_size": 2, "out_size": 3, "depth": 4000}},
                {"kind": "eqx.nn.Linear", "params": {"in_features": 3, "out_features": 1}},
            ]
        },
    )
    assert entry.estimated_leaves() == 4000 * 2 + 2 + 2
    assert entry.largest_array_elements() == 16 * 16


# --- bounds and validation -----------------------------------------------------------------------


def _numeric_fields(model: type[pydantic.BaseModel]):
    for name, info in model.model_fields.items():
        annotation = info.annotation
        args = getattr(annotation, "__args__", ())
        if annotation in (int, float) or (int in args or float in args):
            yield name, info


def _bounds(info) -> tuple[float | None, float | None]:
    low = high = None
    for item in info.metadata:
        if isinstance(item, annotated_types.Ge | annotated_types.Gt):
            low = getattr(item, "ge", getattr(item, "gt", None))
        if isinstance(item, annotated_types.Le | annotated_types.Lt):
            high = getattr(item, "le", getattr(item, "lt", None))
    return low, high


@pytest.mark.parametrize("kind", list(CATALOG))
def test_every_number_is_bounded_and_out_of_bounds_names_the_field(kind):
    entry = CATALOG[kind]
    for name, info in _numeric_fields(entry):
        if kind == "custom" and name != "seed":
            continue
        low, high = _bounds(info)
        if name == "padding":  # validated by its own function: 0..64, SAME or VALID
            low, high = 0, 64
        assert low is not None and high is not None, f"{kind}.{name} needs bounds"
        assert high <= 2**31 - 1
        for bad in (high + 1, low - 1):
            with pytest.raises(pydantic.ValidationError) as caught:
                parse_spec(kind, {name: bad})
            assert caught.value.errors()[0]["loc"] == (name,)


def test_sizes_are_capped_at_4096_and_seeds_at_int32():
    for kind, params, field in [
        ("library.Linear", {"in_dim": 4097}, "in_dim"),
        ("eqx.nn.MLP", {"depth": 10_001}, "depth"),
        ("eqx.nn.Linear", {"seed": 2**31}, "seed"),
        ("eqx.nn.Linear", {"seed": -1}, "seed"),
        ("library.network", {"hidden_size": 0}, "hidden_size"),
        ("library.network", {"j_d": float("nan")}, "j_d"),
        ("library.RecurrentDiscrete", {"strength": 1e9}, "strength"),
        ("eqx.nn.Conv2d", {"padding": "FULL"}, "padding"),
        ("eqx.nn.LayerNorm", {"eps": 0}, "eps"),
        ("eqx.nn.LayerNorm", {"shape": "2,-3"}, "shape"),
        ("eqx.nn.MLP", {"activation": "swish"}, "activation"),
        ("eqx.nn.Linear", {"in_features": "three"}, "in_features"),
        ("eqx.nn.Linear", {"bias": True}, "bias"),
    ]:
        with pytest.raises(pydantic.ValidationError) as caught:
            parse_spec(kind, params)
        assert caught.value.errors()[0]["loc"][0] == field, (kind, params)


def test_attention_heads_must_fit_the_query_size():
    with pytest.raises(pydantic.ValidationError) as caught:
        parse_spec("eqx.nn.MultiheadAttention", {"num_heads": 4, "query_size": 2})
    error = caught.value.errors()[0]
    assert error["loc"] == ("num_heads",) and "query size of at least 4" in error["msg"]
    parse_spec(
        "eqx.nn.MultiheadAttention", {"num_heads": 4, "query_size": 2, "qk_size": 1, "vo_size": 1}
    )


def test_stack_rows_must_fit_and_the_error_names_the_row():
    params = {
        "rows": [
            {"kind": "eqx.nn.Linear", "params": {"in_features": 2, "out_features": 8}},
            {"kind": "eqx.nn.LayerNorm", "params": {"shape": 8}},
            {"kind": "eqx.nn.MLP", "params": {"in_size": 4, "out_size": 1}},
        ]
    }
    with pytest.raises(pydantic.ValidationError) as caught:
        parse_spec("stack", params)
    error = caught.value.errors()[0]
    assert error["loc"] == ("rows", 2, "params", "in_size")
    assert error["msg"] == "row 3 takes inputs of size 4, but row 2 gives outputs of size 8"

    params["rows"][1]["params"] = {"shape": [8]}
    params["rows"][2]["params"]["in_size"] = 8
    assert isinstance(parse_spec("stack", params), StackEntry)


def test_stack_rows_reject_a_seed_an_unknown_kind_and_no_rows():
    cases = [
        (
            {"rows": [{"kind": "eqx.nn.Linear", "params": {"seed": 1}}]},
            ("rows", 0, "params", "seed"),
        ),
        ({"rows": [{"kind": "eqx.nn.Conv2d"}]}, ("rows", 0, "kind")),
        ({"rows": [{"kind": "eqx.nn.Linear", "activation": "cube"}]}, ("rows", 0, "activation")),
        ({"rows": [{"kind": "eqx.nn.LayerNorm", "params": {"shape": "2,2"}}]}, None),
        ({"rows": []}, ("rows",)),
    ]
    for params, loc in cases:
        with pytest.raises(pydantic.ValidationError) as caught:
            parse_spec("stack", params)
        errors = caught.value.errors()
        assert len(errors) == 1, errors
        if loc is not None:
            assert errors[0]["loc"] == loc


def test_stack_builds_sequential_with_lambda_activations_and_split_keys():
    entry = parse_spec(
        "stack",
        {
            "seed": 4,
            "rows": [
                {
                    "kind": "eqx.nn.Linear",
                    "params": {"in_features": 2, "out_features": 3},
                    "activation": "relu",
                },
                {"kind": "eqx.nn.Linear", "params": {"in_features": 3, "out_features": 1}},
            ],
        },
    )
    model = entry.build()
    assert isinstance(model, eqx.nn.Sequential) and len(model.layers) == 3
    assert isinstance(model.layers[1], eqx.nn.Lambda) and model.layers[1].fn is jax.nn.relu
    keys = jax.random.split(jax.random.PRNGKey(4), 2)
    first = eqx.nn.Linear(2, 3, key=keys[0])
    last = eqx.nn.Linear(3, 1, key=keys[1])
    assert same_bits(np.asarray(model.layers[0].weight), np.asarray(first.weight))
    assert same_bits(np.asarray(model.layers[2].weight), np.asarray(last.weight))
    x = jnp.arange(2.0)
    np.testing.assert_array_equal(model(x), last(jax.nn.relu(first(x))))


# --- custom modules ------------------------------------------------------------------------------


def test_custom_linear_is_the_seeds_linear_to_the_last_bit():
    entry = parse_spec(
        "custom",
        {
            "name": "Linear",
            "seed": 0,
            "fields": [
                {"name": "weight", "role": "param", "shape": [2, 3], "init": "normal"},
                {"name": "bias", "role": "param", "shape": "3", "init": "normal"},
            ],
            "call": "x @ weight + bias",
        },
    )
    model = entry.build()
    assert type(model).__name__ == "Linear" and isinstance(model, eqx.Module)
    for reference in (
        LibraryLinear(2, 3, jax.random.PRNGKey(0)),
        SeedLinear(2, 3, jax.random.PRNGKey(0)),
    ):
        for ours, theirs in zip(array_leaves(model), array_leaves(reference), strict=True):
            assert same_bits(ours, theirs)
        x = jnp.ones((5, 2))
        assert same_bits(np.asarray(model(x)), np.asarray(reference(x)))
    assert entry.example_input_shape() == (5, 2)
    assert parse_spec("custom", {}).model_dump() == entry.model_dump()  # the default


def test_custom_class_has_roles_buffers_and_static_fields():
    entry = parse_spec("custom", CUSTOM_EVERYTHING)
    model = entry.build()
    cls = type(model)
    assert cls.__name__ == "Everything"
    assert cls.buffer_fields == ("scale", "z")
    assert model.n == 2 and model.eps == 0.125
    leaves, treedef = jax.tree_util.tree_flatten(model)
    assert len(leaves) == 5 and all(eqx.is_array(leaf) for leaf in leaves)  # statics: treedef
    trained = library.trainable_filter(model)
    assert trained.w and trained.u and trained.o and not trained.scale and not trained.z
    assert model.scale.dtype == jnp.float32 and not model.scale.weak_type
    np.testing.assert_array_equal(model.scale, 0.5)
    keys = jax.random.split(jax.random.PRNGKey(3), 5)
    assert same_bits(np.asarray(model.w), np.asarray(jax.random.normal(keys[0], (3, 2))))
    assert same_bits(np.asarray(model.u), np.asarray(jax.random.uniform(keys[1], (2,))))
    x = jnp.array([0.5, -1.0])
    expected = jnp.tanh(model.w @ x) ** 2 * 0.5 + jnp.sum(model.u) + 0.125
    np.testing.assert_allclose(entry.apply(model, x), expected, rtol=1e-6)
    assert entry.example_input_shape() == (2,)


def test_custom_call_runs_under_a_named_scope():
    entry = parse_spec("custom", {"name": "Scoped"})
    model = entry.build()
    text = jax.jit(entry.apply).lower(model, jnp.ones((5, 2))).as_text(debug_info=True)
    assert "Scoped" in text


def test_generated_classes_are_cached_by_structure():
    first = parse_spec("custom", CUSTOM_EVERYTHING).build()
    second = parse_spec("custom", json.loads(json.dumps(CUSTOM_EVERYTHING))).build()
    assert type(first) is type(second)
    structure = jax.tree_util.tree_structure
    assert structure(first) == structure(second)
    reseeded = parse_spec("custom", {**CUSTOM_EVERYTHING, "seed": 99}).build()
    assert structure(reseeded) == structure(first)  # another seed compiles nothing

    fields = [dict(field) for field in CUSTOM_EVERYTHING["fields"]]
    fields[1]["value"] = 3
    restatic = parse_spec("custom", {**CUSTOM_EVERYTHING, "fields": fields}).build()
    assert type(restatic) is type(first) and structure(restatic) != structure(first)

    fields[1]["value"] = 2.0  # a float where there was an int: another class
    assert type(parse_spec("custom", {**CUSTOM_EVERYTHING, "fields": fields}).build()) is not type(
        first
    )
    recall = parse_spec("custom", {**CUSTOM_EVERYTHING, "call": "sum(u) + w"}).build()
    assert type(recall) is not type(first) and structure(recall) != structure(first)
    # Equivalent spellings share the canonical expression, hence the class.
    spelled = parse_spec(
        "custom",
        {**CUSTOM_EVERYTHING, "call": CUSTOM_EVERYTHING["call"].replace("tanh", "jnp.tanh")},
    ).build()
    assert type(spelled) is type(first)


@pytest.mark.parametrize(
    ("fields", "call", "loc", "message"),
    [
        (
            [{"name": "w", "shape": [2]}, {"name": "w", "shape": [2]}],
            "x",
            ("fields", 1, "name"),
            "used twice",
        ),
        ([{"name": "x", "shape": [2]}], "x", ("fields", 0, "name"), "taken"),
        ([{"name": "lambda", "shape": [2]}], "x", ("fields", 0, "name"), "keyword"),
        ([{"name": "__class__", "shape": [2]}], "x", ("fields", 0, "name"), "'_'"),
        ([{"name": "wé", "shape": [2]}], "x", ("fields", 0, "name"), "ASCII"),
        ([{"name": "exp", "shape": [2]}], "x", ("fields", 0, "name"), "jnp.exp"),
        ([{"name": "w"}], "x", ("fields", 0, "shape"), "needs a shape"),
        ([{"name": "w", "shape": "2,x"}], "x", ("fields", 0, "shape"), "positive integers"),
        ([{"name": "w", "shape": [2, 0]}], "x", ("fields", 0, "shape", 1), "greater than"),
        ([{"name": "w", "shape": [2, 5000]}], "x", ("fields", 0, "shape", 1), "less than"),
        ([{"name": "w", "shape": [2], "init": "xavier"}], "x", ("fields", 0, "init"), "normal"),
        ([{"name": "w", "shape": [2], "init": "constant"}], "x", ("fields", 0, "value"), "value"),
        ([{"name": "n", "role": "static"}], "x", ("fields", 0, "value"), "needs a value"),
        (
            [{"name": "n", "role": "static", "value": 1, "shape": [2]}],
            "x",
            ("fields", 0, "shape"),
            "empty",
        ),
        ([{"name": "n", "role": "static", "value": "inf"}], "x", ("fields", 0, "value"), "finite"),
        (
            [{"name": "n", "role": "static", "value": 10**12}],
            "x",
            ("fields", 0, "value"),
            "at most",
        ),
        ([{"name": "w", "role": "weight", "shape": [2]}], "x", ("fields", 0, "role"), "param"),
        ([{"name": "w", "shape": [2], "extra": 1}], "x", ("fields", 0, "extra"), "Extra"),
        ([{"name": "w", "shape": [2]}], "x @ v", ("call",), "unknown name 'v'"),
        ([{"name": "w", "shape": [2]}], "w.__class__", ("call",), ""),
        ([{"name": "w", "shape": [2]}], "", ("call",), ""),
    ],
)
def test_custom_errors_name_the_field(fields, call, loc, message):
    with pytest.raises(pydantic.ValidationError) as caught:
        parse_spec("custom", {"name": "M", "fields": fields, "call": call})
    error = caught.value.errors()[0]
    assert error["loc"] == loc
    assert message in error["msg"]


@pytest.mark.parametrize(
    "name", ["class", "_Private", "__init__", "2Fast", "Módulo", "jax", "print", ""]
)
def test_custom_class_name_must_be_a_plain_public_identifier(name):
    with pytest.raises(pydantic.ValidationError) as caught:
        parse_spec("custom", {"name": name})
    assert caught.value.errors()[0]["loc"] == ("name",)


def test_custom_ignores_what_a_role_does_not_use():
    entry = parse_spec(
        "custom",
        {
            "name": "M",
            "fields": [
                {"name": "n", "role": "static", "init": "normal", "value": "3"},
                {"name": "w", "shape": "2", "init": "zeros", "value": "1.5"},
                {"name": "v", "shape": "(2, 2)"},
            ],
            "call": "x * n + w",
        },
    )
    assert entry.fields[0].init is None and entry.fields[0].value == 3
    assert entry.fields[1].value is None
    assert entry.fields[2].init == "normal" and entry.fields[2].shape == (2, 2)


# --- forms ---------------------------------------------------------------------------------------


def test_params_from_form_flat():
    form = {"in_dim": "4", "out_dim": "", "seed": " 7 ", "kind": "library.Linear", "csrf": "t"}
    params = params_from_form("library.Linear", form)
    assert params == {"in_dim": "4", "seed": "7"}
    entry = parse_spec("library.Linear", params)
    assert (entry.in_dim, entry.out_dim, entry.seed) == (4, 3, 7)


def test_params_from_form_checkboxes_use_the_last_value():
    unchecked = [("in_features", "3"), ("use_bias", "false")]
    checked = [("in_features", "3"), ("use_bias", "false"), ("use_bias", "on")]
    assert (
        parse_spec("eqx.nn.Linear", params_from_form("eqx.nn.Linear", unchecked)).use_bias is False
    )
    assert parse_spec("eqx.nn.Linear", params_from_form("eqx.nn.Linear", checked)).use_bias is True


def test_params_from_form_nested_rows_close_gaps():
    form = [
        ("seed", "5"),
        ("rows.0.kind", "eqx.nn.Linear"),
        ("rows.0.params.in_features", "2"),
        ("rows.0.params.out_features", "4"),
        ("rows.0.activation", "tanh"),
        ("rows.3.kind", "eqx.nn.LayerNorm"),
        ("rows.3.params.shape", "4"),
        ("rows.10.kind", "eqx.nn.Linear"),
        ("rows.10.params.in_features", "4"),
        ("rows.10.params.out_features", "1"),
        ("rows.10.params.use_bias", "false"),
    ]
    params = params_from_form("stack", form)
    assert [row["kind"] for row in params["rows"]] == [
        "eqx.nn.Linear",
        "eqx.nn.LayerNorm",
        "eqx.nn.Linear",
    ]
    entry = parse_spec("stack", params)
    assert entry.rows[1].params.shape == (4,)
    assert entry.rows[2].params.use_bias is False
    assert entry.seed == 5


def test_params_from_form_custom_fields():
    form = {
        "name": "Affine",
        "seed": "1",
        "fields.0.name": "weight",
        "fields.0.role": "param",
        "fields.0.shape": "2,3",
        "fields.0.init": "normal",
        "fields.0.value": "",
        "fields.1.name": "shift",
        "fields.1.role": "buffer",
        "fields.1.shape": "3",
        "fields.1.init": "constant",
        "fields.1.value": "0.25",
        "fields.2.name": "p",
        "fields.2.role": "static",
        "fields.2.shape": "",
        "fields.2.init": "normal",
        "fields.2.value": "2",
        "call": "(x @ weight) ** p + shift",
    }
    entry = parse_spec("custom", params_from_form("custom", form))
    assert [field.shape for field in entry.fields] == [(2, 3), (3,), None]
    assert entry.fields[2].value == 2 and isinstance(entry.fields[2].value, int)
    model = entry.build()
    np.testing.assert_array_equal(model.shift, 0.25)
    bad = dict(form, **{"fields.1.shape": "3;4"})
    with pytest.raises(pydantic.ValidationError) as caught:
        parse_spec("custom", params_from_form("custom", bad))
    assert caught.value.errors()[0]["loc"] == ("fields", 1, "shape")


# --- JSON schema ---------------------------------------------------------------------------------


def _properties(schema: dict[str, Any]):
    for name, prop in schema.get("properties", {}).items():
        yield schema.get("title", "?"), name, prop
    for definition in schema.get("$defs", {}).values():
        yield from _properties(definition)


@pytest.mark.parametrize("kind", list(CATALOG))
def test_json_schema_titles_and_describes_every_field(kind):
    schema = CATALOG[kind].model_json_schema()
    assert schema["additionalProperties"] is False
    count = 0
    for model_title, name, prop in _properties(schema):
        count += 1
        assert prop.get("title"), f"{model_title}.{name} has no title"
        assert prop.get("description"), f"{model_title}.{name} has no description"
    assert count == len(CATALOG[kind].model_fields) or "$defs" in schema


def test_json_schema_carries_bounds_and_widget_hints():
    schema = CATALOG["eqx.nn.MLP"].model_json_schema()["properties"]
    assert schema["depth"]["maximum"] == 10_000 and schema["depth"]["minimum"] == 0
    assert schema["width_size"]["maximum"] == 4096
    assert schema["activation"]["enum"][:2] == ["relu", "tanh"]
    assert schema["activation"]["widget"] == "select"
    assert schema["seed"]["widget"] == "seed" and schema["seed"]["maximum"] == 2**31 - 1
    custom = CATALOG["custom"].model_json_schema()
    assert custom["properties"]["fields"]["widget"] == "fields"
    assert custom["$defs"]["CustomField"]["properties"]["shape"]["widget"] == "shape"


# --- exported code -------------------------------------------------------------------------------


@pytest.mark.slow  # end to end: exported code run in a fresh interpreter
def test_exported_code_rebuilds_every_kind_bit_for_bit(built, export_run):
    directory, process = export_run
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 0, stderr[-3000:]
    saved = np.load(directory / "leaves.npz")
    for variant_id, (entry, model) in built.items():
        trees = {"model": model}
        if entry.kind == "library.network":
            trees["state"] = entry.state()
        for name, tree in trees.items():
            ours = array_leaves(tree)
            assert int(saved[f"{variant_id}|{name}|count"]) == len(ours), variant_id
            for index, leaf in enumerate(ours):
                theirs = saved[f"{variant_id}|{name}|{index}"]
                assert same_bits(leaf, theirs), f"{variant_id}: {name} leaf {index} differs"


def test_exported_code_is_clean_python(built, tmp_path):
    ruff = shutil.which("ruff") or str(Path(sys.executable).with_name("ruff"))
    if not Path(ruff).exists():
        pytest.skip("ruff is not installed")
    for index, (entry, _) in enumerate(built.values()):
        (tmp_path / f"export_{index}.py").write_text(entry.code())
    result = subprocess.run(
        [ruff, "check", "--no-cache", "--isolated", "--select", "E9,F", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout[-3000:]


def test_exported_custom_code_is_a_real_class():
    code = parse_spec("custom", CUSTOM_EVERYTHING).code()
    assert "class Everything(eqx.Module):" in code
    assert "    w: jax.Array  # param" in code
    assert "    n: int = eqx.field(static=True)" in code
    assert "    eps: float = eqx.field(static=True)" in code
    assert '    buffer_fields: ClassVar[tuple[str, ...]] = ("scale", "z")' in code
    assert 'with jax.named_scope("Everything"):' in code
    assert "keys = jax.random.split(jax.random.PRNGKey(3), 5)" in code
    namespace: dict[str, Any] = {}
    exec(code, namespace)  # noqa: S102 - our own generated code, in the test only
    exported = namespace["model"]
    ours = parse_spec("custom", CUSTOM_EVERYTHING).build()
    x = jnp.array([0.25, -2.0])
    assert same_bits(np.asarray(exported(x)), np.asarray(ours(x)))


def test_exported_seed_linear_matches_the_seeds_snippet():
    code = parse_spec("library.Linear", {}).code()
    assert code == (
        "import jax\nfrom library.modules import Linear\n\n"
        "model = Linear(2, 3, jax.random.PRNGKey(0))\n"
    )
