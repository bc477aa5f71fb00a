"""Waiting for htmx in the browser tests.

htmx inserts a swapped fragment at once but wires its elements (``hx-post``, triggers) only when
it settles, 20 ms later. A test that acts on a new element in between (choosing in a select,
clicking a button) would send nothing, so it waits for the settle first.
"""

from __future__ import annotations

SWAP_IN_PROGRESS = ".htmx-swapping, .htmx-added, .htmx-settling"


def wait_for_htmx_settled(page) -> None:
    """Return once no element is being swapped in or settled (a locator wait, so no script is
    evaluated in the page and its CSP holds)."""
    page.locator(SWAP_IN_PROGRESS).first.wait_for(state="detached")
