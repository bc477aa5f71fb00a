"""A network's dynamics through the API, against a NumPy loop of the update written here."""

from __future__ import annotations

import numpy as np
import pytest
from fastapi.testclient import TestClient
from helpers import build, leaf

TINY = {"input_size": 3, "hidden_size": 5, "output_size": 2, "seed": 1}
X = [[1.0, -1.0, 1.0], [-1.0, -1.0, 1.0], [0.5, 2.0, -1.5]]


def weights(client: TestClient, module: str) -> dict[str, np.ndarray]:
    """The network's arrays, read through the leaf API."""
    paths = {
        "W_in": ".lmap._layers[1][0].W",
        "J": ".lmap._layers[1][1].J",
        "W_fb": ".lmap._layers[1][2].W",
        "W_out": ".lmap._layers[2][1].W",
    }
    return {name: leaf(client, module, path) for name, path in paths.items()}


def numpy_dynamics(w, x, y, steps, phase, activation):
    """The sweep of docs/library.md, by hand: row 1 (hidden) takes the sum of its messages and its
    activation; in train every message (the output slot clamped to y), in inference the
    forward ones only, the output showing what predict reads out (the hidden slot's message
    to it)."""
    s0, s1 = np.asarray(x, np.float64), np.zeros((len(x), w["J"].shape[0]))
    s2 = np.asarray(y, np.float64) if y is not None else np.zeros((len(x), w["W_out"].shape[1]))
    hidden, output, flips = [], [], []
    for _ in range(steps):
        h = s0 @ w["W_in"] + s1 @ w["J"]
        if phase == "train":
            h = h + s2 @ w["W_fb"]
        new = activation(h)
        flips.append(np.mean(np.abs(new - s1) > 1e-6))
        s1 = new
        if phase == "inference":
            s2 = s1 @ w["W_out"]
        hidden.append(s1)
        output.append(s2)
    edges = {
        (1, 0): np.mean(np.abs(s0 @ w["W_in"])),
        (1, 1): np.mean(np.abs(s1 @ w["J"])),
        (1, 2): np.mean(np.abs(s2 @ w["W_fb"])),
        (2, 1): np.mean(np.abs(s1 @ w["W_out"])),
        (2, 2): 0.0,
    }
    return np.array(hidden), np.array(output), np.array(flips), edges


def sign(h):
    return np.where(h >= 0, 1.0, -1.0)


@pytest.mark.parametrize(
    ("hidden_layer", "activation"), [("RecurrentDiscrete", sign), ("RecurrentTanh", np.tanh)]
)
def test_inference_dynamics_match_a_numpy_loop(client, hidden_layer, activation):
    module = build(client, "library.network", {**TINY, "hidden_layer": hidden_layer, "j_d": 0.2})
    w = weights(client, module)
    steps = 6
    response = client.post(
        f"/api/modules/{module}/dynamics",
        json={"input": {"init": "values", "values": X}, "steps": steps, "phase": "inference"},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    hidden, output, flips, edges = numpy_dynamics(w, X, None, steps, "inference", activation)
    states = [np.asarray(s) for s in body["states"]]
    assert [s.shape for s in states] == [(steps, 3, 3), (steps, 3, 5), (steps, 3, 2)]
    np.testing.assert_allclose(states[0], np.broadcast_to(X, (steps, 3, 3)))
    np.testing.assert_allclose(states[1], hidden, atol=1e-5)
    np.testing.assert_allclose(states[2], output, atol=1e-4)
    np.testing.assert_allclose(body["flips"], flips, atol=1e-6)
    assert len(body["flips"]) == steps and body["flips"][0] == 1.0
    for i in range(3):
        for j in range(3):
            if (i, j) in edges:
                assert body["edges"][i][j] == pytest.approx(edges[i, j], rel=1e-4, abs=1e-6)
            else:
                assert body["edges"][i][j] is None
    assert body["plot"]["data"][0]["type"] == "heatmap"
    assert len(body["plots"]["slots"]) == 3


def test_train_dynamics_clamp_the_target_from_a_dataset(client):
    module = build(client, "library.network", {**TINY, "input_size": 2})
    w = weights(client, module)
    steps = 5
    response = client.post(
        f"/api/modules/{module}/dynamics",
        json={
            "input": {"dataset": {"name": "xor", "seed": 2}, "batch": 4},
            "steps": steps,
            "phase": "train",
            "example": 3,
        },
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["clamped_target"] is True and "xor" in body["input"]
    states = [np.asarray(s) for s in body["states"]]
    x, y = states[0][0], states[2][0]
    assert set(np.unique(y)) <= {-1.0, 1.0} and np.all(y.sum(axis=1) == 0)
    hidden, output, flips, edges = numpy_dynamics(w, x, y, steps, "train", sign)
    np.testing.assert_allclose(states[1], hidden, atol=1e-5)
    np.testing.assert_allclose(states[2], output)
    np.testing.assert_allclose(body["flips"], flips, atol=1e-6)
    assert body["edges"][1][2] == pytest.approx(edges[1, 2], rel=1e-4)


def test_the_reference_network_settles_on_prototypes(client):
    module = build(client, "library.network", {})
    too_big = client.post(
        f"/api/modules/{module}/dynamics",
        json={"steps": 500, "input": {"dataset": "prototypes", "batch": 64}},
    )
    assert too_big.status_code == 422 and "250,000" in too_big.json()["message"]
    body = client.post(f"/api/modules/{module}/dynamics", json={"steps": 12}).json()
    assert body["slots"] == [100, 256, 10] and body["batch"] == 8
    assert "prototypes" in body["input"]
    assert body["flips"][0] == 1.0 and body["flips"][-1] < 0.05
    assert np.asarray(body["states"][1]).shape == (12, 8, 256)


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        ({"steps": 0}, 422, "steps"),
        ({"steps": 10_000}, 422, "steps"),
        ({"phase": "sideways"}, 422, "phase"),
        ({"input": {"shape": [2, 4], "init": "ones"}}, 422, "shape (2, 4)"),
        ({"input": {"shape": [300, 3], "init": "ones"}}, 422, "256"),
        ({"input": {"shape": [4, 3], "init": "ones"}, "example": 4}, 422, "example 4"),
        ({"input": {"dataset": "sine", "batch": 2}}, 422, "regression"),
        ({"input": {"dataset": "circle", "batch": 0}}, 422, "batch"),
    ],
)
def test_bad_dynamics_requests_are_4xx(client, body, status, words):
    module = build(client, "library.network", TINY)
    response = client.post(f"/api/modules/{module}/dynamics", json=body)
    assert response.status_code == status, response.text
    assert words in response.json()["message"]


def test_dynamics_need_a_network(client):
    mlp = client.post("/api/modules", json={"kind": "eqx.nn.MLP", "params": {}}).json()["id"]
    response = client.post(f"/api/modules/{mlp}/dynamics", json={})
    assert response.status_code == 422 and "library network" in response.json()["message"]


def test_the_dynamics_panel(client):
    network = build(client, "library.network", TINY)
    panel = client.get(f"/m/{network}/dynamics-panel")
    assert panel.status_code == 200 and 'id="dynamics-form"' in panel.text
    result = client.post(
        f"/m/{network}/dynamics",
        data={"source": "spec", "init": "normal", "shape": "4,3", "steps": "5", "phase": "train"},
    )
    assert result.status_code == 200, result.text
    assert result.text.count('class="plot"') == 5
    mlp = client.post("/api/modules", json={"kind": "eqx.nn.MLP", "params": {}}).json()["id"]
    assert client.get(f"/m/{mlp}/dynamics-panel").text == ""
