"""The README's screenshot of a partition page with a rejected file, taken in headless Chromium (Selenium).

    python -m datalake_pipelines_tests.support.rejection_screenshot [FOLDER]   # default docs/img/

It ingests one batch with a truncated JPEG into a throwaway lake and ``DAGSTER_HOME`` (in process, through the
real staging sensor and ingest job), starts ``dagster-webserver`` on them (``webserver.py``), opens
``catalog_partition``'s page for that partition in Debian's ``chromium``/``chromedriver``, dismisses the first-run
dialog and the side navigation, scrolls to the rejected files and saves ``rejection.png``; then opens the
asset's Checks tab on ``no_rejected_files`` and saves ``rejection_check.png``.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import quote

PROJECT = Path(__file__).resolve().parents[2]
DEFAULT_OUT = PROJECT / "docs" / "img"
WINDOW = (1900, 1000)


def ingest_with_a_rejection(home: Path, lake: str, src: Path) -> str:
    """Three good scans and a truncated one, ingested; returns the partition key."""
    import dagster as dg
    import pandas as pd
    from PIL import Image

    from datalake_pipelines import DatalakeClient
    from datalake_pipelines_tests.support.s3_pipeline import run, tick

    src.mkdir(parents=True)
    paths = []
    for i in range(3):
        path = src / f"receipt_{i:04d}.jpg"
        Image.frombytes("RGB", (96, 64), os.urandom(96 * 64 * 3)).save(path, quality=90)
        paths.append(str(path))
    whole = Path(paths[0]).read_bytes()
    cut = src / "receipt_0042.jpg"
    cut.write_bytes(whole[: len(whole) // 2])
    paths.append(str(cut))
    frame = pd.DataFrame({"image": paths, "doc_id": [f"r{i}" for i in range(4)]})
    DatalakeClient(lake, progress=False).upload_raw_data(frame, "inhouse", "receipts", "scanned receipts")
    with dg.DagsterInstance.from_config(str(home)) as instance:
        result = tick(instance, lake)
        [request] = result.run_requests
        assert run(instance, lake, request, result).success
        return str(request.partition_key)


def screenshot(out: Path) -> Path:
    """Save ``rejection.png`` and ``rejection_check.png`` in the folder ``out``; returns ``out``."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    from datalake_pipelines_tests.support.webserver import DagsterUI, prepare_home

    work = Path(tempfile.mkdtemp(prefix="rejection-shot-"))
    try:
        home = prepare_home(work / "dagster_home")
        lake = str(work / "lake")
        os.environ.update(DAGSTER_HOME=str(home), DATALAKE_BASE_PATH=lake, DATALAKE_NUM_PROC="1")
        key = ingest_with_a_rejection(home, lake, work / "src")
        options = webdriver.ChromeOptions()
        options.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
        for flag in (
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            f"--window-size={WINDOW[0]},{WINDOW[1]}",
        ):
            options.add_argument(flag)
        options.add_argument(f"--user-data-dir={work / 'chromium'}")
        env = {"DAGSTER_HOME": str(home), "DATALAKE_BASE_PATH": lake}
        with DagsterUI(home, env, log_dir=work) as ui:
            driver = webdriver.Chrome(
                service=Service(shutil.which("chromedriver") or "/usr/bin/chromedriver"), options=options
            )
            try:
                driver.get(f"{ui.url}/assets/catalog_partition?view=partitions&partition={quote(key, safe='')}")
                deadline = time.monotonic() + 60
                while "receipt_0042.jpg" not in driver.find_element("tag name", "body").text:
                    if time.monotonic() > deadline:
                        raise TimeoutError("the partition page never showed the rejected file")
                    time.sleep(0.5)
                for label in ("Skip", "Hide navigation"):  # the first-run dialog; room for the tables
                    for button in driver.find_elements("xpath", f"//button[normalize-space()='{label}']"):
                        button.click()
                        time.sleep(0.5)
                [anchor] = driver.find_elements("xpath", "//*[normalize-space(text())='files_rejected']")[:1]
                driver.execute_script("arguments[0].scrollIntoView({block: 'start'})", anchor)
                time.sleep(1)
                out.mkdir(parents=True, exist_ok=True)
                driver.save_screenshot(str(out / "rejection.png"))
                driver.get(f"{ui.url}/assets/catalog_partition?view=checks&checkDetail=no_rejected_files")
                deadline = time.monotonic() + 60
                while "receipt_0042.jpg" not in driver.find_element("tag name", "body").text:
                    if time.monotonic() > deadline:
                        raise TimeoutError("the check page never showed the rejected file")
                    time.sleep(0.5)
                time.sleep(1)
                driver.save_screenshot(str(out / "rejection_check.png"))
            finally:
                driver.quit()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return out


if __name__ == "__main__":
    print(screenshot(Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_OUT))
