"""Lessons and rooms in a real headless Chromium: the presenter view at 1280x720 and at 150%
zoom (853x480 CSS pixels) with nothing wider than the screen, the keys that move a room, and a
participant in another browser context that follows the presenter, goes at their own pace and
catches up in one click. Screenshots go to ``screenshots/`` for a person to look at.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from conftest import PageProbe
from htmx_settle import wait_for_htmx_settled
from playwright.sync_api import expect

pytestmark = pytest.mark.browser

SCREENSHOTS = Path(__file__).resolve().parent.parent / "screenshots"


def open_page(browser, server, width: int, height: int, scale: float = 1.0):
    """A page in a context of its own (its own cookie, so its own workspace); requests to other
    hosts are blocked and recorded."""
    context = browser.new_context(
        viewport={"width": width, "height": height},
        device_scale_factor=scale,
        base_url=server.url,
    )
    page = context.new_page()
    page.set_default_timeout(45_000)
    probe = PageProbe()

    def route(route_request):
        url = route_request.request.url
        if url.startswith(("http://127.0.0.1:", "data:", "blob:")):
            route_request.continue_()
        else:
            probe.foreign_requests.append(url)
            route_request.abort()

    page.route("**/*", route)
    page.on("console", lambda m: probe.console_errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda error: probe.page_errors.append(str(error)))
    return context, page, probe


def no_sideways_scroll(page) -> None:
    width, inner = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
    assert width <= inner, f"the page is {width} px wide in a {inner} px window"


def shot(page, name: str, full_page: bool = False) -> None:
    SCREENSHOTS.mkdir(exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=full_page)


def start_room(page, lesson_title: str) -> str:
    """Start a room from the lessons page; the presenter view opens. Its join code."""
    page.goto("/lessons")
    card = page.locator("section.lesson-card", has_text=lesson_title)
    card.get_by_role("button", name="Start a room with this lesson").click()
    page.wait_for_url(re.compile(r"/lessons/[a-z-]+/1/present\?room="))
    assert "#key=" not in page.url  # the key left the address bar for localStorage
    page.locator("#room-stats .room-counts").wait_for()
    return page.locator(".room-code").inner_text().strip()


def run_step(page) -> None:
    wait_for_htmx_settled(page)
    page.locator("#lesson-run-button").click()
    page.locator(
        "#lesson-result .run-status, #lesson-result .train-job, #lesson-result .dynamics-summary"
    ).first.wait_for()
    wait_for_htmx_settled(page)


@pytest.mark.parametrize(
    ("size", "scale"), [((1280, 720), 1.0), ((853, 480), 1.5)], ids=["1280x720", "150%"]
)
def test_the_presenter_view_fits_the_projector(browser, live_server, size, scale):
    context, page, probe = open_page(browser, live_server, *size, scale)
    code = start_room(page, "vmap adds an axis")
    assert re.fullmatch(r"[A-Z2-9]{6}", code)
    assert page.locator(".room-qr svg path").count() >= 1
    assert page.locator(".room-url").inner_text().endswith(f"/rooms/{code}")
    # the text, the tree and the result side by side, and nothing else: no site header
    assert page.locator(".site-header").count() == 0
    assert page.locator(".lesson-text").is_visible() and page.locator(".lesson-tree").is_visible()
    run_step(page)
    status = page.locator("#lesson-result .run-status").inner_text()
    assert "compiled now" in status or "reused" in status
    assert "Their mean is the batch gradient" in page.locator("#lesson-result").inner_text()
    no_sideways_scroll(page)
    name = "presenter_1280x720" if scale == 1.0 else "presenter_1280x720_zoom150"
    shot(page, name)
    shot(page, name + "_full", full_page=True)
    if scale == 1.0:  # on a projector-shaped screen the three columns share one row
        boxes = [
            page.locator(s).bounding_box()
            for s in (".lesson-text", ".lesson-tree", ".lesson-result")
        ]
        assert boxes[0]["x"] < boxes[1]["x"] < boxes[2]["x"]
        assert max(b["y"] for b in boxes) - min(b["y"] for b in boxes) < 2
    # the right arrow moves the room (the presenter's key travels from localStorage)
    page.keyboard.press("ArrowRight")
    page.wait_for_url(re.compile(r"/lessons/vmap/2/present\?room="))
    assert page.locator("#step-title").inner_text() == "vmap over a forward pass"
    state = page.request.get(f"/api/rooms/{code}").json()
    assert state["step"] == 2
    page.keyboard.press("ArrowLeft")
    page.wait_for_url(re.compile(r"/lessons/vmap/1/present\?room="))
    no_sideways_scroll(page)
    probe.assert_clean()
    context.close()


def test_a_participant_follows_the_presenter_and_catches_up(browser, live_server):
    presenter_context, presenter, presenter_probe = open_page(browser, live_server, 1280, 720)
    code = start_room(presenter, "jit compiles once")

    context, learner, probe = open_page(browser, live_server, 390, 844, 2.0)
    learner.goto(f"/rooms/{code}")
    no_sideways_scroll(learner)
    shot(learner, "room_join_390")
    learner.get_by_label(re.compile("Your name in the room")).fill("Ada")
    learner.get_by_role("button", name="Join").click()
    learner.wait_for_url(re.compile(r"/lessons/jit/1$"))
    banner = learner.locator(".room-banner")
    assert "you are Ada" in banner.inner_text()
    assert learner.locator("#room-follow").is_checked()
    assert learner.locator("#room-catch-up").is_hidden()
    run_step(learner)
    assert "compiled now" in learner.locator("#lesson-result .run-status").inner_text()

    # the presenter sees one participant who reached the step and ran it
    presenter.locator('[data-testid="room-joined"]', has_text="1").wait_for(timeout=10_000)
    presenter.locator('[data-testid="room-ran"]', has_text="1").wait_for(timeout=10_000)

    # the presenter moves: the participant's page follows
    presenter.keyboard.press("ArrowRight")
    presenter.wait_for_url(re.compile(r"/lessons/jit/2/present"))
    learner.wait_for_url(re.compile(r"/lessons/jit/2$"), timeout=15_000)
    assert learner.locator("#step-title").inner_text() == "A new input shape retraces"
    learner.locator(".lesson-question").wait_for()
    no_sideways_scroll(learner)
    shot(learner, "participant_390")
    presenter.locator('[data-testid="room-reached"]', has_text="1").wait_for(timeout=10_000)

    # at their own pace: no more following, a link to catch up instead
    learner.locator("#room-follow").uncheck()
    presenter.get_by_role("link", name="Next →").click()
    presenter.wait_for_url(re.compile(r"/lessons/jit/3/present"))
    catch_up = learner.locator("#room-catch-up")
    catch_up.wait_for(state="visible", timeout=15_000)
    assert learner.url.endswith("/lessons/jit/2")
    assert catch_up.inner_text() == "Catch up: go to step 3"
    catch_up.click()
    learner.wait_for_url(re.compile(r"/lessons/jit/3$"))
    assert not learner.locator("#room-follow").is_checked()  # the choice is remembered
    assert learner.locator("#room-catch-up").is_hidden()
    no_sideways_scroll(learner)
    shot(presenter, "presenter_room_step3")
    presenter_probe.assert_clean()
    probe.assert_clean()
    context.close()
    presenter_context.close()


def test_without_the_key_the_presenter_view_says_the_room_did_not_move(browser, live_server):
    owner_context, owner, _ = open_page(browser, live_server, 1280, 720)
    start_room(owner, "A model is a pytree")
    url = owner.url
    context, other, _ = open_page(browser, live_server, 1280, 720)
    other.goto(url)  # the link without its key, in another browser
    other.keyboard.press("ArrowRight")
    message = other.locator("#room-move-error")
    message.wait_for(state="visible")
    assert "presenter key" in message.inner_text()
    assert other.url == url
    context.close()
    owner_context.close()


def test_the_presenter_makes_the_room_compile_again_from_scratch(browser, live_server):
    context, page, probe = open_page(browser, live_server, 1280, 720)
    start_room(page, "jit compiles once")
    run_step(page)  # compiled now, or earlier on this server by another test
    run_step(page)
    expect(page.locator("#lesson-result .run-status")).to_contain_text("reused")
    page.get_by_role("button", name="Compile again from scratch").click()
    page.get_by_text("the next run of each function in this room compiles again").wait_for()
    run_step(page)
    expect(page.locator("#lesson-result .run-status")).to_contain_text("compiled now")
    no_sideways_scroll(page)
    shot(page, "presenter_compile_again")
    probe.assert_clean()
    context.close()
