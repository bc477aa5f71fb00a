"""SequentialOrchestrator: every method against NumPy, purity, transformations, errors."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from library import (
    Ferromagnetic,
    FrozenFullyConnected,
    FullyConnected,
    LayerMap,
    OutputLayer,
    RecurrentDiscrete,
    RecurrentTanh,
    SequentialOrchestrator,
    SequentialState,
)

D, H, K, B = 6, 5, 3, 4


def build():
    """Slots 0 (input, 6), 1 (binary, 5), 2 (tanh, 5), 3 (output, 3)."""
    k = jax.random.split(jax.random.key(11), 6)
    lm = LayerMap.from_dict(
        {
            1: {
                0: FullyConnected(D, H, 1.0, 1.5, k[0]),
                1: RecurrentDiscrete(H, 0.5, 0.25, k[1]),
                2: Ferromagnetic(H, 0.7),
            },
            2: {
                1: FullyConnected(H, H, 2.0, 0.5, k[2]),
                2: RecurrentTanh(H, 0.2, 0.1, k[3]),
                3: FrozenFullyConnected(K, H, 0.3, 0.0, k[4]),
            },
            3: {2: FullyConnected(H, K, 1.0, 2.0, k[5]), 3: OutputLayer()},
        }
    )
    return SequentialOrchestrator(lm)


def start_state():
    k = jax.random.split(jax.random.key(5), 4)
    x = jax.random.rademacher(k[0], (B, D), dtype=jnp.float32)
    y = jax.random.rademacher(k[1], (B, K), dtype=jnp.float32)
    state = SequentialState([D, H, H, K]).init(x, y)
    state = state.replace_val(1, jax.random.rademacher(k[2], (B, H), dtype=jnp.float32))
    return state.replace_val(2, jnp.tanh(jax.random.normal(k[3], (B, H))))


def arrays(orch, state):
    """Everything as float64 NumPy arrays."""
    lm = orch.lmap
    p = {
        "A": lm[1, 0].W, "J1": lm[1, 1].J, "g": lm[1, 2].strength, "C": lm[2, 1].W,
        "J2": lm[2, 2].J, "E": lm[2, 3].W, "F": lm[3, 2].W,
    }  # fmt: skip
    p = {name: np.asarray(a, np.float64) for name, a in p.items()}
    s = [np.asarray(b, np.float64) for b in state.states]
    return p, s


def sign(h):
    return np.where(h >= 0, 1.0, -1.0)


def np_perceptron(x, y, y_hat, margin):
    n, d = x.shape
    mistake = (y * y_hat <= margin).astype(np.float64)
    return -(x.T @ (mistake * y)) / (np.sqrt(n) * np.sqrt(d))


def close(a, b):
    np.testing.assert_allclose(np.asarray(a, np.float64), b, rtol=1e-5, atol=1e-5)


def test_step_all_messages_sequential_rows():
    orch, state = build(), start_state()
    p, (x, s1, s2, s3) = arrays(orch, state)
    new, _ = orch.step(state, jax.random.key(0))
    s1_new = sign(x @ p["A"] + s1 @ p["J1"] + s2 * p["g"])
    # Row 2 already sees row 1's new value.
    s2_new = np.tanh(s1_new @ p["C"] + s2 @ p["J2"] + s3 @ p["E"])
    close(new[1], s1_new)
    close(new[2], s2_new)
    close(new[0], x)
    close(new[3], s3)  # the output row is skipped
    # Functional: the old state is unchanged.
    close(state[1], s1)


def test_step_inference_uses_forward_messages_only():
    orch, state = build(), start_state()
    p, (x, s1, s2, s3) = arrays(orch, state)
    new, _ = orch.step_inference(state, jax.random.key(0))
    s1_new = sign(x @ p["A"] + s1 @ p["J1"])
    close(new[1], s1_new)
    close(new[2], np.tanh(s1_new @ p["C"] + s2 @ p["J2"]))
    close(new[3], s3)
    same, _ = orch.step(state, jax.random.key(0), filter_messages="forward")
    for a, b in zip(new.states, same.states, strict=True):
        np.testing.assert_array_equal(a, b)


def test_step_backward_filter_and_output_row():
    orch, state = build(), start_state()
    p, (x, s1, s2, s3) = arrays(orch, state)
    new, _ = orch.step(state, jax.random.key(0), filter_messages="backward")
    close(new[1], sign(s1 @ p["J1"] + s2 * p["g"]))
    close(new[2], np.tanh(s2 @ p["J2"] + s3 @ p["E"]))
    full, _ = orch.step(state, jax.random.key(0), skip_output_state=False)
    close(full[3], np.asarray(full[2], np.float64) @ p["F"])


def test_predict_updates_the_output_only():
    orch, state = build(), start_state()
    p, (x, s1, s2, s3) = arrays(orch, state)
    new, _ = orch.predict(state, jax.random.key(0))
    close(new[3], s2 @ p["F"])
    close(new[1], s1)
    close(new[2], s2)


def test_backward_against_numpy():
    orch, state = build(), start_state()
    p, (x, s1, s2, s3) = arrays(orch, state)
    updates = orch.backward(state, jax.random.key(0))
    assert isinstance(updates, SequentialOrchestrator)
    assert jax.tree.structure(updates) == jax.tree.structure(orch)
    h1 = x @ p["A"] + s1 @ p["J1"]  # forward only: no message from slot 2
    h2 = s1 @ p["C"] + s2 @ p["J2"]
    h3 = s2 @ p["F"]
    thr = lambda i, j: np.asarray(orch.lmap[i, j].threshold, np.float64)  # noqa: E731
    lm = updates.lmap
    close(lm[1, 0].W, np_perceptron(x, s1, h1, thr(1, 0)))
    expected_j1 = np_perceptron(s1, s1, h1, thr(1, 1))
    np.fill_diagonal(expected_j1, 0)
    close(lm[1, 1].J, expected_j1)
    close(lm[2, 1].W, np_perceptron(s1, s2, h2, thr(2, 1)))
    expected_j2 = np_perceptron(s2, s2, h2, thr(2, 2))
    np.fill_diagonal(expected_j2, 0)
    close(lm[2, 2].J, expected_j2)
    close(lm[3, 2].W, np_perceptron(s2, s3, h3, thr(3, 2)))
    for frozen in (lm[1, 2].strength, lm[2, 3].W, lm[1, 0].threshold, lm[1, 1].J_D):
        np.testing.assert_array_equal(frozen, 0)
    # With all messages, the fields include the backward edges.
    all_msgs = orch.backward(state, jax.random.key(0), filter_messages="all")
    h1_all = h1 + s2 * p["g"]
    close(all_msgs.lmap[1, 0].W, np_perceptron(x, s1, h1_all, thr(1, 0)))
    # Functional: the orchestrator still holds its parameters.
    close(orch.lmap[1, 0].W, p["A"])


def test_backward_feeds_optax():
    orch, state = build(), start_state()
    updates = orch.backward(state, jax.random.key(0))
    optimiser = optax.sgd(0.1)
    params = eqx.filter(orch, eqx.is_inexact_array)
    opt_state = optimiser.init(params)
    steps, _ = optimiser.update(eqx.filter(updates, eqx.is_inexact_array), opt_state, params)
    new = eqx.apply_updates(orch, steps)
    close(new.lmap[3, 2].W, np.asarray(orch.lmap[3, 2].W) - 0.1 * np.asarray(updates.lmap[3, 2].W))
    np.testing.assert_array_equal(new.lmap[2, 3].W, orch.lmap[2, 3].W)


def test_rng_is_threaded_and_optional():
    orch, state = build(), start_state()
    key = jax.random.key(0)
    _, k1 = orch.step(state, key)
    _, k2 = orch.step(state, key)
    _, k3 = orch.step_inference(state, k1)
    _, k4 = orch.predict(state, k3)
    assert jnp.array_equal(jax.random.key_data(k1), jax.random.key_data(k2))
    datas = [jax.random.key_data(k) for k in (key, k1, k3, k4)]
    assert len({bytes(np.asarray(d)) for d in datas}) == 4
    new, none = orch.step(state, None)
    assert none is None
    with_key, _ = orch.step(state, key)
    np.testing.assert_array_equal(new[2], with_key[2])


def test_jit_matches_eager_and_compiles_once():
    orch, state = build(), start_state()
    traces = []

    @eqx.filter_jit
    def run(orch, state, key):
        traces.append(1)
        state, key = orch.step(state, key)
        state, key = orch.step_inference(state, key)
        return orch.predict(state, key)

    eager, _ = orch.predict(*orch.step_inference(*orch.step(state, jax.random.key(1))))
    jitted, _ = run(orch, state, jax.random.key(1))
    for a, b in zip(eager.states, jitted.states, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    other = jax.tree.map(lambda a: a * 1.01, orch)
    run(other, state, jax.random.key(2))
    assert len(traces) == 1
    updates = eqx.filter_jit(lambda o, s: o.backward(s, jax.random.key(0)))(orch, state)
    close(updates.lmap[1, 0].W, np.asarray(orch.backward(state, None).lmap[1, 0].W))


def test_grad_through_the_dynamics():
    orch, state = build(), start_state()
    p, (x, s1, s2, s3) = arrays(orch, state)

    def loss(o):
        new, _ = o.step(state, None)
        return jnp.sum(new[2])

    grads = eqx.filter_grad(loss)(orch)
    assert isinstance(grads, SequentialOrchestrator)
    s1_new = sign(x @ p["A"] + s1 @ p["J1"] + s2 * p["g"])
    s2_new = np.tanh(s1_new @ p["C"] + s2 @ p["J2"] + s3 @ p["E"])
    close(grads.lmap[2, 1].W, s1_new.T @ (1 - s2_new**2))
    close(grads.lmap[2, 3].W, s3.T @ (1 - s2_new**2))
    # The binary slot has zero derivative: nothing flows to row 1's parameters.
    np.testing.assert_array_equal(grads.lmap[1, 0].W, 0)
    out_grads = eqx.filter_grad(lambda o: jnp.sum(o.predict(state, None)[0].readout))(orch)
    close(out_grads.lmap[3, 2].W, s2.T @ np.ones((B, K)))


def test_vmap_over_inputs_and_over_orchestrators():
    orch, state = build(), start_state()
    xs = jax.random.rademacher(jax.random.key(3), (3, B, D), dtype=jnp.float32)

    def run(o, x):
        s = state.init(x)
        s, _ = o.step_inference(s, None)
        return o.predict(s, None)[0].readout

    batched = jax.vmap(lambda x: run(orch, x))(xs)
    for i in range(3):
        np.testing.assert_allclose(batched[i], run(orch, xs[i]), rtol=1e-5, atol=1e-6)
    scales = jnp.array([0.5, 1.0, 2.0])
    stack = jax.vmap(lambda c: jax.tree.map(lambda a: a * c, orch))(scales)
    per_model = eqx.filter_vmap(lambda o: run(o, xs[0]))(stack)
    scaled = jax.tree.map(lambda a: a * 2.0, orch)
    np.testing.assert_allclose(per_model[2], run(scaled, xs[0]), rtol=1e-5, atol=1e-6)


def test_orchestrator_is_a_pytree_with_static_keys():
    a, b = build(), build()
    assert jax.tree.structure(a) == jax.tree.structure(b)
    assert len(jax.tree.leaves(a)) == len(jax.tree.leaves(a.lmap))
    with pytest.raises(AttributeError):
        a.lmap = b.lmap


def test_construction_errors_and_dict_input():
    k = jax.random.key(0)
    orch = SequentialOrchestrator({1: {0: FullyConnected(2, 2, 1.0, 0.0, k), 1: OutputLayer()}})
    assert isinstance(orch.lmap, LayerMap)
    with pytest.raises(TypeError):
        SequentialOrchestrator("not a map")
    no_diag = LayerMap.from_dict(
        {1: {0: FullyConnected(2, 2, 1.0, 0.0, k)}}, require_diagonal=False
    )
    with pytest.raises(ValueError, match=r"\(1, 1\)"):
        SequentialOrchestrator(no_diag)
    adapter_diag = LayerMap.from_dict({1: {1: Ferromagnetic(2, 1.0)}})
    with pytest.raises(TypeError, match="Layer"):
        SequentialOrchestrator(adapter_diag)


def test_state_too_short_and_bad_filter():
    orch = build()
    short = SequentialState([D, H, H])
    for call in (
        lambda: orch.step(short, None),
        lambda: orch.predict(short, None),
        lambda: orch.backward(short, None),
    ):
        with pytest.raises(ValueError, match="3 slots"):
            call()
    with pytest.raises(ValueError, match="sideways"):
        orch.step(start_state(), None, filter_messages="sideways")


def test_named_scopes_in_hlo():
    orch, state = build(), start_state()
    lowered = jax.jit(lambda s: orch.step(s, None)[0].states).lower(state)
    text = lowered.as_text(debug_info=True)
    for name in ("SequentialOrchestrator.step", "RecurrentDiscrete", "FullyConnected"):
        assert name in text
