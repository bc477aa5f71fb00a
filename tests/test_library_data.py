"""library.data: shapes, values, determinism, geometry and the registry."""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from library import data

KEY = jax.random.key(42)
TWO_D = [data.circle, data.xor, data.two_gaussians, data.spiral]
N = 101  # one size throughout, so each generator compiles once


def test_prototype_task_shapes_and_values():
    x, y = data.prototype_task(KEY)
    assert x.shape == (1000, 100) and y.shape == (1000, 10)
    assert x.dtype == jnp.float32 and y.dtype == jnp.float32
    assert set(np.unique(np.asarray(x))) == {-1.0, 1.0}
    y = np.asarray(y)
    assert set(np.unique(y)) == {-1.0, 1.0}
    np.testing.assert_array_equal((y == 1).sum(axis=1), 1)
    np.testing.assert_array_equal((y == 1).sum(axis=0), 100)  # balanced classes


def test_prototype_flip_probability_and_prototypes():
    proto_key, sample_key = jax.random.split(KEY)
    x, y = data.prototype_task(KEY, num_prototypes=4, dim=50, num_examples=2000, flip_prob=0.2)
    protos = np.asarray(data.make_prototypes(proto_key, 4, 50))
    x2, y2 = data.prototype_samples(sample_key, jnp.asarray(protos), 2000, 0.2)
    np.testing.assert_array_equal(x, x2)
    np.testing.assert_array_equal(y, y2)
    labels = np.argmax(np.asarray(y), axis=1)
    flipped = np.asarray(x) != protos[labels]
    assert abs(flipped.mean() - 0.2) < 0.01  # 100k Bernoulli(0.2) draws
    no_noise, labels_clean = data.prototype_task(KEY, num_examples=50, flip_prob=0.0)
    protos = np.asarray(data.make_prototypes(proto_key))
    np.testing.assert_array_equal(no_noise, protos[np.argmax(np.asarray(labels_clean), axis=1)])


def test_prototype_errors():
    with pytest.raises(ValueError, match="flip_prob"):
        data.prototype_task(KEY, flip_prob=0.5)
    with pytest.raises(ValueError, match="num_examples"):
        data.prototype_task(KEY, num_examples=0)
    with pytest.raises(ValueError, match="dim"):
        data.prototype_task(KEY, dim=-3)


@pytest.mark.parametrize("fn", TWO_D)
def test_two_d_sets(fn):
    x, y = fn(KEY, num_examples=N, noise=0.1)
    assert x.shape == (N, 2) and x.dtype == jnp.float32
    assert y.shape == (N,) and jnp.issubdtype(y.dtype, jnp.integer)
    assert set(np.unique(np.asarray(y))) == {0, 1}
    assert 0.3 < float(np.mean(np.asarray(y))) < 0.7
    # Pure: same key, same data; another key, other data.
    x2, y2 = fn(KEY, num_examples=N, noise=0.1)
    np.testing.assert_array_equal(x, x2)
    np.testing.assert_array_equal(y, y2)
    x3, _ = fn(jax.random.key(1), num_examples=N, noise=0.1)
    assert not np.array_equal(np.asarray(x), np.asarray(x3))
    # Traceable: the same numbers under jit.
    jitted = jax.jit(functools.partial(fn, num_examples=N))
    xj, yj = jitted(KEY, noise=0.1)
    np.testing.assert_allclose(xj, x, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(yj, y)
    with pytest.raises(ValueError, match="noise"):
        fn(KEY, num_examples=10, noise=-1.0)
    with pytest.raises(ValueError, match="num_examples"):
        fn(KEY, num_examples=0)


def test_noise_moves_points_only():
    for fn in TWO_D:
        clean, y_clean = fn(KEY, num_examples=N, noise=0.0)
        noisy, y_noisy = fn(KEY, num_examples=N, noise=0.5)
        np.testing.assert_array_equal(y_clean, y_noisy)
        spread = float(np.std(np.asarray(noisy) - np.asarray(clean)))
        assert 0.4 < spread < 0.6  # 202 normal draws of std 0.5


def test_geometry_without_noise():
    x, y = (np.asarray(a) for a in data.circle(KEY, N, 0.0))
    r = np.linalg.norm(x, axis=1)
    assert r[y == 0].max() <= 0.5 + 1e-6 and r[y == 1].min() >= 0.7 - 1e-6
    x, y = (np.asarray(a) for a in data.xor(KEY, N, 0.0))
    np.testing.assert_array_equal(y, (x[:, 0] * x[:, 1] > 0).astype(int))
    assert np.abs(x).max() <= 1.0 + 1e-6 and np.abs(x).min() >= 0.04
    x, y = (np.asarray(a) for a in data.two_gaussians(KEY, N, 0.0))
    # About 50 draws of std 0.4 per class: the means are within 0.2 (3.5 sigma).
    np.testing.assert_allclose(x[y == 1].mean(0), [0.6, 0.6], atol=0.2)
    np.testing.assert_allclose(x[y == 0].mean(0), [-0.6, -0.6], atol=0.2)
    assert 0.3 < x[y == 1].std() < 0.5
    x, y = (np.asarray(a) for a in data.spiral(KEY, N, 0.0))
    t = np.linalg.norm(x, axis=1)
    angle = np.arctan2(x[:, 1], x[:, 0])
    expected = 3 * np.pi * t + np.pi * y
    np.testing.assert_allclose(np.cos(angle), np.cos(expected), atol=1e-4)


def test_sine():
    x, y = data.sine(KEY, 64, 0.0)
    assert x.shape == (64, 1) and y.shape == (64, 1) and y.dtype == jnp.float32
    np.testing.assert_allclose(y, np.sin(np.asarray(x)), atol=1e-6)
    assert np.abs(np.asarray(x)).max() <= np.pi
    _, y_noisy = data.sine(KEY, 2000, 0.3)
    x_big, _ = data.sine(KEY, 2000, 0.0)
    assert abs(float(np.std(np.asarray(y_noisy) - np.sin(np.asarray(x_big)))) - 0.3) < 0.03


def test_train_test_split():
    x = jnp.arange(20.0).reshape(10, 2)
    y = jnp.arange(10)
    (xtr, ytr), (xte, yte) = data.train_test_split(KEY, x, y, 0.3)
    assert xtr.shape == (7, 2) and xte.shape == (3, 2) and ytr.shape == (7,) and yte.shape == (3,)
    assert sorted(np.concatenate([ytr, yte]).tolist()) == list(range(10))
    np.testing.assert_array_equal(np.asarray(xtr)[:, 0], np.asarray(ytr) * 2.0)  # pairs kept
    again = data.train_test_split(KEY, x, y, 0.3)
    np.testing.assert_array_equal(again[1][1], yte)
    (_, small_y), (_, tiny) = data.train_test_split(KEY, x, y, 0.01)
    assert tiny.shape == (1,) and small_y.shape == (9,)
    for bad in (0.0, 1.0, -0.5):
        with pytest.raises(ValueError, match="test_fraction"):
            data.train_test_split(KEY, x, y, bad)
    with pytest.raises(ValueError, match=r"\(10, 2\).*\(9,\)"):
        data.train_test_split(KEY, x, y[:9], 0.5)
    with pytest.raises(ValueError, match="2"):
        data.train_test_split(KEY, x[:1], y[:1], 0.5)


def test_to_one_vs_all():
    out = data.to_one_vs_all(jnp.array([0, 2, 1]), 3)
    np.testing.assert_array_equal(out, [[1, -1, -1], [-1, -1, 1], [-1, 1, -1]])


def test_registry():
    assert set(data.DATASETS) == {"prototypes", "circle", "xor", "two_gaussians", "spiral", "sine"}
    for name, spec in data.DATASETS.items():
        assert spec.name == name
        assert spec.task in ("classification", "regression")
        x, y = spec(KEY, num_examples=N)
        assert x.shape == (N, spec.input_dim)
        if spec.targets == "index":
            assert y.shape == (N,) and int(np.max(np.asarray(y))) < spec.output_dim
        else:
            assert y.shape == (N, spec.output_dim)
        assert spec.default_num_examples > 0 and spec.default_noise >= 0
        with pytest.raises(dataclasses.FrozenInstanceError):
            spec.task = "other"
    assert data.DATASETS["sine"].task == "regression"
    assert data.DATASETS["prototypes"].targets == "one_vs_all"
    x_clean, _ = data.DATASETS["circle"](KEY, N, 0.0)
    np.testing.assert_array_equal(x_clean, data.circle(KEY, N, 0.0)[0])
    default_x, _ = data.DATASETS["sine"](KEY)
    assert default_x.shape == (data.DATASETS["sine"].default_num_examples, 1)
