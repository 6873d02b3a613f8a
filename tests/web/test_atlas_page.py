"""Atlas-style browsing on the page in a real browser (Playwright, Debian's Chromium; the server of
test_page.py): off-camera badges, facet counts beside the filters (each under the other filters), the
timeline drawn and filtering on click, the confident switch, and the bulk download of the result set."""

from __future__ import annotations

import csv
import io
import re
import zipfile

import pytest
from sqlalchemy import select, update


def option_count(page, select: str, value: str) -> int:
    text = page.locator(f'{select} option[value="{value}"]').text_content()
    return int(re.search(r"\((\d+)\)$", text).group(1))


@pytest.mark.slow
def test_facets_timeline_confident_switch_and_download(browser_page, archive_server, tmp_path):
    import httpx
    from playwright.sync_api import expect

    from marsvision.archive.db import Image

    base, engine = archive_server
    with engine.begin() as conn:  # two images from an engineering camera: off the training cameras
        ids = conn.scalars(select(Image.id).order_by(Image.id)).all()
        conn.execute(update(Image).values(off_camera=False))
        conn.execute(update(Image).where(Image.id.in_(ids[:2])).values(off_camera=True, instrument="NL"))
    page = browser_page
    page.set_viewport_size({"width": 1280, "height": 900})
    page_errors: list[str] = []
    page.on("pageerror", lambda e: page_errors.append(str(e)))
    cards = page.locator("#grid .card")
    bins = page.locator("#timeline-chart .tl-bin")

    # The grid marks the off-camera images; the facets count beside each filter.
    page.goto(f"{base}/")
    expect(cards).to_have_count(12)
    expect(page.locator("#grid .badge.off-camera")).to_have_count(2)
    expect(page.locator('#f-off-camera option[value="true"]')).to_have_text("Yes (2)")
    expect(page.locator('#f-off-camera option[value="false"]')).to_have_text("No (10)")
    expect(page.locator('#f-instrument option[value="NL"]')).to_have_text("Navcam Left (2)")
    expect(page.locator('#f-label option[value="wheel"]')).to_have_text("wheel (1)")
    assert bins.count() > 0
    page.screenshot(path=str(tmp_path / "atlas.png"))

    # A filter changes the other facets' counts but not its own: the classes still show every class.
    everything = [o.get_attribute("value") for o in page.locator("#f-label option").all()]
    page.select_option("#f-off-camera", "true")
    expect(page).to_have_url(re.compile(r"off_camera=true"))
    expect(cards).to_have_count(2)
    expect(page.locator('#f-off-camera option[value="false"]')).to_have_text("No (10)")  # its own: unchanged
    expect(page.locator('#f-instrument option[value="MH"]')).to_have_count(0)  # others: under the filter
    labels = httpx.get(f"{base}/api/facets", params={"off_camera": True}).json()["facets"]["label"]
    for v in labels:
        expect(page.locator(f'#f-label option[value="{v["value"]}"]')).to_have_text(f"{v['value']} ({v['count']})")
    assert sum(v["count"] for v in labels) == 2 and len(everything) > 2
    page.select_option("#f-off-camera", "")
    expect(cards).to_have_count(12)

    # The timeline filters on click: the bar's sols go to the sol range, the grid follows.
    sols = [i["sol"] for i in httpx.get(f"{base}/api/images", params={"page_size": 100}).json()["items"]]
    sol = max(set(sols), key=sols.count)  # the sol holding the most example images
    index = page.evaluate(
        f"[...document.querySelectorAll('#timeline-chart .tl-bin')].findIndex(b => "
        f"+b.dataset.solMin <= {sol} && {sol} <= +b.dataset.solMax)"
    )
    lo, hi = (int(bins.nth(index).get_attribute(a)) for a in ("data-sol-min", "data-sol-max"))
    bins.nth(index).click()
    expect(page).to_have_url(re.compile(rf"sol_min={lo}&sol_max={hi}"))
    expect(page.locator("#f-sol-min")).to_have_value(str(lo))
    want = httpx.get(f"{base}/api/images", params={"sol_min": lo, "sol_max": hi}).json()["total"]
    assert want >= sols.count(sol)
    expect(cards).to_have_count(want)
    expect(page.locator("#timeline-chart .tl-selected")).to_have_count(1)
    expect(page.locator("#timeline-range")).to_have_text(f"showing sols {lo}–{hi}")
    assert bins.count() > 1  # the whole mission stays drawn
    page.select_option("#timeline-by", "camera")
    expect(page.locator("#timeline-legend li").first).to_be_visible()
    expect(page.locator("#timeline-legend")).to_contain_text("Navcam Left")
    page.click("#timeline-clear")
    expect(cards).to_have_count(12)
    expect(page).not_to_have_url(re.compile("sol_min"))

    # The confident switch: only confident labels from the training cameras, and its count beside it.
    confident = httpx.get(f"{base}/api/images", params={"confident": True, "page_size": 100}).json()
    expect(page.locator("#f-confident-count")).to_have_text(f"({confident['total']})")
    page.check("#f-confident")
    expect(page).to_have_url(re.compile(r"confident=true"))
    expect(cards).to_have_count(confident["total"])
    expect(page.locator("#grid .badge.off-camera")).to_have_count(0)
    expect(page.locator("#grid .badge.unknown")).to_have_count(0)
    assert confident["total"] < 12
    page.reload()
    expect(page.locator("#f-confident")).to_be_checked()

    # The CSV of the current results, and the bulk download: the result set's files and metadata, as a zip.
    assert page.get_attribute("#export-csv", "href") == "/api/export?confident=true&format=csv"
    assert page.get_attribute("#download-zip", "href") == "/api/download.zip?confident=true"
    with page.expect_download() as info:
        page.click("#download-zip")
    path = info.value.path()
    with zipfile.ZipFile(path) as zf:
        rows = list(csv.DictReader(io.StringIO(zf.read("metadata.csv").decode())))
        assert sorted(int(r["id"]) for r in rows) == sorted(i["id"] for i in confident["items"])
        assert len(zf.namelist()) == len(rows) + 1 and all(r["zip_files"] for r in rows)
    assert not page_errors, page_errors
