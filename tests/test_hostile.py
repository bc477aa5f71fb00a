"""A corpus of hostile inputs sent through the HTTP API: every one gets a 4xx, each within
seconds, and the server is healthy afterwards (health answers, a normal run still works).

The corpus covers escapes through dunder attributes, builtins and imports, Unicode look-alikes,
lambdas and comprehensions, constant bombs (``9**9**9``: never folded in Python, refused by the
size check on constant parts), deep nesting, giant shapes and lengths, NaN and infinities,
overflowing seeds, path traversal in leaf paths, wrong JSON types, malformed and oversized
bodies, and huge numbers of rows; then bombs with small limits: compile-time bombs (deep
stacks, long expression chains under transforms, a deep model's training step) and memory bombs
(large intermediates from small inputs), each answered by a 422 that names its limit, with
/api/health and the seed's run answering right after each; and bombs within every estimate,
stopped by real worker processes' time and memory limits.
"""

from __future__ import annotations

import json
import time

import pytest
from fastapi.testclient import TestClient
from helpers import LINEAR, SEED_RUN

from app.main import create_app
from app.settings import Settings

SECONDS_PER_CASE = 5.0
JSON = {"content-type": "application/json"}
GOOD_TRAIN = {
    "dataset": "circle",
    "optimizer": "adam",
    "learning_rate": 0.01,
    "steps": 10,
    "batch_size": 16,
    "seed": 0,
}


def custom(call="x @ weight + bias", fields=None, name="Mine", seed=0) -> dict:
    if fields is None:
        fields = [
            {"name": "weight", "role": "param", "shape": [2, 3], "init": "normal"},
            {"name": "bias", "role": "param", "shape": [3], "init": "zeros"},
        ]
    return {
        "kind": "custom",
        "params": {"name": name, "seed": seed, "fields": fields, "call": call},
    }


def field(name="weight", role="param", shape=(2, 3), init="normal", value=None) -> dict:
    out = {"name": name, "role": role, "shape": list(shape) if shape else shape, "init": init}
    if value is not None:
        out["value"] = value
    return out


def run(**changes) -> dict:
    body = json.loads(json.dumps(SEED_RUN))
    body.update(changes)
    return body


def run_input(**changes) -> dict:
    return run(input={**SEED_RUN["input"], **changes})


def train(**changes) -> dict:
    return {**GOOD_TRAIN, **changes}


CALLS = {
    # escapes through dunders, builtins, imports
    "dunder-class": "x.__class__",
    "dunder-subclasses": "x.__class__.__bases__[0].__subclasses__()",
    "dunder-globals": "relu.__globals__",
    "dunder-import": "__import__('os').system('id')",
    "builtin-open": "open('/etc/passwd')",
    "builtin-eval": "eval('1+1')",
    "builtin-exec": "exec('import os')",
    "builtin-getattr": "getattr(x, '__class__')",
    "builtin-globals": "globals()",
    "import-statement": "import os",
    "semicolon-statement": "x @ weight; import os",
    "walrus": "(y := x) @ weight",
    "numpy-escape": "np.load('/etc/passwd')",
    "jax-escape": "jax.numpy.load('/etc/passwd')",
    "jnp-io": "jnp.save('/tmp/pwned', x)",
    "jax-config": "jax.config.update('jax_platforms', 'cpu')",
    "private-attr": "x._value",
    "string-literal": "'a' * 100000000",
    "fstring": "f'{x}'",
    "bytes-literal": "b'x'",
    # lambdas and comprehensions
    "lambda": "(lambda: x)()",
    "list-comprehension": "[w for w in weight]",
    "generator": "sum(w for w in weight)",
    "dict-literal": "{'a': x}",
    "conditional": "x if x else weight",
    "boolean-ops": "x and weight",
    # unicode look-alikes
    "cyrillic-e-exp": "\u0435xp(x)",
    "fullwidth-x": "\uff58 @ weight",
    "greek-omicron-attribute": "x.\u03a4",
    "zero-width-joiner": "x\u200d @ weight",
    "nfkc-dunder": "x.\uff3f\uff3fclass\uff3f\uff3f",
    "null-byte": "x @ weight\x00",
    "newline": "x @ weight\n+ bias",
    # constant bombs (never folded in Python)
    "power-tower": "9**9**9",
    "power-tower-times-x": "x @ weight * 9**9**9",
    "huge-power": "x @ weight + 2**100000",
    "huge-int-literal": "x @ weight + " + "9" * 5000,
    "huge-float-literal": "x @ weight * 1e308",
    # deep nesting and giant lengths
    "deep-parens": "(" * 200 + "x" + ")" * 200 + " @ weight",
    "deep-calls": "sin(" * 100 + "x" + ")" * 100,
    "deep-unary": "-" * 2000 + "x",
    "long-chain": "x @ weight" + " + bias" * 400,
    "ten-thousand-chars": "x" * 10_000,
    "giant-index": "x[999999999999999999999]",
    "giant-broadcast-shape": "broadcast_to(x, (100000, 100000))",
}

CASES: list[tuple[str, str, str, dict]] = []
for name, call in CALLS.items():
    CASES.append((f"call:{name}", "POST", "/api/modules", {"json": custom(call=call)}))

CASES += [
    # class and field names
    ("class:dunder", "POST", "/api/modules", {"json": custom(name="__class__")}),
    ("class:keyword", "POST", "/api/modules", {"json": custom(name="import")}),
    ("class:code", "POST", "/api/modules", {"json": custom(name="A; import os")}),
    ("class:cyrillic", "POST", "/api/modules", {"json": custom(name="\u0410bc")}),
    ("class:long", "POST", "/api/modules", {"json": custom(name="A" * 10_000)}),
    ("class:empty", "POST", "/api/modules", {"json": custom(name="")}),
    (
        "field:dunder",
        "POST",
        "/api/modules",
        {"json": custom(call="x @ __dict__", fields=[field(name="__dict__")])},
    ),
    (
        "field:dotted",
        "POST",
        "/api/modules",
        {"json": custom(call="x", fields=[field(name="weight.__class__")])},
    ),
    (
        "field:duplicate",
        "POST",
        "/api/modules",
        {"json": custom(call="x @ weight", fields=[field(), field()])},
    ),
    (
        "field:shadows-input",
        "POST",
        "/api/modules",
        {"json": custom(call="x @ x", fields=[field(name="x")])},
    ),
    (
        "field:shadows-function",
        "POST",
        "/api/modules",
        {"json": custom(call="x @ relu", fields=[field(name="relu")])},
    ),
    (
        "field:cyrillic",
        "POST",
        "/api/modules",
        {"json": custom(call="x @ \u0441", fields=[field(name="\u0441")])},
    ),
    (
        "field:too-many",
        "POST",
        "/api/modules",
        {"json": custom(call="x", fields=[field(name=f"f{i}", shape=(1,)) for i in range(5000)])},
    ),
    # giant shapes
    (
        "shape:giant",
        "POST",
        "/api/modules",
        {"json": custom(call="x @ weight", fields=[field(shape=(100_000, 100_000))])},
    ),
    (
        "shape:many-axes",
        "POST",
        "/api/modules",
        {"json": custom(call="x", fields=[field(shape=(2,) * 40)])},
    ),
    (
        "shape:negative",
        "POST",
        "/api/modules",
        {"json": custom(call="x", fields=[field(shape=(-1, 3))])},
    ),
    (
        "shape:2**64",
        "POST",
        "/api/modules",
        {"json": custom(call="x", fields=[field(shape=(2**64,))])},
    ),
    (
        "shape:text",
        "POST",
        "/api/modules",
        {"json": custom(call="x", fields=[field(shape="2,3,__import__")])},
    ),
    (
        "linear:giant",
        "POST",
        "/api/modules",
        {"json": {"kind": "library.Linear", "params": {"in_dim": 10**9, "out_dim": 10**9}}},
    ),
    (
        "mlp:deep-and-wide",
        "POST",
        "/api/modules",
        {
            "json": {
                "kind": "eqx.nn.MLP",
                "params": {"in_size": 4096, "out_size": 4096, "width_size": 4096, "depth": 4096},
            }
        },
    ),
    # NaN and infinities
    (
        "value:nan",
        "POST",
        "/api/modules",
        {
            "content": json.dumps(
                custom(call="x * c", fields=[field(name="c", role="static", shape=None, value=1)])
            ).replace('"value": 1', '"value": NaN'),
            "headers": JSON,
        },
    ),
    (
        "value:inf-constant",
        "POST",
        "/api/modules",
        {
            "content": json.dumps(
                custom(call="x @ weight", fields=[field(init="constant", value=1)])
            ).replace('"value": 1', '"value": Infinity'),
            "headers": JSON,
        },
    ),
    (
        "value:1e308-constant",
        "POST",
        "/api/modules",
        {"json": custom(call="x @ weight", fields=[field(init="constant", value=1e308)])},
    ),
    # overflowing seeds and wrong types
    ("seed:2**64", "POST", "/api/modules", {"json": custom(seed=2**64)}),
    ("seed:-1", "POST", "/api/modules", {"json": custom(seed=-1)}),
    ("seed:1e308", "POST", "/api/modules", {"json": custom(seed=1e308)}),
    ("seed:text", "POST", "/api/modules", {"json": custom(seed="0; rm -rf /")}),
    ("seed:list", "POST", "/api/modules", {"json": custom(seed=[0])}),
    ("kind:unknown", "POST", "/api/modules", {"json": {"kind": "os.system", "params": {}}}),
    ("kind:number", "POST", "/api/modules", {"json": {"kind": 123, "params": {}}}),
    ("kind:traversal", "POST", "/api/modules", {"json": {"kind": "../../etc", "params": {}}}),
    ("params:list", "POST", "/api/modules", {"json": {"kind": "library.Linear", "params": []}}),
    ("params:extra", "POST", "/api/modules", {"json": {**LINEAR, "params": {"__class__": 1}}}),
    ("body:list", "POST", "/api/modules", {"json": [LINEAR]}),
    ("body:string", "POST", "/api/modules", {"json": "library.Linear"}),
    ("body:null", "POST", "/api/modules", {"json": None}),
    (
        "body:malformed",
        "POST",
        "/api/modules",
        {
            "content": b'{"kind": "library.Linear", ',
            "headers": JSON,
        },
    ),
    (
        "body:deep-json",
        "POST",
        "/api/modules",
        {"content": "[" * 100_000 + "]" * 100_000, "headers": JSON},
    ),
    (
        "body:oversized",
        "POST",
        "/api/modules",
        {
            "content": b"{" + b" " * 3_000_000 + b"}",
            "headers": JSON,
        },
    ),
    (
        "body:not-utf8",
        "POST",
        "/api/modules",
        {"content": b"\xff\xfe\x00{", "headers": JSON},
    ),
    # leaf paths
    ("leaf:traversal", "GET", "/api/modules/{id}/leaf?path=../../etc/passwd", {}),
    ("leaf:dunder", "GET", "/api/modules/{id}/leaf?path=.__class__", {}),
    ("leaf:dunder-of-leaf", "GET", "/api/modules/{id}/leaf?path=.weight.__class__", {}),
    ("leaf:index-out-of-range", "GET", "/api/modules/{id}/leaf?path=[0]", {}),
    ("leaf:array-index", "GET", "/api/modules/{id}/leaf?path=.weight[99]", {}),
    ("leaf:giant-index", "GET", "/api/modules/{id}/leaf?path=.weight[99999999999999999999]", {}),
    ("leaf:10k-chars", "GET", "/api/modules/{id}/leaf?path=" + ".weight" * 1500, {}),
    ("leaf:null-byte", "GET", "/api/modules/{id}/leaf?path=.weight%00", {}),
    ("leaf:missing", "GET", "/api/modules/{id}/leaf", {}),
    ("module:traversal", "GET", "/api/modules/..%2F..%2Fetc%2Fpasswd", {}),
    ("module:long-id", "GET", "/api/modules/" + "a" * 5000, {}),
    # runs
    ("run:loss-dunder", "POST", "/api/modules/{id}/run", {"json": run(loss="out.__class__")}),
    ("run:loss-import", "POST", "/api/modules/{id}/run", {"json": run(loss="__import__('os')")}),
    ("run:loss-lambda", "POST", "/api/modules/{id}/run", {"json": run(loss="(lambda: out)()")}),
    ("run:loss-bomb", "POST", "/api/modules/{id}/run", {"json": run(loss="mean(out) * 9**9**9")}),
    ("run:loss-long", "POST", "/api/modules/{id}/run", {"json": run(loss="out" + "+out" * 3000)}),
    (
        "run:loss-giant-reshape",
        "POST",
        "/api/modules/{id}/run",
        {"json": run(loss="sum(reshape(out, (100000, 100000)))")},
    ),
    ("run:loss-type", "POST", "/api/modules/{id}/run", {"json": run(loss=["mean(out)"])}),
    ("run:transform-unknown", "POST", "/api/modules/{id}/run", {"json": run(transforms=["eval"])}),
    (
        "run:transforms-many",
        "POST",
        "/api/modules/{id}/run",
        {"json": run(transforms=["grad", "jacfwd", "jacrev"] * 200)},
    ),
    (
        "run:input-giant",
        "POST",
        "/api/modules/{id}/run",
        {"json": run_input(shape=[100_000, 100_000])},
    ),
    (
        "run:input-many-elements",
        "POST",
        "/api/modules/{id}/run",
        {"json": run_input(shape=[10_000_000, 2])},
    ),
    ("run:input-negative", "POST", "/api/modules/{id}/run", {"json": run_input(shape=[-5, 2])}),
    ("run:input-init", "POST", "/api/modules/{id}/run", {"json": run_input(init="/etc/passwd")}),
    (
        "run:input-start-nan",
        "POST",
        "/api/modules/{id}/run",
        {
            "content": json.dumps(run_input(init="linspace", start=0.125, stop=1)).replace(
                "0.125", "NaN"
            ),
            "headers": JSON,
        },
    ),
    (
        "run:input-stop-inf",
        "POST",
        "/api/modules/{id}/run",
        {
            "content": json.dumps(run_input(init="linspace", start=0, stop=0.125)).replace(
                "0.125", "Infinity"
            ),
            "headers": JSON,
        },
    ),
    (
        "run:input-stop-1e308",
        "POST",
        "/api/modules/{id}/run",
        {"json": run_input(init="linspace", start=0, stop=1e308)},
    ),
    (
        "run:input-values-deep",
        "POST",
        "/api/modules/{id}/run",
        {
            "content": json.dumps(run_input(init="values", values=[0])).replace(
                "[0]", "[" * 5000 + "0" + "]" * 5000
            ),
            "headers": JSON,
        },
    ),
    (
        "run:input-seed-overflow",
        "POST",
        "/api/modules/{id}/run",
        {"json": run_input(init="normal", seed=2**64)},
    ),
    ("run:vmap-axis", "POST", "/api/modules/{id}/run", {"json": run(vmap_axis=10**9)}),
    ("run:function", "POST", "/api/modules/{id}/run", {"json": run(function="os.system")}),
    ("run:body-list", "POST", "/api/modules/{id}/run", {"json": [SEED_RUN]}),
    # training
    ("train:steps-huge", "POST", "/api/modules/{id}/train", {"json": train(steps=10**12)}),
    ("train:steps-zero", "POST", "/api/modules/{id}/train", {"json": train(steps=0)}),
    ("train:lr-negative", "POST", "/api/modules/{id}/train", {"json": train(learning_rate=-1)}),
    (
        "train:lr-nan",
        "POST",
        "/api/modules/{id}/train",
        {
            "content": json.dumps(train(learning_rate=0.5)).replace("0.5", "NaN"),
            "headers": JSON,
        },
    ),
    ("train:lr-1e308", "POST", "/api/modules/{id}/train", {"json": train(learning_rate=1e308)}),
    ("train:batch-zero", "POST", "/api/modules/{id}/train", {"json": train(batch_size=0)}),
    ("train:seed-overflow", "POST", "/api/modules/{id}/train", {"json": train(seed=2**64)}),
    ("train:dataset-path", "POST", "/api/modules/{id}/train", {"json": train(dataset="../etc")}),
    ("train:optimizer", "POST", "/api/modules/{id}/train", {"json": train(optimizer="eval")}),
    (
        "train:loss-dunder",
        "POST",
        "/api/modules/{id}/train",
        {"json": train(loss="out.__class__")},
    ),
    # datasets: huge numbers of rows, wrong values
    (
        "train:rows-huge",
        "POST",
        "/api/modules/{id}/train",
        {"json": train(dataset={"name": "circle", "num_examples": 10**9})},
    ),
    (
        "csv:rows-huge",
        "POST",
        "/api/datasets/csv",
        {"files": {"file": ("rows.csv", b"a,b,y\n" + b"1,2,0\n" * 400_000, "text/csv")}},
    ),
    (
        "csv:nan-and-text",
        "POST",
        "/api/datasets/csv",
        {"files": {"file": ("bad.csv", b"a,b,y\nNaN,inf,0\n=cmd(),2,1\n", "text/csv")}},
    ),
    (
        "csv:binary",
        "POST",
        "/api/datasets/csv",
        {"files": {"file": ("bin.csv", bytes(range(256)) * 10, "text/csv")}},
    ),
    (
        "csv:many-columns",
        "POST",
        "/api/datasets/csv",
        {"files": {"file": ("wide.csv", (",".join(["1"] * 100_000) + "\n").encode(), "text/csv")}},
    ),
    # jobs and shares
    ("job:traversal", "GET", "/api/jobs/..%2F..%2Fetc%2Fpasswd", {}),
    ("job:unknown", "GET", "/api/jobs/" + "z" * 40, {}),
    ("share:unknown", "GET", "/api/shared/../../etc/passwd", {}),
    ("fork:unknown", "POST", "/api/shared/%2E%2E/fork", {}),
    # the HTML forms: indices in other scripts' digits, huge indices, deep names, bad actions
    *[
        (f"form{suffix}:{name}", "POST", url, {"data": data})
        for name, data in [
            ("index-superscript", {"kind": "custom", "fields.².name": "a"}),
            ("remove-superscript", {"kind": "custom", "form_action": "remove-field:²"}),
            ("remove-arabic-digit", {"kind": "stack", "form_action": "remove-row:\u0663"}),
            ("index-5000-digits", {"kind": "custom", f"fields.{'9' * 5000}.name": "a"}),
            ("name-3000-parts", {"kind": "custom", "fields." + ".".join(["a"] * 3000): "a"}),
            ("name-40-parts", {"kind": "stack", "rows." + ".".join(["0"] * 40): "a"}),
            ("list-500-items", {"kind": "custom", **{f"fields.{i}.name": "a" for i in range(500)}}),
            ("unknown-action", {"kind": "custom", "form_action": "explode"}),
        ]
        for suffix, url in (("", "/build/form"), ("-build", "/build"))
        if not (url == "/build" and "form_action" in data)  # /build reads no form_action
    ],
    ("run-form:remove-superscript", "POST", "/m/{id}/run/form", {"data": {"action": "remove-²"}}),
    ("run-form:up-superscript", "POST", "/m/{id}/run/form", {"data": {"action": "up-¹"}}),
    ("run-form:down-5000", "POST", "/m/{id}/run/form", {"data": {"action": "down-" + "9" * 5000}}),
    ("run-form:unknown", "POST", "/m/{id}/run/form", {"data": {"action": "rm -rf"}}),
    ("host:rebinding", "GET", "/api/health", {"headers": {"Host": "evil.example"}}),
    (
        "host:rebinding-post",
        "POST",
        "/api/modules",
        {"json": LINEAR, "headers": {"Host": "evil.example", "Origin": "http://evil.example"}},
    ),
]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    settings = Settings(data_dir=tmp_path_factory.mktemp("hostile") / "data")
    app = create_app(settings)
    with TestClient(app, base_url="http://testserver") as client:
        created = client.post("/api/modules", json=LINEAR)
        assert created.status_code == 201, created.text
        client.module_id = created.json()["id"]
        # warm up (first imports and compilations), so each case's time is its own
        assert client.post(f"/api/modules/{client.module_id}/run", json=SEED_RUN).status_code == 200
        mlp = {"kind": "eqx.nn.MLP", "params": {"in_size": 2, "out_size": 1, "width_size": 4}}
        trainable = client.post("/api/modules", json=mlp).json()["id"]
        warm = client.post(f"/api/modules/{trainable}/train", json={**GOOD_TRAIN, "steps": 2})
        assert warm.status_code == 202, warm.text
        yield client


def test_the_corpus_is_large_enough():
    assert len(CASES) >= 60
    assert len({name for name, *_ in CASES}) == len(CASES)


@pytest.mark.parametrize(
    ("method", "url", "kwargs"),
    [pytest.param(m, u, k, id=name) for name, m, u, k in CASES],
)
def test_hostile_input_is_refused_quickly(server, method, url, kwargs):
    url = url.replace("{id}", server.module_id)
    start = time.perf_counter()
    response = server.request(method, url, **kwargs)
    elapsed = time.perf_counter() - start
    assert 400 <= response.status_code < 500, (response.status_code, response.text[:500])
    assert elapsed < SECONDS_PER_CASE, f"took {elapsed:.1f} s"
    text = response.text
    assert "Traceback" not in text and 'File "' not in text
    assert "root:" not in text  # nothing of /etc/passwd


def test_the_server_is_healthy_afterwards(server):
    health = server.get("/api/health")
    assert health.status_code == 200 and health.json()["status"] == "ok"
    response = server.post(f"/api/modules/{server.module_id}/run", json=SEED_RUN)
    assert response.status_code == 200, response.text
    values = response.json()["values"]
    assert values[".weight"] == [[pytest.approx(1 / 3)] * 3] * 2


@pytest.mark.parametrize(
    ("url", "data", "field", "words"),
    [
        ("/build/form", {"kind": "custom", "fields.².name": "a"}, "fields.².name", "0-9"),
        ("/build", {"kind": "custom", "fields.².name": "a"}, "fields.².name", "0-9"),
        ("/build/form", {"kind": "custom", "form_action": "remove-field:²"}, "form_action", "0-9"),
        ("/build", {"kind": "custom", f"fields.{'9' * 5000}.name": "a"}, "fields.999", "200"),
        ("/build", {"kind": "custom", "fields." + ".".join("a" * 3000): "a"}, "fields.a.a", "200"),
        ("/build/form", {"kind": "stack", "rows." + ".".join("0" * 20): "1"}, "rows.0.0", "8"),
        ("/m/{id}/run/form", {"action": "remove-²"}, "action", "0-9"),
        ("/m/{id}/run/form", {"action": "up-¹"}, "action", "0-9"),
    ],
)
def test_unreadable_form_names_are_refused_naming_the_field(server, url, data, field, words):
    url = url.replace("{id}", server.module_id)
    for headers in ({}, {"HX-Request": "true"}):
        response = server.post(url, data=data, headers=headers)
        assert response.status_code == 422, response.text[:300]
        text = response.text if headers else response.json()["message"]
        assert field in text and words in text, text[:300]


# --- compile-time and memory bombs: refused from estimates, before they cost minutes or GBs ----


def test_grad_of_the_ten_thousand_leaf_mlp_is_refused_before_tracing(server):
    deep = {
        "kind": "eqx.nn.MLP",
        "params": {"in_size": 8, "out_size": 8, "width_size": 8, "depth": 5000},
    }
    created = server.post("/api/modules", json=deep)
    assert created.status_code == 201, created.text
    module = created.json()["id"]
    for url, kwargs in [
        (f"/api/modules/{module}/run", {"json": {**SEED_RUN, "input": {"shape": [8]}}}),
        (f"/m/{module}/run", {"data": {"action": "preset-grad"}}),  # "grad of the loss"
    ]:
        compiles = server.app.state.services.runs.compiles
        start = time.perf_counter()
        response = server.post(url, **kwargs)
        elapsed = time.perf_counter() - start
        # refused before tracing: nothing compiled (bench figures give the time, about 0.05 s;
        # the bound only catches a hang, as in the corpus, so a busy machine cannot fail it)
        assert server.app.state.services.runs.compiles == compiles
        assert elapsed < SECONDS_PER_CASE, f"took {elapsed:.1f} s"
        assert "max_traced_leaves" in response.text and "10,002 array leaves" in response.text
        assert "at most 498 leaves fit" in response.text  # 1,500 // 3 - 2 parts of mean(out)
    assert server.get("/api/health").status_code == 200


@pytest.mark.parametrize(
    ("name", "module", "body", "setting"),
    [
        (  # 30 nested gelu under four jacfwd: the 181 characters that compiled for 60 s
            "expression-chain",
            LINEAR,
            run(
                loss="mean(" + "gelu(" * 30 + "out" + ")" * 31,
                transforms=["jacfwd"] * 4,
                input={"shape": [2]},
            ),
            "max_traced_leaves",
        ),
        (  # small input, 4 GB of temporaries: refused after compiling, before running
            "one-hot",
            custom(call="x", fields=[]),
            run(loss="sum(one_hot(x, 10000))", transforms=[], input={"shape": [100_000]}),
            "worker_memory_mb",
        ),
    ],
)
def test_compile_and_memory_bombs_are_refused(server, name, module, body, setting):
    module_id = server.post("/api/modules", json=module).json()["id"]
    start = time.perf_counter()
    response = server.post(f"/api/modules/{module_id}/run", json=body)
    elapsed = time.perf_counter() - start
    assert response.status_code == 422, response.text[:500]
    assert setting in response.json()["message"]
    assert elapsed < SECONDS_PER_CASE, f"took {elapsed:.1f} s"
    again = server.post(f"/api/modules/{server.module_id}/run", json=SEED_RUN)
    assert again.status_code == 200


# --- more bombs, with small limits: deep stacks and long chains under transforms (compile
# time), large intermediates from small inputs (memory); each answered within its limit, by a
# 4xx that names it, and the server healthy after -------------------------------------------

BOMB_MEMORY_MB = 300


def mlp(depth: int, size: int = 8) -> dict:
    params = {"in_size": size, "out_size": size, "width_size": size, "depth": depth}
    return {"kind": "eqx.nn.MLP", "params": params}


def gelu_chain(inner: str, depth: int = 30) -> str:
    return "gelu(" * depth + inner + ")" * depth


DEEP_STACK = {
    "kind": "stack",
    "params": {
        "rows": [{"kind": "eqx.nn.MLP", "params": mlp(200)["params"], "activation": "tanh"}] * 8
    },
}
FORWARD = {"function": "forward", "transforms": [], "input": {"shape": [8]}}
IDENTITY = custom(call="x", fields=[])

BOMBS = [
    # compile time: what tracing and compiling would cost, refused before tracing
    ("deep-stack", DEEP_STACK, "run", FORWARD, "max_traced_leaves"),  # 8 x 402 leaves
    ("deep-mlp-forward", mlp(2000), "run", FORWARD, "max_traced_leaves"),  # 4,002 leaves
    ("deep-mlp-training", mlp(1000, 2), "train", train(steps=10), "max_traced_leaves"),
    (
        "chain-under-vmap-and-jacfwd",
        LINEAR,
        "run",
        run(
            loss="mean(" + gelu_chain("out", 20) + ")",
            transforms=["vmap", "jacfwd", "jacfwd", "jacfwd"],
            input={"shape": [3, 2]},
        ),
        "max_traced_leaves",
    ),
    (
        "module-chain-under-four-jacfwd",
        custom(call=gelu_chain("x @ weight"), fields=[field(shape=(2, 2))]),
        "run",
        {
            "function": "forward",
            "wrt": "input",
            "transforms": ["jacfwd"] * 4,
            "input": {"shape": [2]},
        },
        "max_traced_leaves",
    ),
    # memory: small inputs, large intermediates
    (
        "one-hot-under-vmap",  # 10 x 10,000 numbers in, 4 GB of temporaries
        IDENTITY,
        "run",
        run(loss="sum(one_hot(x, 10000))", transforms=["vmap"], input={"shape": [10, 10_000]}),
        "worker_memory_mb",
    ),
    (
        "sort-of-outer",  # 10,000 numbers in, 400 MB to sort
        IDENTITY,
        "run",
        run(loss="max(sort(outer(x, x)))", transforms=[], input={"shape": [10_000]}),
        "worker_memory_mb",
    ),
    (
        "outer-as-result",  # 100,000 numbers in, 10^10 out
        custom(call="outer(x, x)", fields=[]),
        "run",
        {"function": "forward", "transforms": [], "input": {"shape": [100_000]}},
        "max_array_elements",
    ),
    (
        "cumsum-of-outer",
        IDENTITY,
        "run",
        run(loss="max(cumsum(outer(x, x)))", transforms=[], input={"shape": [100_000]}),
        "max_run_flops",
    ),
]


@pytest.fixture(scope="module")
def bombed(tmp_path_factory):
    settings = Settings(
        data_dir=tmp_path_factory.mktemp("bombs") / "data", worker_memory_mb=BOMB_MEMORY_MB
    )
    with TestClient(create_app(settings), base_url="http://testserver") as client:
        created = client.post("/api/modules", json=LINEAR)
        assert created.status_code == 201, created.text
        client.module_id = created.json()["id"]
        assert client.post(f"/api/modules/{client.module_id}/run", json=SEED_RUN).status_code == 200
        yield client


def assert_healthy(client: TestClient) -> None:
    """/api/health answers at once, and the seed's run is still right."""
    start = time.perf_counter()
    health = client.get("/api/health")
    assert health.status_code == 200 and health.json()["status"] == "ok"
    assert time.perf_counter() - start < SECONDS_PER_CASE
    response = client.post(f"/api/modules/{client.module_id}/run", json=SEED_RUN)
    assert response.status_code == 200, response.text
    # d mean(x @ W + b) / dW on ones of shape (5, 2): 1/3 everywhere (3 outputs)
    assert response.json()["values"][".weight"] == [[pytest.approx(1 / 3)] * 3] * 2


@pytest.mark.parametrize(
    ("module", "action", "body", "setting"),
    [pytest.param(m, a, b, s, id=name) for name, m, a, b, s in BOMBS],
)
def test_bombs_are_answered_within_their_limits(bombed, module, action, body, setting):
    created = bombed.post("/api/modules", json=module)
    assert created.status_code == 201, created.text
    compiles = bombed.app.state.services.runs.compiles
    start = time.perf_counter()
    response = bombed.post(f"/api/modules/{created.json()['id']}/{action}", json=body)
    elapsed = time.perf_counter() - start
    assert response.status_code == 422, response.text[:500]
    message = response.json()["message"]
    assert setting in message and f"PLAYGROUND_{setting.upper()}" in message, message
    if setting == "max_traced_leaves":  # refused from the estimate: nothing was compiled
        assert bombed.app.state.services.runs.compiles == compiles
    if setting == "worker_memory_mb":
        assert f"{BOMB_MEMORY_MB:,} MB" in message, message
    assert elapsed < SECONDS_PER_CASE, f"took {elapsed:.1f} s"  # a hang guard
    assert_healthy(bombed)


# --- bombs within every estimate: stopped by the worker's time and memory limits -------------

WORKER_SECONDS = 15.0
"""Minutes below the compile bomb's compile time, and room for what follows a kill: the seed's
run in a fresh worker compiles everything again (no persistent cache here), slowly on a busy
machine."""
WORKER_MEMORY_MB = 900


@pytest.fixture(scope="module")
def supervised(tmp_path_factory):
    """An app with real worker processes and small limits (the suite's others run inline)."""
    settings = Settings(
        data_dir=tmp_path_factory.mktemp("supervised") / "data",
        workers=2,
        max_run_seconds=WORKER_SECONDS,
        worker_memory_mb=WORKER_MEMORY_MB,
        compute_wait_seconds=60.0,  # a killed worker's replacement starts JAX again
    )
    with pytest.MonkeyPatch.context() as patch:
        # the suite's persistent compilation cache (tests/conftest.py) would hand these workers
        # a bomb compiled by an earlier run of the suite: they compile for real
        patch.delenv("JAX_COMPILATION_CACHE_DIR", raising=False)
        with TestClient(create_app(settings), base_url="http://testserver") as client:
            created = client.post("/api/modules", json=LINEAR)
            assert created.status_code == 201, created.text
            client.module_id = created.json()["id"]
            seed = client.post(f"/api/modules/{client.module_id}/run", json=SEED_RUN)
            assert seed.status_code == 200, seed.text
            yield client


SUPERVISED_BOMBS = [
    (  # the custom module's 30 nested gelu under three jacfwd: 512 of the 1,500 traced leaves
        # the estimate allows, and minutes of compiling
        "module-chain-under-three-jacfwd",
        custom(call=gelu_chain("x @ weight"), fields=[field(shape=(2, 2))]),
        {
            "function": "forward",
            "wrt": "input",
            "transforms": ["jacfwd"] * 3,
            "input": {"shape": [2]},
        },
        # whichever the compiler reaches first: its time, or (on a quick machine, within the
        # time) the memory it takes while compiling
        ("max_run_seconds", "worker_memory_mb"),
        ("tracing", "compiling"),
    ),
    (  # 784 MB of temporaries, under the memory analysis' 900 MB: the worker's own memory
        # (JAX, about 250 MB, and the temporaries) passes the limit while it runs
        "sort-of-outer-within-the-analysis",
        IDENTITY,
        run(loss="max(sort(outer(x, x)))", transforms=[], input={"shape": [14_000]}),
        ("worker_memory_mb",),
        ("running",),
    ),
]


@pytest.mark.parametrize(
    ("module", "body", "settings", "stages"),
    [pytest.param(m, b, s, st, id=name) for name, m, b, s, st in SUPERVISED_BOMBS],
)
def test_bombs_within_the_estimates_are_stopped_by_the_worker_limits(
    supervised, module, body, settings, stages
):
    created = supervised.post("/api/modules", json=module)
    assert created.status_code == 201, created.text
    response = supervised.post(f"/api/modules/{created.json()['id']}/run", json=body)
    assert response.status_code == 422, response.text[:500]
    message = response.json()["message"]
    assert any(
        setting in message and f"PLAYGROUND_{setting.upper()}" in message for setting in settings
    ), message
    assert any(f"while {stage}" in message for stage in stages), message
    assert_healthy(supervised)
