"""The web page at / in headless Chromium (Debian's chromium, driven by Playwright), against a real
uvicorn server on 127.0.0.1 with the real pretrained U²-Net-P.

Needs ``apt-get install chromium`` and ``pip install playwright`` (no ``playwright install``: the
system browser is used). Skipped when either is missing.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

sync_api = pytest.importorskip("playwright.sync_api")
uvicorn = pytest.importorskip("uvicorn")

from http_helpers import serve_app  # noqa: E402
from u2seg.apps.server import create_app  # noqa: E402

CHROMIUM = os.environ.get("U2SEG_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-background-networking", "--disable-gpu",
                 "--no-first-run", "--disable-component-update", "--disable-sync"]
SCREENSHOT = Path(__file__).resolve().parents[1] / "docs" / "screenshots" / "web.png"

# No silent skip: `make test` and .ci/run install Debian's chromium; without it this test fails.
assert Path(CHROMIUM).exists(), f"no Chromium at {CHROMIUM}: apt-get install chromium (make test does, as root)"


@pytest.fixture
def server_url(use_pretrained_home, predictor):
    with serve_app(create_app(predictor_factory=lambda name: predictor, default_model="u2netp")) as url:
        yield url


def test_page_flow(server_url, tmp_path, coffee):
    photo = tmp_path / "coffee.jpg"
    Image.fromarray(coffee).save(photo, "JPEG", quality=92)
    requested: list[str] = []
    problems: list[str] = []

    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            context = browser.new_context(viewport={"width": 1360, "height": 820}, accept_downloads=True,
                                          color_scheme="light")
            page = context.new_page()
            page.set_default_timeout(60_000)
            page.on("request", lambda r: requested.append(r.url))
            page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: problems.append(str(e)))

            page.goto(server_url + "/")
            page.wait_for_function("() => document.getElementById('model-info').textContent.includes('u2netp')")
            page.set_input_files("#file-input", str(photo))
            page.wait_for_function("() => document.body.dataset.runs === '1' && document.body.dataset.state === 'done'")

            sizes = page.evaluate("""() => ['original', 'mask', 'cutout'].map(id => {
                const img = document.getElementById(id);
                return [img.naturalWidth, img.naturalHeight, img.getBoundingClientRect().width];
            })""")
            for natural_w, natural_h, shown_w in sizes:
                assert (natural_w, natural_h) == (600, 400) and shown_w > 100
            assert "Done" in page.inner_text("#status")
            SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(SCREENSHOT), full_page=True)

            # Hard edge at 0.70: the mask and the cutout's alpha become binary.
            page.check("#threshold-enable")
            page.wait_for_function("() => document.body.dataset.runs === '2' && document.body.dataset.state === 'done'")
            page.locator("#threshold").fill("70")
            assert page.inner_text("#threshold-value") == "0.70"
            page.wait_for_function("() => document.body.dataset.runs === '3' && document.body.dataset.state === 'done'")

            with page.expect_download() as info:
                page.click("#download")
            download = info.value
            assert download.suggested_filename == "coffee-cutout.png"
            saved = tmp_path / download.suggested_filename
            download.save_as(saved)
        finally:
            browser.close()

    cutout = Image.open(saved)
    assert cutout.format == "PNG" and cutout.mode == "RGBA" and cutout.size == (600, 400)
    alpha = np.asarray(cutout.getchannel("A"))
    assert set(np.unique(alpha)) == {0, 255}                      # thresholded
    assert alpha[160:280, 200:360].mean() > 250 and alpha[:60, 500:].mean() < 5  # cup kept, table gone
    assert np.array_equal(np.asarray(cutout.convert("RGB"))[alpha == 255],
                          np.asarray(Image.open(photo).convert("RGB"))[alpha == 255])

    external = [u for u in requested if not u.startswith((server_url, "blob:", "data:"))]
    assert external == [], external
    posts = [u for u in requested if u.startswith(server_url + "/api/remove")]
    assert len(posts) >= 6  # mask + cutout per run
    assert problems == []
    with Image.open(SCREENSHOT) as shot:
        assert shot.width >= 1360


def test_page_asks_for_a_key_when_the_server_needs_one(use_pretrained_home, predictor, tmp_path, coffee):
    from u2seg.apps.keys import create_key

    keys = tmp_path / "keys.jsonl"
    key = create_key(keys, "browser")
    photo = tmp_path / "coffee.jpg"
    Image.fromarray(coffee).save(photo, "JPEG", quality=92)
    problems: list[str] = []
    app = create_app(predictor_factory=lambda name: predictor, api_keys=keys, default_model="u2netp")
    with serve_app(app) as url, sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page()
            page.set_default_timeout(60_000)
            page.on("pageerror", lambda e: problems.append(str(e)))
            page.goto(url + "/")
            page.wait_for_selector("#key-form", state="visible")
            assert "API key" in page.inner_text("#status")

            page.fill("#api-key", "u2s_wrong")
            page.click("#key-submit")
            page.wait_for_function("() => document.getElementById('key-error').textContent.includes('refused')")
            assert page.is_visible("#key-form")

            page.fill("#api-key", key)
            page.click("#key-submit")
            page.wait_for_function("() => document.getElementById('model-info').textContent.includes('u2netp')")
            assert not page.is_visible("#key-form")
            page.set_input_files("#file-input", str(photo))
            page.wait_for_function("() => document.body.dataset.state === 'done'")
            assert "Done" in page.inner_text("#status") and "confidence 0." in page.inner_text("#status")
            # "Sharper edges" sends edge_refine (the guided filter): the mask changes near the edges.
            mask_pixels = """() => {
                const img = document.getElementById('mask');
                const canvas = document.createElement('canvas');
                canvas.width = img.naturalWidth; canvas.height = img.naturalHeight;
                const ctx = canvas.getContext('2d');
                ctx.drawImage(img, 0, 0);
                return Array.from(ctx.getImageData(0, 0, canvas.width, canvas.height).data.filter((_, i) => i % 4 === 0));
            }"""
            before = np.array(page.evaluate(mask_pixels))
            runs = page.evaluate("() => document.body.dataset.runs")
            page.check("#edge-refine")
            page.wait_for_function(f"() => document.body.dataset.runs !== '{runs}' && document.body.dataset.state === 'done'")
            page.wait_for_function("() => document.getElementById('mask').complete")
            after = np.array(page.evaluate(mask_pixels))
            changed = np.abs(after.astype(int) - before.astype(int)) > 2
            assert before.shape == after.shape and 0 < changed.mean() < 0.3
            # The key went in a header, never in a URL; a reload of the tab keeps it (this tab only).
            assert key not in page.url
            page.reload()
            page.wait_for_function("() => document.getElementById('model-info').textContent.includes('u2netp')")
        finally:
            browser.close()
    assert problems == []
