"""``/docs`` in a real headless Chromium: Swagger UI from this server, under the page's
Content-Security-Policy, with every endpoint of the JSON API and nothing fetched elsewhere."""

from __future__ import annotations

import re

import pytest

pytestmark = pytest.mark.browser


def test_the_api_docs_render_from_this_server(page, page_probe):
    page.goto("/docs")
    page.wait_for_selector("#swagger-ui .opblock-summary-path")
    paths = page.locator("#swagger-ui .opblock-summary-path").all_inner_texts()
    assert "/api/modules/{module_id}/run" in paths
    assert "/api/modules/{module_id}/train" in paths
    assert "/api/shared/{share_id}/fork" in paths
    page.get_by_role("link", name="Back to the playground").click()
    page.wait_for_url(re.compile(r"/m/"))
    page_probe.assert_clean()


def test_the_api_docs_page_names_only_local_assets(client):
    html = client.get("/docs").text
    sources = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert sources and all(s.startswith("/") for s in sources), sources
    assert "<script>" not in html  # no inline script: the CSP forbids them
    assert client.get("/redoc").status_code == 404
