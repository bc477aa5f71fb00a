"""Save and share: snapshots in the database, the read-only page, forks with exactly the shared
values, and links that survive a restart or a killed process.

tests/test_postgres.py runs these same tests against a real PostgreSQL (it overrides the
``settings`` fixture), so every test here goes through ``settings`` and the API only.
"""

from __future__ import annotations

import re
import signal
import subprocess
from pathlib import Path

import httpx
import jax
import numpy as np
import pytest
from fastapi.testclient import TestClient
from helpers import create, serve_process

from app.main import create_app
from app.workspaces import COOKIE_NAME

ROOT = Path(__file__).resolve().parent.parent
MLP = {
    "kind": "eqx.nn.MLP",
    "params": {"in_size": 2, "out_size": 1, "width_size": 4, "depth": 2, "seed": 3},
}
SAME_ORIGIN = {"Origin": "http://testserver", "Sec-Fetch-Site": "same-origin"}


@pytest.fixture
def users(app):
    with (
        TestClient(app, base_url="http://testserver") as alice,
        TestClient(app, base_url="http://testserver") as bob,
    ):
        yield alice, bob


def share(client, module_id: str) -> dict:
    response = client.post(f"/api/modules/{module_id}/share")
    assert response.status_code == 201, response.text
    return response.json()


def leaf_bytes(app, client, module_id: str) -> dict[str, bytes]:
    """Each array leaf's raw bytes, read from the stored module."""
    store = app.state.services.store
    record = store.get(client.cookies[COOKIE_NAME], module_id)
    assert record is not None
    model = store.load(record)
    return {
        jax.tree_util.keystr(path): np.asarray(leaf).tobytes()
        for path, leaf in jax.tree_util.tree_flatten_with_path(model)[0]
        if hasattr(leaf, "dtype")
    }


def train_in_place(app, client, module_id: str) -> None:
    """Give the module parameters of its own, as the end of a training job does."""
    store = app.state.services.store
    record = store.get(client.cookies[COOKIE_NAME], module_id)
    model = store.load(record)
    key = jax.random.PRNGKey(7)
    trained = jax.tree_util.tree_map(
        lambda a: a + jax.random.normal(key, a.shape, a.dtype) / 3 if hasattr(a, "dtype") else a,
        model,
    )
    store.set_leaves(record, trained)


def test_share_answers_201_with_the_link(users):
    alice, _ = users
    module = create(alice)
    body = share(alice, module["id"])
    assert set(body) >= {"share_id", "url"}
    assert re.fullmatch(r"[A-Za-z0-9_-]{16,32}", body["share_id"])
    assert body["url"] == f"/s/{body['share_id']}"
    # each share is its own snapshot
    assert share(alice, module["id"])["share_id"] != body["share_id"]


def test_the_shared_module_has_the_module_s_fields_and_its_leaves(users):
    alice, bob = users
    module = create(alice)
    link = share(alice, module["id"])
    response = bob.get(f"/api/shared/{link['share_id']}")  # anyone with the link
    assert response.status_code == 200, response.text
    shared = response.json()
    for key in ("kind", "params", "tree", "code"):
        assert shared[key] == module[key], key
    assert shared["share_id"] == link["share_id"]
    assert set(shared["leaves"]) == {".weight", ".bias"}
    weight = alice.get(f"/api/modules/{module['id']}/leaf", params={"path": ".weight"}).json()
    assert shared["leaves"][".weight"] == weight["values"]
    assert np.asarray(shared["leaves"][".weight"]).shape == (2, 3)
    assert shared["truncated"] == []


def test_a_fork_holds_exactly_the_shared_values(app, users):
    alice, bob = users
    module = create(alice, MLP)
    train_in_place(app, alice, module["id"])
    link = share(alice, module["id"])
    original = leaf_bytes(app, alice, module["id"])

    response = bob.post(f"/api/shared/{link['share_id']}/fork")
    assert response.status_code == 201, response.text
    fork = response.json()
    assert fork["id"] != module["id"]
    assert fork["kind"] == MLP["kind"] and fork["params"] == module["params"]
    assert leaf_bytes(app, bob, fork["id"]) == original  # bitwise
    # the fork is bob's own: he reads it, alice does not
    assert bob.get(f"/api/modules/{fork['id']}").status_code == 200
    assert alice.get(f"/api/modules/{fork['id']}").status_code == 404
    shared = bob.get(f"/api/shared/{link['share_id']}").json()
    leaf = bob.get(f"/api/modules/{fork['id']}/leaf", params={"path": ".layers[0].weight"})
    assert leaf.json()["values"] == shared["leaves"][".layers[0].weight"]


def test_a_share_is_a_snapshot(app, users):
    alice, bob = users
    module = create(alice)
    link = share(alice, module["id"])
    before = bob.get(f"/api/shared/{link['share_id']}").json()["leaves"]
    train_in_place(app, alice, module["id"])
    assert bob.get(f"/api/shared/{link['share_id']}").json()["leaves"] == before
    later = share(alice, module["id"])
    assert bob.get(f"/api/shared/{later['share_id']}").json()["leaves"] != before


@pytest.mark.parametrize(
    "share_id", ["nope", "a" * 16, "a" * 33, "../../etc/passwd", "%00", "x" * 5000, "é"]
)
def test_unknown_shares_are_404(users, share_id):
    alice, _ = users
    assert alice.get(f"/api/shared/{share_id}").status_code in (404, 422)
    assert alice.post(f"/api/shared/{share_id}/fork").status_code in (404, 422)
    assert alice.get(f"/s/{share_id}").status_code == 404


def test_the_shared_page_is_a_read_only_view_with_a_fork_form(users):
    alice, bob = users
    module = create(alice)
    link = share(alice, module["id"])
    page = bob.get(link["url"])
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in page.headers["content-security-policy"]
    html = page.text
    assert "weight" in html and "bias" in html and "f32[2,3]" in html
    form = re.search(r"<form[^>]*>", html, re.S).group(0)
    assert 'method="post"' in form.lower()
    assert f'action="/s/{link["share_id"]}/fork"' in form
    assert "Fork into my workspace" in html
    # read-only: no control that changes the shared module
    assert f"/api/modules/{module['id']}" not in html
    # nothing from another host
    assert not re.search(r"""(src|href)=["'](https?:)?//""", html)


def test_the_fork_form_lands_on_the_new_module(app, users):
    alice, bob = users
    module = create(alice)
    link = share(alice, module["id"])
    response = bob.post(f"{link['url']}/fork", headers=SAME_ORIGIN, follow_redirects=False)
    assert response.status_code == 303
    location = response.headers["location"]
    assert location.startswith("/")
    fork_id = next(
        r.id for r in app.state.services.store.list(bob.cookies[COOKIE_NAME]) if r.id in location
    )
    assert leaf_bytes(app, bob, fork_id) == leaf_bytes(app, alice, module["id"])
    assert bob.get(location).status_code == 200


@pytest.mark.parametrize(
    "headers", [{"Origin": "https://evil.example"}, {"Sec-Fetch-Site": "cross-site"}]
)
def test_the_fork_form_refuses_cross_site_posts(app, users, headers):
    alice, bob = users
    link = share(alice, create(alice)["id"])
    before = len(app.state.services.store.list(bob.cookies.get(COOKIE_NAME) or "none"))
    response = bob.post(f"{link['url']}/fork", headers=headers, follow_redirects=False)
    assert response.status_code == 403
    after = len(app.state.services.store.list(bob.cookies.get(COOKIE_NAME) or "none"))
    assert after == before


def test_the_module_page_has_a_share_panel(users):
    alice, _ = users
    module = create(alice)
    page = alice.get(f"/m/{module['id']}")
    assert page.status_code == 200
    assert 'id="share-panel"' in page.text
    assert f"/api/modules/{module['id']}/share" in page.text


def test_the_share_button_answers_html_for_htmx(users):
    alice, _ = users
    module = create(alice)
    response = alice.post(
        f"/api/modules/{module['id']}/share", headers={"HX-Request": "true", **SAME_ORIGIN}
    )
    assert response.status_code == 201
    assert response.headers["content-type"].startswith("text/html")
    share_id = re.search(r"/s/([A-Za-z0-9_-]+)", response.text).group(1)
    assert "Copy" in response.text
    assert alice.get(f"/api/shared/{share_id}").status_code == 200


def test_shares_survive_a_restart(settings):
    app = create_app(settings)
    with TestClient(app) as alice:
        module = create(alice, MLP)
        train_in_place(app, alice, module["id"])
        link = share(alice, module["id"])
        before = alice.get(f"/api/shared/{link['share_id']}").json()
    app.state.services.engine.dispose()

    again = create_app(settings)
    with TestClient(again) as stranger:
        after = stranger.get(f"/api/shared/{link['share_id']}")
        assert after.status_code == 200
        assert after.json() == before
        fork = stranger.post(f"/api/shared/{link['share_id']}/fork")
        assert fork.status_code == 201


# A real server process, killed ---------------------------------------------------------------


def _serve(settings) -> tuple[subprocess.Popen, str]:
    more = {"database_url": settings.database_url} if settings.database_url else {}
    return serve_process(data_dir=str(settings.data_dir), **more)


@pytest.mark.slow  # end to end: a real server process, killed
def test_nothing_is_lost_when_the_server_is_killed(settings):
    process, base = _serve(settings)
    try:
        with httpx.Client(base_url=base, timeout=30) as user:
            module = user.post("/api/modules", json=MLP)
            assert module.status_code == 201, module.text
            module = module.json()
            link = user.post(f"/api/modules/{module['id']}/share")
            assert link.status_code == 201
            process.send_signal(signal.SIGKILL)  # right after the answer: no clean shutdown
            process.wait(timeout=10)
            cookie = user.cookies[COOKIE_NAME]
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=10)

    process, base = _serve(settings)
    try:
        with httpx.Client(base_url=base, timeout=30) as user:
            shared = user.get(link.json()["url"].replace("/s/", "/api/shared/"))
            assert shared.status_code == 200, shared.text
            assert shared.json()["tree"] == module["tree"]
            again = user.get(
                f"/api/modules/{module['id']}", headers={"Cookie": f"{COOKIE_NAME}={cookie}"}
            )
            assert again.status_code == 200
            assert again.json()["tree"] == module["tree"]
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()


# In a real browser ---------------------------------------------------------------------------


@pytest.mark.browser
def test_share_copy_open_and_fork_in_a_browser(browser, page, page_probe, live_server):
    page.goto("/")
    page.get_by_role("button", name="Share this module").click()
    link = page.locator(".share-url")
    link.wait_for()
    url = link.input_value()
    assert re.fullmatch(re.escape(live_server.url) + r"/s/[A-Za-z0-9_-]+", url)
    page.get_by_role("button", name="Copy link").click()
    page.get_by_role("button", name=re.compile("Copied|Press Ctrl")).wait_for()
    page_probe.assert_clean()

    # someone else opens the link, sees the read-only tree, and forks it
    context = browser.new_context(base_url=live_server.url)
    try:
        other = context.new_page()
        errors: list[str] = []
        other.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        other.goto(url)
        assert other.get_by_role("heading", name="Its pytree").is_visible()
        assert other.get_by_text("f32[2,3]").is_visible()
        other.get_by_role("button", name="Fork into my workspace").click()
        other.wait_for_url(re.compile(r"/m/[A-Za-z0-9_-]+$"))
        assert other.locator("#share-panel").is_visible()
        assert errors == []
    finally:
        context.close()
