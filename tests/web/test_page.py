"""The archive's web page in a real browser: a real server (uvicorn, in a thread) over a SQLite archive of the
12 example images, driven by Playwright on Debian's Chromium (tests/servers.py).

It browses the grid, filters by a class (and restores the filter from the URL), opens a card's detail view
with the keyboard, switches the picture to the heatmap, is refused a correction without the token, enters
the token, corrects the label and checks the database: a corrections row, the curator's label set, the
model's label unchanged. Screenshots of the grid and the detail view go to tmp_path; with
MARSVISION_SCREENSHOT_DOCS=1 the grid is also written to docs/archive.png (CI leaves the repository alone).
"""

from __future__ import annotations

import io
import os
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TOKEN = "page-test-token"  # archive_server's (conftest.py)

NOTE = "tyre tracks in regolith, no wheel in view"
PICTURE_LOADED = (
    "(() => { const i = document.querySelector('#detail-img'); "
    "return i.getAttribute('src').includes(%r) && i.complete && i.naturalWidth > 0; })()"
)
THUMBNAILS_LOADED = "[...document.querySelectorAll('#grid img')].every(i => i.complete && i.naturalWidth > 0)"


@pytest.mark.slow
def test_browse_filter_open_heatmap_and_correct(browser_page, archive_server, tmp_path):
    import httpx
    from playwright.sync_api import expect
    from sqlalchemy import select
    from sqlalchemy.orm import Session

    from marsvision.archive.db import Correction, Image

    base, engine = archive_server
    page = browser_page
    page.set_viewport_size({"width": 1280, "height": 800})
    page_errors: list[str] = []
    page.on("pageerror", lambda e: page_errors.append(str(e)))
    cards = page.locator("#grid .card")
    grid_idle = page.locator("#grid:not([aria-busy])")

    # The grid: 12 cards, each with a label and a confidence, the model version in the header.
    page.goto(f"{base}/")
    expect(cards).to_have_count(12)
    expect(page.locator("#page-info")).to_have_text("Page 1 of 1 · 12 images")
    expect(page.locator("#server-info")).to_contain_text(re.compile(r"Model \S+ · 24 classes"))
    expect(page.locator("#tab-browse")).to_have_attribute("aria-selected", "true")
    expect(page.locator("#tab-review")).to_have_count(1)  # the Review view's hook
    expect(cards.first.locator(".card-conf")).to_have_text(re.compile(r"^[<>]?\d+(\.\d)?%$"))
    page.wait_for_function(THUMBNAILS_LOADED)
    page.screenshot(path=str(tmp_path / "grid.png"))

    # Filter by class: only wheel cards, the filter in the URL and restored from it.
    page.select_option("#f-label", "wheel")
    expect(page).to_have_url(re.compile(r"\?(.*&)?label=wheel(&|$)"))
    expect(cards).to_have_count(1)
    expect(grid_idle).to_have_count(1)
    assert [c.get_attribute("data-label") for c in cards.all()] == ["wheel"]
    assert page.get_attribute("#export-csv", "href") == "/api/export?label=wheel&format=csv"
    page.reload()
    expect(page.locator("#f-label")).to_have_value("wheel")
    expect(cards).to_have_count(1)
    card = cards.first
    image_id = card.get_attribute("data-id")

    # The detail view, opened from the keyboard: picture, top-k, file-name fields, similar images.
    card.focus()
    page.keyboard.press("Enter")
    dialog = page.locator("#detail")
    expect(dialog).to_be_visible()
    expect(page.locator("#detail-title")).to_have_text(re.compile(r"^\d{4}MH\w+_DRCL\.JPG$"))
    expect(page.locator("#detail-topk li")).to_have_count(5)
    expect(page.locator("#detail-topk li.top .topk-label")).to_have_text("wheel")
    expect(page.locator("#detail-meta")).to_contain_text("MAHLI (MH)")
    expect(page.locator("#detail-similar .sim")).to_have_count(11)
    page.wait_for_function(PICTURE_LOADED % f"/api/images/{image_id}/file")

    # The heatmap toggle switches the picture to the heatmap, which loads.
    page.click("#heatmap-toggle")
    expect(page.locator("#heatmap-toggle")).to_have_attribute("aria-pressed", "true")
    expect(page.locator("#detail-img")).to_have_attribute("src", re.compile(rf"/api/images/{image_id}/heatmap\?"))
    page.wait_for_function(PICTURE_LOADED % "/heatmap", timeout=20_000)
    expect(page.locator("#detail-status")).to_contain_text("Heatmap")
    page.screenshot(path=str(tmp_path / "detail.png"))

    # A correction without the token is refused, and the server's reason is shown.
    page.select_option("#correct-label", "ground")
    page.fill("#correct-note", NOTE)
    page.fill("#correct-author", "page test")
    page.click("#correct-submit")
    expect(page.locator("#detail-status")).to_contain_text("(401): this write needs the header")

    # With the token it is stored; the detail and the card show the curator's label.
    page.fill("#detail-token", TOKEN)
    page.click("#correct-submit")
    expect(page.locator("#detail-status")).to_contain_text('Saved: the curator\'s label is now "ground"')
    expect(page.locator("#detail-history tbody tr")).to_have_count(1)
    expect(page.locator("#detail-history")).to_contain_text(NOTE)
    expect(page.locator(f'#grid .card[data-id="{image_id}"] .badge.reviewed')).to_have_text("reviewed: ground")
    assert page.evaluate("sessionStorage.getItem('marsvision.token')") == TOKEN
    expect(page.locator("#token")).to_have_value(TOKEN)

    # Escape closes the detail view and gives the focus back to the card.
    page.keyboard.press("Escape")
    expect(dialog).to_be_hidden()
    expect(page.locator(f'#grid .card[data-id="{image_id}"]')).to_be_focused()
    expect(page).not_to_have_url(re.compile(r"image="))

    # Stored: a corrections row and the curator's label, the model's label untouched.
    detail = httpx.get(f"{base}/api/images/{image_id}").json()
    assert (detail["label"], detail["reviewed_label"]) == ("wheel", "ground")
    assert [(c["label"], c["note"], c["author"], c["model_label"]) for c in detail["corrections"]] == [
        ("ground", NOTE, "page test", "wheel")
    ]
    with Session(engine) as s:
        image = s.get(Image, int(image_id))
        assert (image.label, image.reviewed_label) == ("wheel", "ground") and image.reviewed_at is not None
        assert [(c.image_id, c.label, c.model_label) for c in s.scalars(select(Correction))] == [
            (int(image_id), "ground", "wheel")
        ]

    if os.environ.get("MARSVISION_SCREENSHOT_DOCS") == "1":  # the README's picture: the whole grid, one reviewed
        page.goto(f"{base}/")
        expect(cards).to_have_count(12)
        page.wait_for_function(THUMBNAILS_LOADED)
        # 256 colours: a third of the bytes of the screenshot, and it still reads as the page.
        from PIL import Image as Picture

        shot = Picture.open(io.BytesIO(page.screenshot())).convert("RGB")
        shot.quantize(256, method=Picture.Quantize.FASTOCTREE).save(REPO / "docs" / "archive.png", optimize=True)
    assert not page_errors, page_errors


@pytest.mark.slow
def test_the_page_works_under_its_content_security_policy(chromium_browser, archive_server):
    """The CSP enforced (no bypass): the grid fills, a picture opens, and the browser reports no violation."""
    from playwright.sync_api import expect

    base, _ = archive_server
    context = chromium_browser.new_context()
    try:
        page = context.new_page()
        blocked: list[str] = []
        page.on("console", lambda m: blocked.append(m.text) if "Content Security Policy" in m.text else None)
        page.on("pageerror", lambda e: blocked.append(str(e)))
        response = page.goto(f"{base}/")
        assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
        cards = page.locator("#grid .card")
        expect(cards).to_have_count(12)
        expect(page.locator("#grid img").first).to_have_js_property("complete", True)
        cards.first.focus()
        page.keyboard.press("Enter")
        expect(page.locator("#detail")).to_be_visible()
        expect(page.locator("#detail-img")).to_have_js_property("complete", True)
        expect(page.locator("#detail-similar .sim")).to_have_count(11)
        page.wait_for_timeout(500)
        assert blocked == []
    finally:
        context.close()
