"""``datalake preview``: the static gallery, opened from the file system in a real headless Chromium."""

from __future__ import annotations

import http.server
import io
import json
import shutil
import tempfile
import threading
from pathlib import Path
from urllib.parse import unquote, urlparse

import pandas as pd
import pytest
from PIL import Image

from datalake_pipelines.cli.main import main

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
KEY = "inhouse/receipts/ocr/v1"
FLAGS = (
    "--headless --no-sandbox --disable-gpu --disable-quic --no-first-run --disable-background-networking "
    "--disable-component-update --disable-sync --window-size=1200,900"
).split()


@pytest.fixture
def browser(tmp_path):
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        pytest.skip("Debian chromium and chromium-driver are not installed (make install installs them)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    profile = tempfile.mkdtemp(prefix="chromium-profile-")
    options.add_argument(f"--user-data-dir={profile}")
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def receipts(client, tmp_path, n=6):
    src = tmp_path / "src"
    src.mkdir()
    rows = []
    for i in range(n):
        p = src / f"r{i}.png"
        Image.new("RGB", (400, 300), (235, 235, 235)).save(p)
        words = [{"text": f"word{i}", "bbox": [40, 40, 200, 100]}]
        rows.append(
            {
                "image": str(p),
                "doc_id": f"r{i}",
                "ocr_result": json.dumps({"words": words}),
                "city": "Seoul, Korea" if i % 2 == 0 else "Busan",
            }
        )
    client.upload_task_data(pd.DataFrame(rows), "inhouse", "receipts", "ocr", "v1", meta={"lang": "ko", "src": "real"})
    assert [r.status for r in client.process_pending()] == ["done"]


def test_gallery_renders_offline_in_chromium(client, lake, tmp_path, capsys, browser):
    receipts(client, tmp_path)
    out = tmp_path / "gallery"
    code = main(
        [
            "--base-path",
            str(lake.base),
            "preview",
            "--partition",
            KEY,
            "--where",
            "city=Seoul, Korea",
            "--limit",
            "10",
            "--out",
            str(out),
            "--json",
        ]
    )
    report = json.loads(capsys.readouterr().out)
    assert code == 0 and report["rows"] == 3 and report["thumbnails"] == 3 and report["images"] == 1
    # same pixels in every row: one full image copied, three thumbnails

    browser.get(out.joinpath("index.html").as_uri())
    assert browser.title == KEY
    imgs = browser.execute_script(
        "return Array.from(document.images).map(i => [i.getAttribute('src'), i.complete, i.naturalWidth])"
    )
    assert len(imgs) == 3 and all(done and width == 256 for _, done, width in imgs), imgs
    ids = browser.execute_script("return Array.from(document.querySelectorAll('.id')).map(e => e.textContent)")
    assert ids == ["r0", "r2", "r4"]  # the --where selection, by the download's filter rules
    words = browser.execute_script("return Array.from(document.querySelectorAll('ul.ann li')).map(e => e.textContent)")
    assert words == ["word0", "word2", "word4"]
    # the box is drawn in the decoded thumbnail: [40, 40, 200, 100] of 400x300 -> x = 25.6 at 256 px
    shot = Image.open(io.BytesIO(browser.find_element("css selector", "#row0 img").screenshot_as_png)).convert("RGB")
    reds = [x for x in range(shot.width) if shot.getpixel((x, 45))[0] > 200 and shot.getpixel((x, 45))[1] < 80]
    assert reds and abs(reds[0] - 26) <= 2, reds

    # nothing outside the folder: every src/href is a relative path to an existing file in it, and every
    # resource the page loaded is a file inside it
    refs = browser.execute_script(
        "return Array.from(document.querySelectorAll('[src],[href]')).map(e => e.getAttribute('src') || "
        "e.getAttribute('href'))"
    )
    assert refs
    for ref in refs:
        assert "://" not in ref and not ref.startswith(("/", "//", "data:")), ref
        assert (out / ref).resolve().is_file() and out.resolve() in (out / ref).resolve().parents
    # Chromium keeps no resource timing for file:// loads, so any entry here would be a network request
    loaded = browser.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    for url in loaded:
        parsed = urlparse(url)
        assert parsed.scheme == "file" and Path(unquote(parsed.path)).resolve().parent.parent == out.resolve(), url
    full = browser.execute_script("return document.querySelector('#row0 a').href")
    browser.get(full)
    assert browser.execute_script("return document.images[0].naturalWidth") == 400


def test_the_page_policy_blocks_requests_leaving_the_folder(client, lake, tmp_path, capsys, browser):
    """Negative control: an image pointing at a live local HTTP server, added to the page, is never fetched."""
    receipts(client, tmp_path, n=2)
    out = tmp_path / "gallery"
    assert main(["--base-path", str(lake.base), "preview", "--partition", KEY, "--out", str(out)]) == 0
    capsys.readouterr()
    hits = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's name
            hits.append(self.path)
            self.send_response(404)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        page = out / "index.html"
        html = page.read_text()
        port = server.server_address[1]
        page.write_text(html.replace("</body>", f'<img id="ext" src="http://127.0.0.1:{port}/x.png"></body>'))
        browser.get(page.as_uri())
        assert browser.execute_script("return document.getElementById('ext').naturalWidth") == 0
        # without the policy the same page does fetch it (the control is able to fail)
        page.write_text(page.read_text().replace('http-equiv="Content-Security-Policy"', 'name="x"'))
        browser.get(page.as_uri())
        browser.execute_script("return document.getElementById('ext').complete")
        assert hits == ["/x.png"]
    finally:
        server.shutdown()


def test_preview_refuses_an_existing_folder_and_a_bad_filter(client, lake, tmp_path, capsys):
    receipts(client, tmp_path, n=1)
    out = tmp_path / "g"
    out.mkdir()
    (out / "mine.txt").write_text("keep")
    assert main(["--base-path", str(lake.base), "preview", "--partition", KEY, "--out", str(out)]) == 1
    assert "never replaced" in capsys.readouterr().err and (out / "mine.txt").read_text() == "keep"  # not ours
    code = main(
        [
            "--base-path",
            str(lake.base),
            "preview",
            "--partition",
            KEY,
            "--where",
            "nope=1",
            "--out",
            str(tmp_path / "h"),
        ]
    )
    assert code == 1 and "nope" in capsys.readouterr().err and not (tmp_path / "h").exists()
