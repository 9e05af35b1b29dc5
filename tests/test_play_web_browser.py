"""The play page in a real headless Chromium (Debian's /usr/bin/chromium, driven by Playwright).

Skipped when chromium or playwright is missing, unless ODYSSEY_REQUIRE_BROWSER=1 (CI), where that fails.
A screenshot of the page is saved to $ODYSSEY_ARTIFACTS (default tests/artifacts/).
"""

from __future__ import annotations

import json
import os
import time
import urllib.request
from pathlib import Path

import pytest

from tiny_weights import make_tiny_weights

CHROMIUM = os.environ.get("ODYSSEY_CHROMIUM", "/usr/bin/chromium")
REQUIRED = os.environ.get("ODYSSEY_REQUIRE_BROWSER") == "1"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-quic"]
ARTIFACTS = Path(os.environ.get("ODYSSEY_ARTIFACTS") or Path(__file__).parent / "artifacts")


def _need(ok: bool, reason: str) -> None:
    if ok:
        return
    if REQUIRED:
        pytest.fail(f"{reason} (ODYSSEY_REQUIRE_BROWSER=1 makes this a failure)", pytrace=False)
    pytest.skip(f"{reason}; set ODYSSEY_REQUIRE_BROWSER=1 to make this a failure")


@pytest.fixture(scope="module")
def browser():
    _need(os.path.exists(CHROMIUM), f"no chromium at {CHROMIUM} (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _need(False, "the playwright package is not installed (pip install -e '.[test]')")
    pw = sync_playwright().start()
    b = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
    yield b
    b.close()
    pw.stop()


@pytest.fixture(scope="module")
def server(browser, tmp_path_factory):
    from odyssey_gym.play.web.server import WebConfig, start_in_thread

    w = make_tiny_weights("doom-explore", tmp_path_factory.mktemp("tiny_browser"), n_starts=4)
    srv = start_in_thread(WebConfig(device="cpu", weights=str(w), port=0, max_players=2, record_seconds=5,
                                    stats_interval_s=0.2, encode_workers=2))
    yield srv
    srv.stop()


def get_stats(srv) -> dict:
    return json.loads(urllib.request.urlopen(srv.url + "/stats", timeout=5).read())


def wait_stats(srv, pred, timeout=10.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        st = get_stats(srv)
        if pred(st) or time.monotonic() > deadline:
            return st
        time.sleep(0.05)


def slot_action(st: dict, slot: int):
    return next((s["action"] for s in st["slots"] if s["slot"] == slot), None)


def open_page(browser, srv):
    ctx = browser.new_context(accept_downloads=True, viewport={"width": 1000, "height": 800})
    page = ctx.new_page()
    page.goto(srv.url + "/")
    page.wait_for_function("window.odyssey && window.odyssey.frames > 3", timeout=20_000)
    return ctx, page


def test_page_streams_frames_and_held_keys_reach_the_env(browser, server):
    ctx, page = open_page(browser, server)
    try:
        slot = page.evaluate("window.odyssey.hello.slot")
        canvas = page.locator("#screen")
        assert canvas.evaluate("c => getComputedStyle(c).imageRendering") == "pixelated"
        box = canvas.bounding_box()
        assert box["width"] >= 4 * 160 and box["width"] / box["height"] == pytest.approx(160 / 120)  # scaled up
        # the canvas shows a frame: not one flat colour
        spread = canvas.evaluate("""c => { const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
                                    let lo = 255, hi = 0; for (let i = 0; i < d.length; i += 4) { lo = Math.min(lo, d[i]); hi = Math.max(hi, d[i]); }
                                    return hi - lo; }""")
        assert spread > 10
        help_text = page.locator("#help").text_content()  # the world's own keys, not a fixed "WASD / arrows"
        assert "w move forward" in help_text and "WASD" not in help_text

        page.keyboard.down("w")
        page.keyboard.down("ArrowLeft")
        st = wait_stats(server, lambda s: slot_action(s, slot) == [1, 0, 1, 0, 0, 0])
        assert slot_action(st, slot) == [1, 0, 1, 0, 0, 0]
        page.keyboard.up("w")
        st = wait_stats(server, lambda s: slot_action(s, slot) == [0, 0, 1, 0, 0, 0])
        assert slot_action(st, slot) == [0, 0, 1, 0, 0, 0]
        page.keyboard.up("ArrowLeft")
        st = wait_stats(server, lambda s: slot_action(s, slot) == [0] * 6)
        assert slot_action(st, slot) == [0] * 6

        # the server echoed the key messages' seq, so the page measured action-to-frame latency
        page.wait_for_function("window.odyssey.latencies.length >= 3 && window.odyssey.lastAck >= 3", timeout=10_000)
        lat = page.evaluate("window.odyssey.latencies")
        assert all(0 < x < 5000 for x in lat)
        page.wait_for_function("document.getElementById('latency').textContent !== '-'"
                               " && +document.getElementById('fps').textContent > 5", timeout=10_000)
        assert page.locator("#players").text_content() == "1/2"

        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "play_web.png"))
        assert (ARTIFACTS / "play_web.png").stat().st_size > 1000
    finally:
        ctx.close()


def test_touch_buttons_and_record_download(browser, server):
    ctx, page = open_page(browser, server)
    try:
        slot = page.evaluate("window.odyssey.hello.slot")
        btn = page.locator('#touch button[data-key="d"]')
        assert btn.text_content() == "right"
        b = btn.bounding_box()
        page.mouse.move(b["x"] + b["width"] / 2, b["y"] + b["height"] / 2)
        page.mouse.down()  # a real pointer press: held while down
        st = wait_stats(server, lambda s: slot_action(s, slot) == [0, 0, 0, 0, 0, 1])
        assert slot_action(st, slot) == [0, 0, 0, 0, 0, 1]
        page.mouse.up()
        st = wait_stats(server, lambda s: slot_action(s, slot) == [0] * 6)
        assert slot_action(st, slot) == [0] * 6

        with page.expect_download(timeout=30_000) as dl:
            page.click("#record")
        path = dl.value.path()
        data = Path(path).read_bytes()
        assert data[4:8] == b"ftyp" and len(data) > 1000 and dl.value.suggested_filename.endswith(".mp4")
    finally:
        ctx.close()


def test_two_pages_independent_full_and_closing_frees_the_slot(browser, server):
    ctx_a, a = open_page(browser, server)
    ctx_b, b = open_page(browser, server)
    try:
        sa, sb = a.evaluate("window.odyssey.hello.slot"), b.evaluate("window.odyssey.hello.slot")
        assert {sa, sb} == {0, 1}
        a.keyboard.down("s")
        st = wait_stats(server, lambda s: slot_action(s, sa) == [0, 1, 0, 0, 0, 0])
        assert slot_action(st, sa) == [0, 1, 0, 0, 0, 0] and slot_action(st, sb) == [0] * 6  # b is untouched
        assert st["players"] == 2

        ctx_c = browser.new_context()  # a third player: the server (max 2) says it is full
        c = ctx_c.new_page()
        c.goto(server.url + "/")
        c.wait_for_function("window.odyssey.full !== null", timeout=10_000)
        assert "full" in c.locator("#status").text_content()
        assert c.evaluate("window.odyssey.frames") == 0
        ctx_c.close()

        ctx_a.close()  # closing the tab frees its slot; b keeps playing
        st = wait_stats(server, lambda s: s["players"] == 1)
        assert st["players"] == 1 and [s["slot"] for s in st["slots"]] == [sb]
        n = b.evaluate("window.odyssey.frames")
        b.wait_for_function(f"window.odyssey.frames > {n + 5}", timeout=10_000)
    finally:
        ctx_b.close()
    assert wait_stats(server, lambda s: s["players"] == 0)["players"] == 0
