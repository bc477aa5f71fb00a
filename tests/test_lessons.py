"""Lessons: the shipped files validate, every step of every lesson opens (its page, its module
in the visitor's workspace) and its preset runs through the API; the numbers the lessons
promise are checked against NumPy and JAX called directly; the URL round trip; safe Markdown.
"""

from __future__ import annotations

import re
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from fastapi.testclient import TestClient
from helpers import leaf, wait_for_job

from app.catalog import parse_spec
from app.lessons import LessonFileError, lessons, load_lessons, render_markdown
from app.settings import Settings

EXPECTED = ["pytree", "grad", "vmap", "jit", "library", "local-rule", "spiral"]
ALL_STEPS = [
    (lesson.id, number)
    for lesson in lessons().values()
    for number in range(1, len(lesson.steps) + 1)
]
STEP_PARAMS = [
    pytest.param(
        lesson_id,
        number,
        id=f"{lesson_id}-{number}",
        # a training preset runs a whole (short) job: end to end, like the other slow tests
        marks=[pytest.mark.slow] if lessons()[lesson_id].step(number).training else [],
    )
    for lesson_id, number in ALL_STEPS
]


def new_client(app) -> TestClient:
    return TestClient(app, base_url="http://testserver")


def open_step(client, lesson: str, number: int) -> dict:
    response = client.post(f"/api/lessons/{lesson}/{number}/open")
    assert response.status_code in (200, 201), response.text
    return response.json()


def run_step(client, lesson: str, number: int, module: str):
    return client.post(f"/api/lessons/{lesson}/{number}/run", json={"module": module})


# The files --------------------------------------------------------------------------------


def test_the_seven_lessons_ship_in_order_and_validate():
    shipped = load_lessons()  # read again from the files, not the process's cache
    assert list(shipped) == EXPECTED
    for lesson in shipped.values():
        assert 3 <= len(lesson.steps) <= 12
        for step in lesson.steps:
            spec = step.module.spec()  # the catalog's own model validates the params
            assert spec.estimated_parameters() <= Settings().max_module_params
            assert step.text_html.strip() and step.question_html.strip()
    presets = {lesson.id: [s.preset for s in lesson.steps] for lesson in shipped.values()}
    assert "dynamics" in presets["library"]
    assert presets["local-rule"].count("training") >= 1
    assert presets["local-rule"].count("dynamics") >= 2
    assert set(presets["spiral"]) == {"training"}


def test_the_api_lists_every_lesson_with_its_steps_urls(client):
    response = client.get("/api/lessons")
    assert response.status_code == 200
    body = response.json()
    assert [item["id"] for item in body] == EXPECTED
    for item, lesson in zip(body, lessons().values(), strict=True):
        assert set(item) == {"id", "title", "steps"}
        assert item["title"] == lesson.title
        assert item["steps"] == [
            {"title": step.title, "url": f"/lessons/{lesson.id}/{n}"}
            for n, step in enumerate(lesson.steps, start=1)
        ]


def write_lesson(directory: Path, name: str, text: str) -> None:
    (directory / name).write_text(text, encoding="utf-8")


GOOD_STEP = """
[[steps]]
title = "One"
text = "Some *text*."
question = "Why?"
module = { kind = "library.Linear", params = { in_dim = 2, out_dim = 3 } }
"""


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ('id = "x"\norder = 1\ntitle = "X"\nsummary = "S"\n' + GOOD_STEP + "oops = [", "x.toml"),
        (
            'id = "x"\norder = 1\ntitle = "X"\nsummary = "S"\n'
            + GOOD_STEP.replace("library.Linear", "library.Nope"),
            "unknown kind 'library.Nope'",
        ),
        (
            'id = "x"\norder = 1\ntitle = "X"\nsummary = "S"\n'
            + GOOD_STEP.replace("in_dim = 2", "in_dim = -2"),
            "in_dim",
        ),
        (
            'id = "x"\norder = 1\ntitle = "X"\nsummary = "S"\n'
            + GOOD_STEP
            + 'run = { transforms = ["grad"] }\ndynamics = { steps = 3 }\n',
            "at most one preset",
        ),
        (
            'id = "x"\norder = 1\ntitle = "X"\nsummary = "S"\n'
            + GOOD_STEP
            + 'run = { transforms = ["frobnicate"] }\n',
            "transforms",
        ),
        ('id = "y"\norder = 1\ntitle = "X"\nsummary = "S"\n' + GOOD_STEP, "differs"),
    ],
)
def test_a_broken_lesson_file_is_refused_naming_the_file_and_the_problem(tmp_path, body, problem):
    write_lesson(tmp_path, "9-x.toml", body)
    with pytest.raises(LessonFileError) as raised:
        load_lessons(tmp_path)
    assert "9-x.toml" in str(raised.value)
    assert problem in str(raised.value)


def test_a_valid_lesson_file_loads(tmp_path):
    write_lesson(
        tmp_path, "9-x.toml", 'id = "x"\norder = 1\ntitle = "X"\nsummary = "S"\n' + GOOD_STEP
    )
    loaded = load_lessons(tmp_path)
    assert list(loaded) == ["x"]
    assert loaded["x"].steps[0].text_html == "<p>Some <em>text</em>.</p>\n"


def test_markdown_is_rendered_with_raw_html_escaped_and_no_script_links():
    html = render_markdown(
        'A <script>alert(1)</script> and <img src=x onerror="alert(2)">.\n\n'
        "[click](javascript:alert(3)) [ok](https://jax.readthedocs.io)\n\n```python\nx = 1 < 2\n```"
    )
    assert "<script>" not in html and "<img" not in html
    assert "&lt;script&gt;" in html
    assert 'href="javascript:' not in html
    assert '<a href="https://jax.readthedocs.io">ok</a>' in html
    assert '<code class="language-python">x = 1 &lt; 2' in html


# Every step, through the API --------------------------------------------------------------


@pytest.mark.parametrize(("lesson_id", "number"), STEP_PARAMS)
def test_every_step_opens_builds_its_module_and_runs_its_preset(client, lesson_id, number):
    lesson = lessons()[lesson_id]
    step = lesson.step(number)
    page = client.get(f"/lessons/{lesson_id}/{number}")
    assert page.status_code == 200, page.text[:500]
    assert step.title.replace("'", "&#39;") in page.text
    detail = client.get(f"/api/lessons/{lesson_id}/{number}").json()
    assert detail["preset"] == step.preset and detail["html"] == step.text_html

    opened = open_step(client, lesson_id, number)
    assert opened["built"] is False  # the page built it; opening again reuses it
    module = client.get(f"/api/modules/{opened['module']}").json()
    spec = parse_spec(step.module.kind, step.module.params)
    assert module["kind"] == spec.kind
    assert module["params"] == spec.model_dump(mode="json")
    assert f'data-module-id="{opened["module"]}"' in page.text

    response = run_step(client, lesson_id, number, opened["module"])
    if step.preset is None:
        assert response.status_code == 422
        assert "nothing to run" in response.json()["message"]
        return
    body = response.json()
    assert body["preset"] == step.preset
    result = body["result"]
    if step.preset == "run":
        assert response.status_code == 200, response.text
        assert result["output"] is not None and result["values"] is not None
        direct = client.post(f"/api/modules/{opened['module']}/run", json=detail["body"]).json()
        assert direct["output"]["summary"] == result["output"]["summary"]
        assert direct["values"] == result["values"]
    elif step.preset == "training":
        assert response.status_code == 202, response.text
        done = wait_for_job(client, result["job"], timeout=120)
        assert done["status"] == "done", done
        accuracy = [v for v in done["metrics"]["test_accuracy"] if v is not None]
        assert accuracy and 0.0 <= accuracy[-1] <= 1.0
    else:
        assert response.status_code == 200, response.text
        assert result["steps"] == step.dynamics.steps
        assert len(result["flips"]) == step.dynamics.steps
        assert result["phase"] == step.dynamics.phase
    fragment = client.post(
        f"/lessons/{lesson_id}/{number}/run",
        data={"module": opened["module"]},
        headers={"HX-Request": "true"},
    )
    assert fragment.status_code == 200, fragment.text[:500]
    if step.preset == "training":  # let the fragment's job end before the app closes
        client.post(f"/api/jobs/{result['job']}/stop")


# The numbers the lessons promise ----------------------------------------------------------


def test_the_seeds_gradient_is_a_linear_of_one_thirds(client):
    opened = open_step(client, "grad", 1)
    result = run_step(client, "grad", 1, opened["module"]).json()["result"]
    assert result["output"]["type"] == "Linear"
    np.testing.assert_allclose(
        np.asarray(result["values"][".weight"]), np.full((2, 3), 1 / 3), rtol=1e-6
    )
    np.testing.assert_allclose(np.asarray(result["values"][".bias"]), np.full(3, 1 / 3), rtol=1e-6)


def test_the_forward_step_is_x_at_weight_plus_bias(client):
    opened = open_step(client, "pytree", 1)
    result = run_step(client, "pytree", 1, opened["module"]).json()["result"]
    weight, bias = (
        leaf(client, opened["module"], ".weight"),
        leaf(client, opened["module"], ".bias"),
    )
    expected = np.ones((5, 2)) @ weight + bias
    np.testing.assert_allclose(np.asarray(result["values"]), expected, rtol=1e-5)


def test_the_input_gradient_has_equal_rows_of_weight_sums_over_15(client):
    opened = open_step(client, "grad", 3)
    result = run_step(client, "grad", 3, opened["module"]).json()["result"]
    weight = leaf(client, opened["module"], ".weight")
    expected = np.tile(weight.sum(axis=1) / 15, (5, 1))
    np.testing.assert_allclose(np.asarray(result["values"]), expected, rtol=1e-5)


def test_per_example_gradients_add_an_axis_and_their_mean_is_the_batch_gradient(client):
    opened = open_step(client, "vmap", 1)
    result = run_step(client, "vmap", 1, opened["module"]).json()["result"]
    weight = jnp.asarray(leaf(client, opened["module"], ".weight"), jnp.float32)
    bias = jnp.asarray(leaf(client, opened["module"], ".bias"), jnp.float32)
    x = jax.random.normal(jax.random.PRNGKey(0), (5, 2))

    def loss(params, example):
        w, b = params
        return jnp.mean(example @ w + b)

    grads_w, grads_b = jax.vmap(jax.grad(loss), in_axes=(None, 0))((weight, bias), x)
    got_w = np.asarray(result["values"][".weight"])
    assert got_w.shape == (5, 2, 3)
    np.testing.assert_allclose(got_w, np.asarray(grads_w), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(np.asarray(result["values"][".bias"]), grads_b, rtol=1e-5)
    children = {c["name"]: c["summary"] for c in result["output"]["children"]}
    assert children == {"weight": "f32[5,2,3]", "bias": "f32[5,3]"}
    # the mean over the batch axis is the gradient of the batch loss, computed by NumPy
    batch_w = np.asarray(x, np.float64).mean(axis=0)[:, None] / 3 * np.ones((1, 3))
    np.testing.assert_allclose(got_w.mean(axis=0), batch_w, rtol=1e-5)
    check = result["batch_mean"]
    assert check["examples"] == 5
    assert check["max_difference"] < 1e-6
    page = client.post(
        "/lessons/vmap/1/run", data={"module": opened["module"]}, headers={"HX-Request": "true"}
    )
    assert page.status_code == 200
    assert "Their mean is the batch gradient" in page.text
    # the result's shape beside the model's, and the input's, at the top of the result
    assert re.search(
        r"<th scope=\"row\">weight</th><td><code[^>]*>f32\[5,2,3\]</code></td>"
        r"<td><code>f32\[2,3\]</code>",
        page.text,
    )
    assert '<code class="lesson-input-shape">f32[5,2]</code>' in page.text


def test_vmap_over_an_equinox_linear_maps_each_example(client):
    opened = open_step(client, "vmap", 2)
    result = run_step(client, "vmap", 2, opened["module"]).json()["result"]
    weight = leaf(client, opened["module"], ".weight")  # (out, in) in Equinox
    bias = leaf(client, opened["module"], ".bias")
    x = np.asarray(jax.random.normal(jax.random.PRNGKey(0), (5, 2)), np.float64)
    np.testing.assert_allclose(np.asarray(result["values"]), x @ weight.T + bias, rtol=1e-5)
    assert result["output"]["summary"] == "f32[5,3]"


def test_jit_compiles_once_and_a_static_field_compiles_again(client):
    first = open_step(client, "jit", 1)["module"]
    assert run_step(client, "jit", 1, first).json()["result"]["compiled"] is True
    assert run_step(client, "jit", 1, first).json()["result"]["compiled"] is False
    reshaped = run_step(client, "jit", 2, open_step(client, "jit", 2)["module"]).json()["result"]
    assert reshaped["compiled"] is True
    scale_2 = open_step(client, "jit", 3)["module"]
    scale_3 = open_step(client, "jit", 4)["module"]
    assert run_step(client, "jit", 3, scale_2).json()["result"]["compiled"] is True
    assert run_step(client, "jit", 4, scale_3).json()["result"]["compiled"] is True
    assert run_step(client, "jit", 4, scale_3).json()["result"]["compiled"] is False


# The URL round trip -----------------------------------------------------------------------


def test_a_steps_url_opens_the_same_step_in_each_visitors_own_workspace(app):
    url = next(s["url"] for s in app_lessons(app) if s["url"].endswith("/pytree/1"))
    with new_client(app) as alice, new_client(app) as bob:
        assert alice.get(url).status_code == 200
        assert alice.get(url).status_code == 200  # reloading reuses the module
        mine = alice.get("/api/modules").json()
        assert [m["kind"] for m in mine] == ["library.Linear"]
        assert bob.get(url).status_code == 200
        theirs = bob.get("/api/modules").json()
        assert len(theirs) == 1 and theirs[0]["id"] != mine[0]["id"]
        assert bob.get(f"/api/modules/{mine[0]['id']}").status_code == 404
        # the module holds exactly the seed's parameters
        expected = parse_spec("library.Linear", {"in_dim": 2, "out_dim": 3, "seed": 0}).build()
        np.testing.assert_array_equal(
            leaf(alice, mine[0]["id"], ".weight"), np.asarray(expected.weight, np.float64)
        )


def app_lessons(app) -> list[dict]:
    with new_client(app) as client:
        return [step for lesson in client.get("/api/lessons").json() for step in lesson["steps"]]


@pytest.mark.slow
def test_a_trained_module_is_kept_by_the_next_step_and_replaced_by_a_fresh_one(client):
    opened = open_step(client, "local-rule", 2)
    job = run_step(client, "local-rule", 2, opened["module"]).json()["result"]["job"]
    assert wait_for_job(client, job, timeout=120)["status"] == "done"
    assert client.get(f"/api/modules/{opened['module']}").json()["trained"] is True
    # step 3 continues with the trained network; step 1 (before training) gets a fresh one
    assert open_step(client, "local-rule", 3)["module"] == opened["module"]
    fresh = client.post("/api/lessons/local-rule/1/open")
    assert fresh.status_code == 201 and fresh.json()["module"] != opened["module"]


@pytest.mark.parametrize(
    ("path", "words"),
    [
        ("/api/lessons/nope/1", "No lesson 'nope'"),
        ("/api/lessons/pytree/9", "steps 1 to 3"),
        ("/lessons/pytree/9", "steps 1 to 3"),
    ],
)
def test_an_unknown_lesson_or_step_is_a_404_that_says_what_there_is(client, path, words):
    response = client.get(path)
    assert response.status_code == 404
    assert words in response.text


def test_running_a_step_on_another_module_is_refused(client):
    other = client.post("/api/modules", json={"kind": "eqx.nn.MLP", "params": {}}).json()["id"]
    response = run_step(client, "grad", 1, other)
    assert response.status_code == 404
    assert "open the step again" in response.json()["message"]
