"""The archive page's Review tab in a real browser, driven by the keyboard only (the server and the 12 example
images from conftest.py's ``archive_server``).

It opens the Review tab, checks the queue is the server's (cluster-margin, 10 images), is refused a label
without the token (the server's reason shown, no advance), then enters the token and labels: A accepts the
model's label, S skips, 2 stores the model's second class, ← goes back, C and the picker store any class;
each write is checked in the database. It opens the key help, toggles the heatmap, finishes the queue
(summary, refit note), activates another model version from the summary (the archive re-scored), fetches
the next queue (reviewed and skipped images left out) and sees the reviewed badges in the Browse grid.
A screenshot of the review view goes to tmp_path; with MARSVISION_SCREENSHOT_DOCS=1 also to docs/review.png.
"""

from __future__ import annotations

import io
import os
import re
from pathlib import Path

import pytest
from test_page import TOKEN

REPO = Path(__file__).resolve().parents[2]
PICTURE_LOADED = (
    "(() => { const i = document.querySelector('#r-img'); return i.getAttribute('src').includes(%r) "
    "&& i.complete && i.naturalWidth > 0 && !document.querySelector('#r-frame.loading'); })()"
)


def add_version(engine, tmp_path: Path, name: str) -> None:
    """Register a second model version: the active one's file, byte-different, with it as parent (so it can
    re-score the archive from the stored features)."""
    import onnx

    from marsvision.archive.db import sessions
    from marsvision.archive.versions import active_version, register

    with sessions(engine).begin() as s:
        parent = active_version(s)
        proto = onnx.load(parent.path)
        proto.doc_string += " (a copy for the review page test)"
        path = tmp_path / "copy.onnx"
        onnx.save(proto, str(path))
        register(s, path, version=name, parent=parent)


@pytest.mark.slow
def test_review_queue_from_the_keyboard(browser_page, archive_server, tmp_path):
    import httpx
    from playwright.sync_api import expect
    from sqlalchemy import select
    from sqlalchemy.orm import Session

    from marsvision.archive.db import Correction, Image, ModelVersion

    base, engine = archive_server
    add_version(engine, tmp_path, "review-test-v2")
    expected = httpx.get(f"{base}/api/review", params={"limit": 10}).json()
    assert expected["strategy"] == "cluster_margin" and len(expected["items"]) == 10
    queue = expected["items"]
    names = [Path(it["path"]).name for it in queue]

    page = browser_page
    page.set_viewport_size({"width": 1280, "height": 800})
    page_errors: list[str] = []
    page.on("pageerror", lambda e: page_errors.append(str(e)))
    key = page.keyboard.press
    progress, status, stage = page.locator("#r-progress"), page.locator("#r-status"), page.locator("#r-stage")

    def corrections() -> list[tuple[int, str, str]]:
        with Session(engine) as s:
            return [(c.image_id, c.label, c.model_label) for c in s.scalars(select(Correction).order_by(Correction.id))]

    def at(i: int, reviewed: int) -> None:
        expect(progress).to_have_text(f"Image {i} of 10 · {reviewed} reviewed this session")
        expect(page.locator("#r-title")).to_have_text(names[i - 1])
        expect(stage).to_be_focused()

    # Open the Review tab: the server's default strategy, 10 images in the server's order, the first shown.
    page.goto(f"{base}/")
    expect(page.locator("#grid .card")).to_have_count(12)
    page.click("#tab-review")
    expect(page.locator("#panel-review")).to_be_visible()
    expect(page.locator("#tab-review")).to_have_attribute("aria-selected", "true")
    at(1, 0)
    expect(page.locator("#r-strategy")).to_have_value("cluster_margin")
    expect(page.locator("#r-label")).to_have_text(queue[0]["label"])
    expect(page.locator("#r-topk .choice")).to_have_count(5)
    expect(page.locator("#r-topk .choice .choice-label")).to_have_text([label for label, _ in queue[0]["top_k"]])
    expect(page.locator("#r-keys")).to_contain_text("accept")
    expect(page.locator("#r-writes")).to_have_text("Enter the write token in the header to store labels.")
    page.wait_for_function(PICTURE_LOADED % f"/api/images/{queue[0]['id']}/thumbnail?size=512")

    # ? shows the key help; Escape closes it and gives the focus back to the image.
    key("?")
    expect(page.locator("#r-help")).to_be_visible()
    expect(page.locator("#r-help")).to_contain_text("Back to the previous image")
    key("Escape")
    expect(page.locator("#r-help")).to_be_hidden()
    expect(stage).to_be_focused()

    # Without the token A is refused: the server's reason, no advance, no row; the focus goes to the token field.
    key("a")
    expect(status).to_contain_text("Not stored (401): this write needs the header")
    expect(page.locator("#token")).to_be_focused()
    expect(progress).to_have_text("Image 1 of 10 · 0 reviewed this session")
    assert corrections() == []
    page.keyboard.type(TOKEN)
    key("Enter")  # back to the image
    expect(stage).to_be_focused()
    expect(page.locator("#r-writes")).to_be_hidden()

    # A: the model's label becomes the curator's (a curator confirming it); the next image is shown.
    key("A")
    at(2, 1)
    expect(status).to_have_text(f"Stored “{queue[0]['label']}” for {names[0]}.")
    expect(page.locator("#r-live")).to_have_text(  # what screen readers hear: the label stored, the next image
        f"Stored “{queue[0]['label']}” for {names[0]}. Image 2 of 10: {names[1]}, the model says {queue[1]['label']} "
        f"({page.locator('#r-conf').text_content()})."
    )
    assert corrections() == [(queue[0]["id"], queue[0]["label"], queue[0]["label"])]
    with Session(engine) as s:
        assert s.scalars(select(Correction.note)).one() == "review queue (cluster_margin): accepted the model's label"

    # The screenshot of the review view, then H toggles the heatmap (for the model's label) on and off.
    page.wait_for_function(PICTURE_LOADED % f"/api/images/{queue[1]['id']}/thumbnail")
    shot = page.screenshot()
    (tmp_path / "review.png").write_bytes(shot)
    if os.environ.get("MARSVISION_SCREENSHOT_DOCS") == "1":  # the README's picture, in 256 colours
        from PIL import Image as Picture

        picture = Picture.open(io.BytesIO(shot)).convert("RGB")
        picture.quantize(256, method=Picture.Quantize.FASTOCTREE).save(REPO / "docs" / "review.png", optimize=True)
    key("h")
    expect(page.locator("#r-heatmap")).to_have_attribute("aria-pressed", "true")
    page.wait_for_function(PICTURE_LOADED % f"/api/images/{queue[1]['id']}/heatmap?", timeout=20_000)
    expect(status).to_have_text(f"Heatmap on: brighter areas carry more evidence for “{queue[1]['label']}”.")
    key("h")
    expect(page.locator("#r-heatmap")).to_have_attribute("aria-pressed", "false")
    page.wait_for_function(PICTURE_LOADED % f"/api/images/{queue[1]['id']}/thumbnail")

    # S skips (no write); 2 stores the model's second class.
    key("s")
    at(3, 1)
    assert len(corrections()) == 1
    key("2")
    at(4, 2)
    second = queue[2]["top_k"][1][0]
    assert corrections()[-1] == (queue[2]["id"], second, queue[2]["label"])

    # ← goes back and says what was stored; → skips past it again without undoing it.
    key("ArrowLeft")
    at(3, 2)
    expect(page.locator("#r-stored")).to_contain_text(f"You stored “{second}”")
    expect(page.locator(f'#r-topk .choice.chosen[data-label="{second}"]')).to_have_count(1)
    key("ArrowRight")
    at(4, 2)

    # C goes to the class picker; the arrow keys choose, Enter stores, and the next image has the focus.
    key("c")
    expect(page.locator("#r-class")).to_be_focused()
    key("ArrowDown")
    picked = page.locator("#r-class").input_value()
    assert picked == "apxs"  # the first of the model's classes
    key("Enter")
    at(5, 3)
    assert corrections()[-1] == (queue[3]["id"], picked, queue[3]["label"])

    # Skip the rest: the summary, the refit note and the model versions.
    for i in range(5, 11):
        key("ArrowRight")
        if i < 10:
            at(i + 1, 3)
    expect(page.locator("#r-done")).to_be_visible()
    expect(page.locator("#r-next")).to_be_focused()  # Enter fetches the next queue
    expect(page.locator("#r-live")).to_contain_text("That was the last image of the queue.")
    expect(progress).to_have_text("Queue of 10 done · 3 reviewed this session")
    expect(page.locator("#r-summary")).to_contain_text("3 reviewed · 7 skipped")
    expect(page.locator("#r-done")).to_contain_text(
        "Refit the model with these corrections: marsvision refit (or activate a version below)"
    )
    assert len(corrections()) == 3

    # Activate the other version from the keyboard: the archive is re-scored and the header says so.
    activate = page.get_by_role("button", name="Activate review-test-v2")
    expect(page.locator("#r-models tbody tr")).to_have_count(2)
    activate.focus()
    key("Enter")
    expect(page.locator("#r-models-status")).to_have_text(
        re.compile(r"^Activated review-test-v2: 12 images re-scored in [\d.]+ s\.")
    )
    expect(page.locator("#r-models tr.active th")).to_have_text("review-test-v2")
    expect(page.locator("#server-info")).to_contain_text("Model review-test-v2")
    with Session(engine) as s:
        assert s.scalars(select(ModelVersion.version).where(ModelVersion.active)).all() == ["review-test-v2"]

    # The next queue leaves out the 3 reviewed and the 7 skipped images: 2 are left.
    page.click("#r-next")
    expect(progress).to_have_text("Image 1 of 2 · 3 reviewed this session")
    seen = {it["id"] for it in queue}
    left = {it["id"] for it in httpx.get(f"{base}/api/images", params={"page_size": 100}).json()["items"]} - seen
    assert page.locator("#r-title").text_content() in {
        Path(it["path"]).name
        for it in httpx.get(f"{base}/api/images", params={"page_size": 100}).json()["items"]
        if it["id"] in left
    }

    # Browse shows the reviewed badges of the three labelled images without a page reload.
    page.click("#tab-browse")
    for image_id, label, _ in corrections():
        expect(page.locator(f'#grid .card[data-id="{image_id}"] .badge.reviewed')).to_have_text(f"reviewed: {label}")
    expect(page.locator("#grid .badge.reviewed")).to_have_count(3)
    with Session(engine) as s:
        assert sorted(s.scalars(select(Image.id).where(Image.reviewed_label.is_not(None)))) == sorted(
            c[0] for c in corrections()
        )
    assert not page_errors, page_errors
