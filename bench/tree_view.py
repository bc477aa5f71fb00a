"""How fast the first view of a big tree comes: ``eqx.nn.MLP(8, 8, 8, depth=5000)``, 10,004 leaves.

Prints the median (and best) seconds of ``app.trees.describe_tree``: the API's tree (first
levels plus lazy nodes), and the page's first view as ``GET /m/{id}`` builds it (identical
sibling runs folded, every array's inline mean, std and colour strip, the roles from the
cached ``library.trainable_filter``); of the page's HTML (``GET /m/{id}`` through the app,
server side); and of treescope's rendering when treescope is installed (the issue quotes 13 s
for it), all in the same run, so the ratios hold on a busy machine.

    python bench/tree_view.py
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import equinox as eqx  # noqa: E402
import jax  # noqa: E402

from app.trees import describe_tree  # noqa: E402

REPEATS = 5


def median_seconds(function, repeats: int = REPEATS) -> float:
    return timings(function, repeats)[0]


def timings(function, repeats: int = REPEATS) -> tuple[float, float]:
    """The median and the best of ``repeats`` calls, in seconds."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times), min(times)


def cpu_seconds(function, repeats: int = REPEATS) -> float:
    """The median CPU time of ``repeats`` calls (this process's own work: on a machine shared
    with other jobs, wall time also counts the waits for a core)."""
    times = []
    for _ in range(repeats):
        start = time.process_time()
        function()
        times.append(time.process_time() - start)
    return statistics.median(times)


def main() -> None:
    model = eqx.nn.MLP(8, 8, 8, depth=5000, key=jax.random.PRNGKey(0))
    leaves = len(jax.tree_util.tree_leaves(eqx.filter(model, eqx.is_array)))
    print(f"model: eqx.nn.MLP(8, 8, 8, depth=5000), {leaves:,} array leaves")

    tree = describe_tree(model)
    seconds = median_seconds(lambda: describe_tree(model))
    print(f"describe_tree (API tree, {count_nodes(tree)} nodes): {seconds:.3f} s")

    from library import trainable_filter

    roles = trainable_filter(model)

    def page_view():
        return describe_tree(model, roles=roles, max_nodes=800, fold=True, stats=True)

    view = page_view()
    median, best = timings(page_view, repeats=REPEATS * 2)
    cpu = cpu_seconds(page_view, repeats=REPEATS * 2)
    print(
        f"describe_tree (the page's first view, folded, {count_nodes(view)} nodes): "
        f"median {median * 1000:.0f} ms, best {best * 1000:.0f} ms, CPU {cpu * 1000:.0f} ms "
        "(target: 150 ms)"
    )
    focus = timings(
        lambda: describe_tree(
            model, roles=roles, max_nodes=800, fold=True, stats=True, focus=".layers[2500].bias"
        )
    )
    print(f"describe_tree (landed on .layers[2500].bias): median {focus[0] * 1000:.0f} ms")

    from fastapi.testclient import TestClient

    from app.main import create_app
    from app.settings import Settings

    with tempfile.TemporaryDirectory() as data_dir:
        app = create_app(Settings(data_dir=Path(data_dir)))
        with TestClient(app, base_url="http://127.0.0.1") as client:
            params = {"in_size": 8, "out_size": 8, "width_size": 8, "depth": 5000}
            created = client.post("/api/modules", json={"kind": "eqx.nn.MLP", "params": params})
            created.raise_for_status()
            module_id = created.json()["id"]
            page = client.get(f"/m/{module_id}")
            page.raise_for_status()
            seconds = median_seconds(lambda: client.get(f"/m/{module_id}").raise_for_status())
            print(f"page GET /m/{{id}} (HTML, {len(page.text) / 1e6:.2f} MB): {seconds:.3f} s")
            seconds = median_seconds(
                lambda: client.get(f"/api/modules/{module_id}").raise_for_status()
            )
            print(f"API GET /api/modules/{{id}} (JSON tree): {seconds:.3f} s")

    try:
        import treescope
    except ImportError:
        print("treescope: not installed (the issue quotes 13 s for this model)")
    else:
        seconds = median_seconds(lambda: treescope.render_to_html(model), repeats=1)
        print(f"treescope.render_to_html: {seconds:.3f} s")


def count_nodes(node: dict) -> int:
    return 1 + sum(count_nodes(child) for child in node.get("children") or [])


if __name__ == "__main__":
    main()
