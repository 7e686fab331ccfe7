"""The report in a real browser (headless Chromium): every image decodes and nothing overflows the
viewport horizontally, at desktop and phone widths; the first screen shows the guarantee and the images."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from report_run_fixture import make_run

from spti.report import build_report

_CHROMIUM = next(
    (p for p in (shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome", "chrome")) if p),
    None,
)
_DRIVER = shutil.which("chromedriver")

_CHECK_JS = r"""
const imgs = Array.from(document.images);
const broken = imgs.filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.alt || '(no alt)');
const de = document.documentElement;
const over = [];
if (de.scrollWidth > de.clientWidth) over.push('document ' + de.scrollWidth + '>' + de.clientWidth);
if (document.body.scrollWidth > document.body.clientWidth) over.push('body');
const blockish = new Set(['block', 'flex', 'grid', 'table', 'list-item', 'flow-root', 'table-cell']);
for (const el of document.body.querySelectorAll('*')) {
  const cs = getComputedStyle(el);
  if (!blockish.has(cs.display) || el.clientWidth === 0) continue;
  if (el.scrollWidth > el.clientWidth + 1) {
    over.push(el.tagName.toLowerCase() + (el.id ? '#' + el.id : '') + (el.className ? '.' + el.className : '')
              + ' ' + el.scrollWidth + '>' + el.clientWidth);
  }
  const r = el.getBoundingClientRect();
  if (r.right > de.clientWidth + 1) over.push(el.tagName.toLowerCase() + ' right edge ' + r.right);
}
return {n: imgs.length, broken: broken, over: over.slice(0, 20)};
"""


@pytest.mark.slow
@pytest.mark.skipif(
    _CHROMIUM is None or _DRIVER is None,
    reason="chromium and chromedriver are not installed (apt-get install chromium chromium-driver)",
)
@pytest.mark.parametrize("show_private", [False, True])
def test_report_renders_in_headless_chromium(tmp_path: Path, show_private: bool):
    report = build_report(make_run(tmp_path / "run"), show_private=show_private)
    driver = _driver(tmp_path)
    try:
        for width, height in ((1280, 900), (390, 844)):
            driver.set_window_size(width, height)
            driver.get(report.resolve().as_uri())
            driver.execute_script("return document.readyState")  # page loaded (file://, no network)
            res = driver.execute_script(_CHECK_JS)
            expected = 6 + 6 + 2 + (3 if show_private else 0)  # release, iterations, plots, pairs
            assert res["n"] == expected, res
            assert res["broken"] == [], f"images that did not decode at width {width}: {res['broken']}"
            assert res["over"] == [], f"horizontal overflow at width {width}: {res['over']}"
    finally:
        driver.quit()


_FIRST_SCREEN_JS = r"""
const box = el => { if (!el) return null; const r = el.getBoundingClientRect();
  return {top: r.top, bottom: r.bottom, left: r.left, right: r.right}; };
const img = document.querySelector('#images .grid img');
return {guarantee: box(document.getElementById('guarantee')), image: box(img),
        decoded: !!(img && img.complete && img.naturalWidth > 0),
        vw: window.innerWidth, vh: window.innerHeight, scrollY: window.scrollY};
"""


def _inside(box, vw, vh) -> bool:
    return box is not None and box["top"] >= 0 and box["left"] >= 0 and box["bottom"] <= vh and box["right"] <= vw


@pytest.mark.slow
@pytest.mark.skipif(
    _CHROMIUM is None or _DRIVER is None,
    reason="chromium and chromedriver are not installed (apt-get install chromium chromium-driver)",
)
def test_first_screen_shows_the_guarantee_and_the_images(tmp_path: Path):
    """At 1280x800 the first screen, unscrolled, holds the guarantee sentence and the first synthetic image
    (screenshot saved as first-screen-1280.png next to the run, for a person to look at); at 390 px wide
    (a phone) at least the guarantee."""
    report = build_report(make_run(tmp_path / "run"))
    driver = _driver(tmp_path)
    try:
        for width, height, need_image in ((1280, 800, True), (390, 844, False)):
            driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                                   {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": width < 600})
            driver.get(report.resolve().as_uri())
            res = driver.execute_script(_FIRST_SCREEN_JS)
            driver.save_screenshot(str(tmp_path / f"first-screen-{width}.png"))
            assert (res["vw"], res["vh"], res["scrollY"]) == (width, height, 0), res
            assert _inside(res["guarantee"], width, height), res
            if need_image:
                assert res["decoded"] and _inside(res["image"], width, height), res
    finally:
        driver.quit()


def _driver(tmp_path: Path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = _CHROMIUM
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--no-first-run",
        "--disable-dev-shm-usage",
        f"--user-data-dir={tmp_path / 'chrome-profile'}",
    ):
        opts.add_argument(flag)
    return webdriver.Chrome(service=Service(executable_path=_DRIVER), options=opts)
