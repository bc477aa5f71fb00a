"""The Python code of a run, pasted after the module's exported code, gives the API's numbers.

Every case runs in one fresh interpreter (a subprocess), as a learner's notebook would.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent

CASES = [
    ("library.Linear", {"in_dim": 2, "out_dim": 3}, {"transforms": ["grad"]}),
    (
        "eqx.nn.MLP",
        {"in_size": 3, "out_size": 2, "width_size": 8, "depth": 2, "activation": "tanh"},
        {
            "transforms": ["grad", "vmap", "jit"],
            "input": {"shape": [4, 3], "init": "normal", "seed": 1},
        },
    ),  # fmt: skip
    (
        "custom",
        {
            "name": "Scaled",
            "seed": 2,
            "fields": [
                {"name": "weight", "role": "param", "shape": [2, 3], "init": "normal"},
                {"name": "scale", "role": "buffer", "shape": [3], "init": "uniform"},
                {"name": "k", "role": "static", "value": 0.5},
            ],
            "call": "k * tanh(x @ weight) * scale",
        },
        {
            "transforms": ["value_and_grad"],
            "loss": "sum((out - x[:, :1]) ** 2)",
            "input": {"shape": [5, 2], "init": "linspace", "start": -2, "stop": 2},
        },
    ),
    (
        "eqx.nn.Linear",
        {"in_features": 3, "out_features": 2, "seed": 4},
        {
            "function": "forward",
            "transforms": ["jacrev"],
            "wrt": "input",
            "input": {"init": "uniform", "seed": 5, "start": -1, "stop": 1},
        },
    ),  # fmt: skip
    (
        "eqx.nn.Linear",
        {"in_features": 2, "out_features": 2},
        {
            "transforms": ["grad", "jit"],
            "batched": True,
            "loss": "mean((out - 1) ** 2)",
            "input": {"init": "values", "values": "1 2; 3 -4; 0.5 nan"},
        },
    ),  # fmt: skip
    (
        "eqx.nn.Embedding",
        {"num_embeddings": 6, "embedding_size": 3},
        {
            "function": "forward",
            "transforms": ["vmap"],
            "input": {"shape": [4], "init": "uniform", "seed": 3, "start": 0, "stop": 6},
        },
    ),  # fmt: skip
    (
        "eqx.nn.MLP",
        {"in_size": 2, "out_size": 1, "width_size": 4, "depth": 1},
        {
            "function": "forward",
            "transforms": ["jacfwd", "vmap"],
            "vmap_axis": 1,
            "input": {"shape": [2, 3], "init": "normal"},
        },
    ),  # fmt: skip
]

RUNNER = textwrap.dedent(
    """
    import json, sys
    import jax
    import numpy as np

    cases = json.load(open(sys.argv[1]))
    out = []
    for case in cases:
        namespace = {}
        exec(case["module_code"], namespace)
        exec(case["run_code"], namespace)
        result = namespace.get("result")
        if result is None:
            result = (namespace["values"], namespace["slopes"])
        flat, _ = jax.tree_util.tree_flatten_with_path(result)
        if isinstance(result, jax.Array):
            out.append(np.asarray(result, dtype=np.float64).tolist())
        else:
            out.append({jax.tree_util.keystr(path): np.asarray(leaf, dtype=np.float64).tolist()
                        for path, leaf in flat})
    json.dump(out, open(sys.argv[2], "w"))
    """
)


def _numbers(value):
    if isinstance(value, list):
        return [_numbers(v) for v in value]
    if isinstance(value, str):
        return float(value.replace("Infinity", "inf"))
    return value


@pytest.mark.slow  # end to end: exported code run in a fresh interpreter
def test_exported_run_code_gives_the_api_numbers(client, tmp_path):
    cases, expected = [], []
    for kind, params, body in CASES:
        made = client.post("/api/modules", json={"kind": kind, "params": params})
        assert made.status_code == 201, made.text
        module = made.json()
        answer = client.post(f"/api/modules/{module['id']}/run", json=body)
        assert answer.status_code == 200, answer.text
        cases.append({"module_code": module["code"], "run_code": answer.json()["code"]})
        expected.append(answer.json()["values"])
    sweep_module = client.post(
        "/api/modules", json={"kind": "eqx.nn.Linear", "params": {"in_features": 2}}
    ).json()
    sweep = client.post(
        f"/api/modules/{sweep_module['id']}/sweep",
        json={"coordinate": 1, "start": -1, "stop": 1, "points": 7, "loss": "sum(out ** 2)"},
    ).json()
    cases.append({"module_code": sweep_module["code"], "run_code": sweep["code"]})
    expected.append({"[0]": sweep["f"], "[1]": sweep["df"]})

    source, target = tmp_path / "cases.json", tmp_path / "out.json"
    source.write_text(json.dumps(cases))
    (tmp_path / "runner.py").write_text(RUNNER)
    done = subprocess.run(
        [sys.executable, str(tmp_path / "runner.py"), str(source), str(target)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(target.read_text())
    for index, (got, want) in enumerate(zip(results, expected, strict=True)):
        if isinstance(want, dict):
            assert set(got) == set(want), (index, got.keys(), want.keys())
            for path in want:
                np.testing.assert_allclose(
                    np.asarray(got[path], dtype=np.float64),
                    np.asarray(_numbers(want[path]), dtype=np.float64),
                    rtol=2e-5, atol=1e-6, err_msg=f"case {index} {path}",
                )  # fmt: skip
        else:
            np.testing.assert_allclose(
                np.asarray(got, dtype=np.float64),
                np.asarray(_numbers(want), dtype=np.float64),
                rtol=2e-5, atol=1e-6, err_msg=f"case {index}",
            )  # fmt: skip
