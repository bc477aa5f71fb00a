"""Security headers, cross-site request refusal and the body-size limit.

The middleware is tested on a small app of its own (so these tests hold whatever the routes
are), and then on the playground itself: its pages, API answers, errors and static files.
"""

from __future__ import annotations

import pytest
from fastapi import FastAPI, Request
from fastapi.testclient import TestClient

from app.security import SecurityMiddleware
from app.settings import Settings
from app.workspaces import WorkspaceMiddleware

LIMIT = 1000


@pytest.fixture
def mini() -> TestClient:
    app = FastAPI()

    @app.get("/thing")
    def thing(request: Request) -> dict:
        return {"workspace": request.state.workspace}

    @app.post("/echo")
    async def echo(request: Request) -> dict:
        body = await request.body()
        return {"bytes": len(body)}

    @app.post("/form")
    async def form(request: Request) -> dict:
        return {"ok": True}

    app.add_middleware(WorkspaceMiddleware)
    app.add_middleware(
        SecurityMiddleware, settings=Settings(max_body_bytes=LIMIT, allowed_hosts=["testserver"])
    )
    with TestClient(app, base_url="http://testserver") as client:
        yield client


def assert_security_headers(response) -> None:
    csp = response.headers["content-security-policy"]
    directives = dict(
        (part.strip().split(" ", 1) + [""])[:2] for part in csp.split(";") if part.strip()
    )
    assert directives["default-src"] == "'self'"
    assert directives["frame-ancestors"] == "'none'"
    assert directives["object-src"] == "'none'"
    for name, sources in directives.items():
        # no remote source: only 'self', 'none', data:/blob: for images, inline styles
        for source in sources.split():
            assert source in {"'self'", "'none'", "'unsafe-inline'", "data:", "blob:"}, (
                name,
                source,
            )
    assert "'unsafe-inline'" not in directives["script-src"]
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["x-frame-options"] == "DENY"


def test_every_answer_carries_the_security_headers(mini):
    assert_security_headers(mini.get("/thing"))
    assert_security_headers(mini.get("/missing"))
    assert_security_headers(mini.post("/echo", content=b"x" * (LIMIT + 1)))
    assert_security_headers(mini.post("/form", headers={"Origin": "https://evil.example"}))


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": "https://evil.example"},
        {"Origin": "http://testserver.evil.example"},
        {"Origin": "null"},
        {"Origin": "evil"},
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "same-site"},
        {"Sec-Fetch-Site": "cross-site", "Origin": "http://testserver"},
    ],
)
@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE"])
def test_cross_site_writes_are_refused(mini, headers, method):
    response = mini.request(method, "/form", headers=headers)
    assert response.status_code == 403
    assert "Cross-site" in response.json()["detail"]


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Origin": "http://testserver"},
        {"Origin": "HTTP://TESTSERVER"},
        {"Sec-Fetch-Site": "same-origin", "Origin": "http://testserver"},
        {"Sec-Fetch-Site": "none"},
    ],
)
def test_same_origin_writes_pass(mini, headers):
    response = mini.post("/form", headers=headers)
    assert response.status_code == 200, response.text


def test_cross_site_reads_are_answered(mini):
    # a read changes nothing; what protects it is that another site cannot read the answer
    response = mini.get("/thing", headers={"Origin": "https://evil.example"})
    assert response.status_code == 200
    assert "access-control-allow-origin" not in response.headers


def test_a_declared_oversized_body_is_refused_before_it_is_read(mini):
    response = mini.post("/echo", content=b"x" * (LIMIT + 1))
    assert response.status_code == 413
    detail = response.json()["detail"]
    assert f"{LIMIT + 1} bytes" in detail and f"max_body_bytes={LIMIT}" in detail
    assert mini.post("/echo", content=b"x" * LIMIT).json() == {"bytes": LIMIT}


def test_refusals_before_any_router_are_fragments_for_htmx(mini):
    # the page puts them where the answer goes (static/playground.js): plain words, no JSON
    for content in (b"x" * (LIMIT + 1), (b"y" * 600 for _ in range(1000))):
        response = mini.post("/echo", content=content, headers={"HX-Request": "true"})
        assert response.status_code == 413
        assert response.headers["content-type"].startswith("text/html")
        assert response.text.startswith('<div class="error" role="alert"><strong>')
        assert "That is too large." in response.text and f"limit is {LIMIT} bytes" in response.text
        assert "{" not in response.text and "413" not in response.text


def test_a_streamed_oversized_body_is_cut_off(mini):
    sent = 0

    def chunks():
        nonlocal sent
        for _ in range(1000):
            sent += 600
            yield b"y" * 600

    response = mini.post("/echo", content=chunks())
    assert response.status_code == 413
    assert f"max_body_bytes={LIMIT}" in response.json()["detail"]


def test_a_bad_content_length_is_a_400(mini):
    response = mini.post("/echo", content=b"{}", headers={"Content-Length": "abc"})
    assert response.status_code in (400, 413)


# The playground itself -------------------------------------------------------------------------


def test_the_playground_pages_and_api_carry_the_headers(client):
    for url in ("/", "/api/health", "/api/modules/nope", "/static/vendor/htmx/LICENSE", "/docs"):
        response = client.get(url)
        assert response.status_code < 500, url
        assert_security_headers(response)


def test_the_playground_refuses_cross_site_posts(client):
    body = {"kind": "library.Linear", "params": {"in_dim": 2, "out_dim": 3, "seed": 0}}
    evil = client.post("/api/modules", json=body, headers={"Origin": "https://evil.example"})
    assert evil.status_code == 403
    cross = client.post("/api/modules", json=body, headers={"Sec-Fetch-Site": "cross-site"})
    assert cross.status_code == 403
    same = client.post(
        "/api/modules",
        json=body,
        headers={"Origin": "http://testserver", "Sec-Fetch-Site": "same-origin"},
    )
    assert same.status_code == 201, same.text


def test_the_playground_limits_bodies(settings, tmp_path):
    from app.main import create_app
    from app.settings import Settings

    app = create_app(Settings(data_dir=tmp_path / "small", max_body_bytes=500))
    with TestClient(app) as client:
        body = {"kind": "custom", "params": {"name": "Big", "call": "x" + " + x" * 300}}
        response = client.post("/api/modules", json=body)
        assert response.status_code == 413
        assert "max_body_bytes=500" in response.json()["detail"]


# Trusted hosts and the public URL --------------------------------------------------------------


def make_client(tmp_path, **settings) -> TestClient:
    from app.main import create_app

    app = create_app(Settings(data_dir=tmp_path / "data", **settings))
    return TestClient(app, base_url="http://testserver")


def test_the_default_hosts_are_the_loopback_names(monkeypatch):
    monkeypatch.delenv("PLAYGROUND_ALLOWED_HOSTS")
    assert Settings().allowed_hosts == ["localhost", "127.0.0.1", "::1"]
    monkeypatch.setenv("PLAYGROUND_ALLOWED_HOSTS", "play.example.org, 10.0.0.5:8000")
    assert Settings().allowed_hosts == ["play.example.org", "10.0.0.5:8000"]


@pytest.mark.parametrize(
    ("host", "allowed"),
    [
        ("localhost", True),
        ("localhost:8000", True),
        ("127.0.0.1:1234", True),
        ("[::1]:8000", True),
        ("LOCALHOST.", True),
        ("evil.example", False),
        ("localhost.evil.example", False),
        ("127.0.0.1.nip.io", False),
        ("", False),
        ("localhost:8000:1", False),
    ],
)
def test_only_allowed_hosts_are_answered(tmp_path, host, allowed):
    with make_client(tmp_path, allowed_hosts=["localhost", "127.0.0.1", "::1"]) as client:
        response = client.get("/api/health", headers={"Host": host})
        if allowed:
            assert response.status_code == 200, response.text
        else:
            assert response.status_code == 400
            assert "PLAYGROUND_ALLOWED_HOSTS" in response.json()["detail"]
            assert_security_headers(response)


def test_a_port_in_an_allowed_host_must_match(tmp_path):
    with make_client(tmp_path, allowed_hosts=["testserver", "box.lan:8000"]) as client:
        assert client.get("/api/health", headers={"Host": "box.lan:8000"}).status_code == 200
        assert client.get("/api/health", headers={"Host": "box.lan:9000"}).status_code == 400


def test_dns_rebinding_cannot_drive_the_server(tmp_path):
    # a page at evil.example whose name resolves to this server: Host and Origin agree, which
    # the old check (Origin == Host) took for same-origin
    with make_client(tmp_path, allowed_hosts=["testserver"]) as client:
        evil = {"Host": "evil.example", "Origin": "http://evil.example"}
        body = {"kind": "library.Linear", "params": {"in_dim": 2, "out_dim": 3}}
        assert client.post("/api/modules", json=body, headers=evil).status_code == 400
        assert client.get("/", headers=evil).status_code == 400


def test_the_origin_is_compared_with_the_allowed_hosts_not_the_host(tmp_path):
    body = {"kind": "library.Linear", "params": {"in_dim": 2, "out_dim": 3}}
    with make_client(tmp_path, allowed_hosts=["testserver", "other.lan"]) as client:
        trusted = client.post("/api/modules", json=body, headers={"Origin": "http://other.lan"})
        assert trusted.status_code == 201, trusted.text
        # an Origin that names no allowed host is refused
        stranger = client.post("/api/modules", json=body, headers={"Origin": "http://third.lan"})
        assert stranger.status_code == 403


def test_share_links_use_the_public_url(tmp_path):
    public = "https://play.example.org"
    with make_client(tmp_path, allowed_hosts=["testserver"], public_url=public) as client:
        module = client.post(
            "/api/modules", json={"kind": "library.Linear", "params": {"in_dim": 2, "out_dim": 3}}
        ).json()["id"]
        share = client.post(f"/api/modules/{module}/share").json()
        assert share["link"] == f"{public}/s/{share['share_id']}"
        panel = client.post(f"/api/modules/{module}/share", headers={"HX-Request": "true"})
        assert f"{public}/s/" in panel.text and "testserver" not in panel.text
        # the public URL's host is allowed without being listed
        assert client.get("/api/health", headers={"Host": "play.example.org"}).status_code == 200


def test_share_links_without_a_public_url_use_the_checked_host(tmp_path):
    with make_client(tmp_path, allowed_hosts=["testserver"]) as client:
        module = client.post(
            "/api/modules", json={"kind": "library.Linear", "params": {"in_dim": 2, "out_dim": 3}}
        ).json()["id"]
        share = client.post(f"/api/modules/{module}/share").json()
        assert share["link"] == f"http://testserver/s/{share['share_id']}"
