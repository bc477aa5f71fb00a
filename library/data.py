"""Seeded toy datasets.

Every generator is a pure function of its arguments and a PRNG key and returns JAX
arrays. Classification sets in two dimensions return `x` of shape `(N, 2)` float32
and integer labels `y` of shape `(N,)` in `{0, 1}`; the prototype task returns
one-vs-all targets in `{-1, +1}`; the regression set returns `(N, 1)` arrays.
"""

import dataclasses
import functools
import math
from collections.abc import Callable
from typing import Literal

import jax
import jax.numpy as jnp
from jax import Array


def _check_count(num_examples: int, name: str = "num_examples") -> int:
    if isinstance(num_examples, bool) or not isinstance(num_examples, int) or num_examples < 1:
        raise ValueError(f"{name} must be a positive int; got {num_examples!r}")
    return num_examples


def _check_noise(noise: float) -> float:
    if isinstance(noise, int | float) and not noise >= 0:  # traced values are not checked
        raise ValueError(f"noise must be >= 0; got {noise!r}")
    return noise


def _balanced_labels(key: Array, num_examples: int, num_classes: int) -> Array:
    """A shuffled label vector with the classes as balanced as possible."""
    return jax.random.permutation(key, jnp.arange(num_examples) % num_classes)


def make_prototypes(key: Array, num_prototypes: int = 10, dim: int = 100) -> Array:
    """Random prototypes, `(num_prototypes, dim)` float32 in `{-1, +1}`."""
    _check_count(num_prototypes, "num_prototypes")
    _check_count(dim, "dim")
    return jax.random.rademacher(key, (num_prototypes, dim), dtype=jnp.float32)


def prototype_samples(
    key: Array, prototypes: Array, num_examples: int = 1000, flip_prob: float = 0.3
) -> tuple[Array, Array]:
    """Noisy copies of `prototypes`, balanced over the classes and shuffled.

    **Arguments:**

    - `key`: PRNG key.
    - `prototypes`: `(K, D)` in `{-1, +1}`.
    - `num_examples`: `N`.
    - `flip_prob`: probability of flipping each sign, in `[0, 0.5)`.

    **Returns:**

    `(x, y)`: `x` `(N, D)` float32 in `{-1, +1}`; `y` `(N, K)` float32 one-vs-all
    targets, `+1` for the example's prototype and `-1` elsewhere.
    """
    _check_count(num_examples)
    if isinstance(flip_prob, int | float) and not 0 <= flip_prob < 0.5:
        raise ValueError(f"flip_prob must be in [0, 0.5); got {flip_prob!r}")
    return _prototype_samples(key, jnp.asarray(prototypes), num_examples, flip_prob)


@functools.partial(jax.jit, static_argnums=2)
def _prototype_samples(
    key: Array, prototypes: Array, num_examples: int, flip_prob: float
) -> tuple[Array, Array]:
    num_prototypes = prototypes.shape[0]
    label_key, flip_key = jax.random.split(key)
    labels = _balanced_labels(label_key, num_examples, num_prototypes)
    keep = jax.random.bernoulli(flip_key, 1 - flip_prob, (num_examples, prototypes.shape[1]))
    x = prototypes[labels] * jnp.where(keep, 1.0, -1.0)
    return x.astype(jnp.float32), to_one_vs_all(labels, num_prototypes)


def prototype_task(
    key: Array,
    *,
    num_prototypes: int = 10,
    dim: int = 100,
    num_examples: int = 1000,
    flip_prob: float = 0.3,
) -> tuple[Array, Array]:
    """The reference task: `K` prototypes in `{-1, +1}^D`, examples with flipped signs.

    Draws the prototypes with [`make_prototypes`][] from the first half of
    `jax.random.split(key)` and the examples with [`prototype_samples`][] from the
    second. To draw a held-out set from the same prototypes, call those two directly.

    **Returns:**

    `(x, y)`: `x` `(N, D)` float32 in `{-1, +1}`; `y` `(N, K)` float32 one-vs-all.
    """
    proto_key, sample_key = jax.random.split(key)
    prototypes = make_prototypes(proto_key, num_prototypes, dim)
    return prototype_samples(sample_key, prototypes, num_examples, flip_prob)


def circle(key: Array, num_examples: int = 200, noise: float = 0.1) -> tuple[Array, Array]:
    """A disc (class 0, radius < 0.5) inside a ring (class 1, radius 0.7 to 1).

    **Returns:**

    `(x, y)`: `x` `(N, 2)` float32 (plus Gaussian noise of std `noise`), `y` `(N,)`
    int32 in `{0, 1}`.
    """
    _check_count(num_examples)
    _check_noise(noise)
    return _circle(key, num_examples, noise)


@functools.partial(jax.jit, static_argnums=1)
def _circle(key: Array, num_examples: int, noise: float) -> tuple[Array, Array]:
    label_key, radius_key, angle_key, noise_key = jax.random.split(key, 4)
    y = _balanced_labels(label_key, num_examples, 2)
    u = jax.random.uniform(radius_key, (num_examples,))
    radius = jnp.where(y == 0, 0.5 * jnp.sqrt(u), 0.7 + 0.3 * u)
    angle = jax.random.uniform(angle_key, (num_examples,), maxval=2 * math.pi)
    x = jnp.stack([radius * jnp.cos(angle), radius * jnp.sin(angle)], axis=1)
    x = x + noise * jax.random.normal(noise_key, x.shape)
    return x.astype(jnp.float32), y.astype(jnp.int32)


def xor(key: Array, num_examples: int = 200, noise: float = 0.1) -> tuple[Array, Array]:
    """Points in `[-1, 1]^2`; class 1 where the two coordinates share a sign.

    Points within 0.05 of an axis are pushed away from it, so the clean classes are
    separated by a small gap.

    **Returns:**

    `(x, y)`: `x` `(N, 2)` float32 (plus Gaussian noise of std `noise`), `y` `(N,)`
    int32 in `{0, 1}`.
    """
    _check_count(num_examples)
    _check_noise(noise)
    return _xor(key, num_examples, noise)


@functools.partial(jax.jit, static_argnums=1)
def _xor(key: Array, num_examples: int, noise: float) -> tuple[Array, Array]:
    point_key, noise_key = jax.random.split(key)
    x = jax.random.uniform(point_key, (num_examples, 2), minval=-1.0, maxval=1.0)
    x = jnp.where(x >= 0, x + 0.05, x - 0.05) / 1.05
    y = (x[:, 0] * x[:, 1] > 0).astype(jnp.int32)
    x = x + noise * jax.random.normal(noise_key, x.shape)
    return x.astype(jnp.float32), y


def two_gaussians(key: Array, num_examples: int = 200, noise: float = 0.1) -> tuple[Array, Array]:
    """Two Gaussian blobs of std 0.4 centred at `(-0.6, -0.6)` (class 0) and `(0.6, 0.6)`.

    **Returns:**

    `(x, y)`: `x` `(N, 2)` float32 (plus Gaussian noise of std `noise`), `y` `(N,)`
    int32 in `{0, 1}`.
    """
    _check_count(num_examples)
    _check_noise(noise)
    return _two_gaussians(key, num_examples, noise)


@functools.partial(jax.jit, static_argnums=1)
def _two_gaussians(key: Array, num_examples: int, noise: float) -> tuple[Array, Array]:
    label_key, blob_key, noise_key = jax.random.split(key, 3)
    y = _balanced_labels(label_key, num_examples, 2)
    centre = jnp.where(y[:, None] == 1, 0.6, -0.6)
    x = centre + 0.4 * jax.random.normal(blob_key, (num_examples, 2))
    x = x + noise * jax.random.normal(noise_key, x.shape)
    return x.astype(jnp.float32), y.astype(jnp.int32)


def spiral(key: Array, num_examples: int = 200, noise: float = 0.1) -> tuple[Array, Array]:
    """Two interleaved spirals (one and a half turns each), radius up to 1.

    **Returns:**

    `(x, y)`: `x` `(N, 2)` float32 (plus Gaussian noise of std `noise`), `y` `(N,)`
    int32 in `{0, 1}`.
    """
    _check_count(num_examples)
    _check_noise(noise)
    return _spiral(key, num_examples, noise)


@functools.partial(jax.jit, static_argnums=1)
def _spiral(key: Array, num_examples: int, noise: float) -> tuple[Array, Array]:
    label_key, t_key, noise_key = jax.random.split(key, 3)
    y = _balanced_labels(label_key, num_examples, 2)
    t = jax.random.uniform(t_key, (num_examples,), minval=0.05, maxval=1.0)
    angle = 3 * math.pi * t + math.pi * y
    x = jnp.stack([t * jnp.cos(angle), t * jnp.sin(angle)], axis=1)
    x = x + noise * jax.random.normal(noise_key, x.shape)
    return x.astype(jnp.float32), y.astype(jnp.int32)


def sine(key: Array, num_examples: int = 200, noise: float = 0.1) -> tuple[Array, Array]:
    """1-D regression: `y = sin(x) + noise * normal` with `x` uniform in `[-pi, pi]`.

    **Returns:**

    `(x, y)`, both `(N, 1)` float32.
    """
    _check_count(num_examples)
    _check_noise(noise)
    return _sine(key, num_examples, noise)


@functools.partial(jax.jit, static_argnums=1)
def _sine(key: Array, num_examples: int, noise: float) -> tuple[Array, Array]:
    x_key, noise_key = jax.random.split(key)
    x = jax.random.uniform(x_key, (num_examples, 1), minval=-math.pi, maxval=math.pi)
    y = jnp.sin(x) + noise * jax.random.normal(noise_key, x.shape)
    return x.astype(jnp.float32), y.astype(jnp.float32)


def train_test_split(
    key: Array, x: Array, y: Array, test_fraction: float = 0.2
) -> tuple[tuple[Array, Array], tuple[Array, Array]]:
    """Shuffle `(x, y)` and split it.

    **Arguments:**

    - `key`: PRNG key for the shuffle.
    - `x`, `y`: arrays with the same leading size `N`.
    - `test_fraction`: in `(0, 1)`; the test set has `round(N * test_fraction)`
      examples, at least 1 and at most `N - 1`.

    **Returns:**

    `((x_train, y_train), (x_test, y_test))`.

    **Raises:**

    `ValueError` for a fraction outside `(0, 1)`, mismatched lengths or `N < 2`.
    """
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be in (0, 1); got {test_fraction!r}")
    x, y = jnp.asarray(x), jnp.asarray(y)
    if x.ndim == 0 or y.ndim == 0 or x.shape[0] != y.shape[0]:
        raise ValueError(f"x and y need the same leading size; got {x.shape} and {y.shape}")
    n = x.shape[0]
    if n < 2:
        raise ValueError(f"need at least 2 examples to split; got {n}")
    num_test = min(max(round(n * test_fraction), 1), n - 1)
    order = jax.random.permutation(key, n)
    test, train = order[:num_test], order[num_test:]
    return (x[train], y[train]), (x[test], y[test])


def to_one_vs_all(labels: Array, num_classes: int) -> Array:
    """Integer labels `(N,)` to one-vs-all targets `(N, num_classes)` in `{-1, +1}`."""
    return jnp.where(jax.nn.one_hot(labels, num_classes) > 0, 1.0, -1.0).astype(jnp.float32)


@dataclasses.dataclass(frozen=True)
class Dataset:
    """A generator and what the playground needs to know about it.

    Calling it, `dataset(key, num_examples=None, noise=None)`, runs the generator
    with the defaults filled in and returns `(x, y)`.

    **Fields:**

    - `name`: key in [`DATASETS`][].
    - `generate`: `(key, num_examples, noise) -> (x, y)`.
    - `task`: `"classification"` or `"regression"`.
    - `input_dim`: features of `x`.
    - `output_dim`: classes (classification) or targets (regression).
    - `targets`: `"index"` (integer labels `(N,)`), `"one_vs_all"` (`(N, K)` in
      `{-1, +1}`) or `"value"` (`(N, output_dim)` floats).
    - `default_num_examples`, `default_noise`: the defaults used when calling.
    - `noise_meaning`: what `noise` controls.
    - `description`: one line for a user interface.
    """

    name: str
    generate: Callable[[Array, int, float], tuple[Array, Array]]
    task: Literal["classification", "regression"]
    input_dim: int
    output_dim: int
    targets: Literal["index", "one_vs_all", "value"]
    default_num_examples: int
    default_noise: float
    noise_meaning: str
    description: str

    def __call__(
        self, key: Array, num_examples: int | None = None, noise: float | None = None
    ) -> tuple[Array, Array]:
        num_examples = self.default_num_examples if num_examples is None else num_examples
        noise = self.default_noise if noise is None else noise
        return self.generate(key, num_examples, noise)


def _prototypes_generator(key: Array, num_examples: int, noise: float) -> tuple[Array, Array]:
    return prototype_task(key, num_examples=num_examples, flip_prob=noise)


_NOISE_2D = "std of the Gaussian jitter added to the points"


def _two_d(name: str, generate, description: str) -> Dataset:
    return Dataset(
        name=name,
        generate=generate,
        task="classification",
        input_dim=2,
        output_dim=2,
        targets="index",
        default_num_examples=200,
        default_noise=0.1,
        noise_meaning=_NOISE_2D,
        description=description,
    )


DATASETS: dict[str, Dataset] = {
    "prototypes": Dataset(
        name="prototypes",
        generate=_prototypes_generator,
        task="classification",
        input_dim=100,
        output_dim=10,
        targets="one_vs_all",
        default_num_examples=1000,
        default_noise=0.3,
        noise_meaning="probability of flipping each sign",
        description="10 random +-1 prototypes in 100 dimensions, examples with flipped signs",
    ),
    "circle": _two_d("circle", circle, "a disc inside a ring"),
    "xor": _two_d("xor", xor, "class 1 where both coordinates share a sign"),
    "two_gaussians": _two_d("two_gaussians", two_gaussians, "two Gaussian blobs"),
    "spiral": _two_d("spiral", spiral, "two interleaved spirals"),
    "sine": Dataset(
        name="sine",
        generate=sine,
        task="regression",
        input_dim=1,
        output_dim=1,
        targets="value",
        default_num_examples=200,
        default_noise=0.1,
        noise_meaning="std of the Gaussian noise added to the targets",
        description="y = sin(x) plus noise",
    ),
}
"""Every dataset by name, with its metadata (see [`Dataset`][])."""
