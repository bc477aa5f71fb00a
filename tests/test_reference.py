"""The library's reference, docs/library.md: complete, true to the code, and served at /library."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest
from helpers import build

import library
from library import data, training

ROOT = Path(__file__).resolve().parent.parent
TEXT = (ROOT / "docs" / "library.md").read_text()
PROTOCOL = "the-reference-task-and-its-training-protocol"


def own_functions(module) -> list[str]:
    """The public functions and classes defined in ``module`` itself."""
    return [
        name
        for name, value in vars(module).items()
        if not name.startswith("_")
        and (inspect.isfunction(value) or inspect.isclass(value))
        and value.__module__ == module.__name__
    ]


def parameters(callable_) -> str:
    """A signature as the reference writes it: ``(a, b, key, strength=1.0)``."""
    parts = []
    for parameter in inspect.signature(callable_).parameters.values():
        default = parameter.default
        parts.append(
            parameter.name if default is parameter.empty else f"{parameter.name}={default}"
        )
    return f"({', '.join(parts)})"


@pytest.mark.parametrize(
    "name", [*library.__all__, *own_functions(training), *own_functions(data), "DATASETS"]
)
def test_every_public_name_is_in_the_reference(name):
    mentioned = re.search(rf"`[^`]*\b{name}\b[^`]*`", TEXT)
    assert mentioned, f"docs/library.md does not mention {name}"


def test_the_import_block_runs_and_names_the_library():
    block = TEXT.split("## Imports", 1)[1].split("```python", 1)[1].split("```", 1)[0]
    namespace: dict = {}
    exec(block, namespace)  # noqa: S102 - the reference's own text
    names = [name for name in namespace if not name.startswith("__")]
    assert sorted(names) == sorted(library.__all__)
    for name in names:
        assert getattr(library, name) is namespace[name], name


def test_the_modules_table_gives_each_constructor_as_written_in_the_code():
    rows = re.findall(
        r"^\| `(\w+)` \((Layer|Adapter)\) \| `?(\([^`|]*\)|same as `\w+`)`? \|", TEXT, re.M
    )
    assert {name for name, _, _ in rows} == {
        "RecurrentDiscrete",
        "RecurrentTanh",
        "Ferromagnetic",
        "FullyConnected",
        "FrozenFullyConnected",
        "OutputLayer",
    }
    written = {name: signature for name, _, signature in rows}
    for name, kind, signature in rows:
        cls = getattr(library, name)
        assert issubclass(cls, getattr(library, kind)), name
        if signature.startswith("same as"):
            signature = written[signature.split("`")[1]]
        assert parameters(cls) == signature, name


def test_the_page_shows_the_reference_with_a_contents_list(client):
    response = client.get("/library")
    assert response.status_code == 200
    page = response.text
    assert "<h1" in page and "The library: states, modules, layermaps, orchestrators" in page
    contents, text = page.split('<article class="reference-text">', 1)
    ids = set(re.findall(r'<h[23] id="([^"]+)"', text))
    assert PROTOCOL in ids and "the-local-rule" in ids and "training-librarytraining" in ids
    assert set(re.findall(r'<a href="#([^"]+)"', contents)) == ids  # every section listed
    assert "<table>" in page and "<pre><code" in page
    assert "perceptron_rule(x, y, y_hat, margin, gate=None)" in page
    assert '<a href="/library">Library reference</a>' in client.get("/").text


def test_the_training_panel_of_a_network_links_to_the_protocol(client):
    network = build(client, "library.network", {"input_size": 4, "hidden_size": 4})
    panel = client.get(f"/m/{network}/train-panel")
    assert panel.status_code == 200
    assert f'href="/library#{PROTOCOL}"' in panel.text
