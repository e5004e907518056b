"""The book end to end at the smoke profile: sweeps (every notebook through papermill), a
``jupyter-book -W`` build, and a browser check of the static HTML with the network cut off."""

from __future__ import annotations

import functools
import http.server
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from diffeosens import results
from diffeosens.sweep import run_sweep

REPO = Path(__file__).resolve().parents[1]
BOOK_EXPERIMENTS = [e for e in os.environ.get("DIFFEOSENS_BOOK_EXPERIMENTS", "").split() if e] or None


def _book_experiments() -> list[str]:
    """The sweeps `make book` runs (the EXPERIMENTS line of the Makefile)."""
    if BOOK_EXPERIMENTS:
        return BOOK_EXPERIMENTS
    for line in (REPO / "Makefile").read_text().splitlines():
        if line.startswith("EXPERIMENTS ?="):
            return line.split("=", 1)[1].split()
    raise AssertionError("no EXPERIMENTS line in the Makefile")


@pytest.fixture(scope="session")
def smoke_results(tmp_path_factory):
    root = tmp_path_factory.mktemp("results")
    reports = [run_sweep(REPO / "configs" / f"{e}.yaml", profile="smoke", root=root, jobs=2, progress=False) for e in _book_experiments()]
    return root, reports


@pytest.fixture(scope="session")
def built_book(smoke_results, tmp_path_factory):
    root, reports = smoke_results
    assert all(r.ok for r in reports), "\n".join(r.summary() for r in reports)
    vendor = REPO / "book" / "_static" / "vendor"
    if not (vendor / "require.js").exists():
        pytest.fail("book/_static/vendor is missing: run `make setup` (it vendors the book's JavaScript from npm)")
    out = tmp_path_factory.mktemp("book")
    env = {**os.environ, "DIFFEOSENS_RESULTS": str(root), "DIFFEOSENS_PROFILE": "smoke"}
    jb = Path(sys.executable).with_name("jupyter-book")
    proc = subprocess.run(
        [str(jb), "build", "book", "--config", "_config.yml", "--path-output", str(out), "-W", "-n", "--keep-going"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=1200,
    )
    return proc, out / "_build" / "html"


def test_smoke_sweeps_execute_every_notebook(smoke_results):
    root, reports = smoke_results
    for report in reports:
        assert report.ok, report.summary()
        assert report.results, f"{report.experiment}: no cells"
        for r in report.results:
            assert r.status in ("ran", "skipped") and Path(r.notebook).exists()
    for e in _book_experiments():
        ds = results.open_experiment(e, profile="smoke", root=root)
        assert ds.attrs["runs"] >= 1


def test_rerunning_the_smoke_sweeps_executes_zero_cells(smoke_results):
    root, _ = smoke_results
    for e in _book_experiments():
        again = run_sweep(REPO / "configs" / f"{e}.yaml", profile="smoke", root=root, progress=False)
        assert len(again.by_status("ran")) == 0, again.summary()


def test_book_builds_with_warnings_as_errors(built_book):
    proc, html = built_book
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    toc = (REPO / "book" / "_toc.yml").read_text()
    pages = ["intro"] + [line.split("file:")[1].strip() for line in toc.splitlines() if "file:" in line]
    assert len(pages) >= 13
    for page in pages:
        assert (html / f"{page}.html").exists(), page
    text = (html / "layers.html").read_text()
    assert "Profile" in text or "profile" in text
    # no asset is loaded from a CDN (JB1 still prints thebe's URL in a config string it never uses)
    import re

    for page in html.glob("*.html"):
        loads = re.findall(r"""(?:src|href)=["'](https?://[^"']+)""", page.read_text())
        assert not [u for u in loads if any(c in u for c in ("jsdelivr", "cdnjs", "unpkg", "cdn.plot.ly", "mathjax"))], (page.name, loads)


def test_claims_page_shows_each_verdict_with_its_reason(built_book, smoke_results):
    import html as html_lib

    from diffeosens import claims

    proc, out = built_book
    assert proc.returncode == 0
    text = html_lib.unescape((out / "claims.html").read_text())
    assert "reason" in text
    for v in claims.evaluate("smoke", root=smoke_results[0]):  # the same smoke results the page read
        assert v.reason and v.verdict in claims.VERDICTS, v
        assert v.reason.split(";")[0][:40] in text, (v.claim, v.reason)


def test_pages_offer_their_data_for_download(built_book, smoke_results):
    import re

    import numpy as np
    import xarray as xr

    proc, html = built_book
    assert proc.returncode == 0
    for page, experiment in (("layers", "layers"), ("custom", "layers"), ("theory", "theory")):
        hrefs = re.findall(r'href="(results/smoke/[^"]+\.nc)"', (html / f"{page}.html").read_text())
        assert f"results/smoke/{experiment}.nc" in hrefs, (page, hrefs)
        with xr.open_dataset(html / "results" / "smoke" / f"{experiment}.nc", engine="netcdf4") as offered:
            served = results.open_experiment(experiment, profile="smoke", root=smoke_results[0])
            for v in ("D", "G", "R"):
                np.testing.assert_array_equal(offered[v].values, served[v].values)


def test_book_pages_take_profile_sizes_from_profiles_py():
    """No page types a profile's size: "the quick profile trains/uses ..." sentences are glued from
    :func:`diffeosens.profiles.describe`, so they cannot drift from what is run."""
    import re

    typed = re.compile(r"`(?:quick|smoke)`(?: profile)?(?: networks)? (?:uses|trains|are|is trained)|quick-profile networks are", re.I)
    for page in (REPO / "book").glob("*.md"):
        hits = typed.findall(page.read_text())
        assert not hits, (page.name, hits)


def test_chapters_pair_the_papers_claims_with_computed_findings():
    """A chapter states what the paper found as "**The paper:**" and prints beside it, computed from
    the results at build time, what this build shows (:func:`diffeosens.claims.finding` of the
    claims page's verdicts): no chapter checks a claim on its own (``check_c*``) or types a verdict."""
    import re

    for page in (REPO / "book").glob("*.md"):
        if page.name == "claims.md":  # the page that renders the verdicts themselves
            continue
        text = page.read_text()
        assert not re.search(r"check_c\d|_verdict\b|\.verdict\b", text), page.name
        for m in re.finditer(r"\*\*The paper", text):
            after = text[m.end():m.end() + 1500]
            assert "claims.finding(" in after, (page.name, text[m.start():m.start() + 120])
    for name in ("layers", "architectures", "noisy", "pooling", "filters", "activations", "scale2d", "scale1d", "theory"):
        assert "**The paper" in (REPO / "book" / f"{name}.md").read_text(), name
    # the defect this guards against: the paper's finding stated as this build's, above a figure that need not show it
    layers = (REPO / "book" / "layers.md").read_text()
    paper = layers.index("**The paper:**")
    assert layers.index("$R_k$ drops far below 1") > paper


def test_chapters_and_claims_page_print_the_computed_findings(built_book, smoke_results):
    import html as html_lib

    from diffeosens import claims

    proc, out = built_book
    assert proc.returncode == 0
    verdicts = {v.claim: v for v in claims.evaluate("smoke", root=smoke_results[0])}  # the same smoke results the pages read
    for page, cids in (("layers", ("C1", "C3", "C4")), ("architectures", ("C1", "C2")), ("noisy", ("C5",)), ("pooling", ("C6",)),
                       ("filters", ("C7",)), ("activations", ("C10",)), ("scale2d", ("C8",)), ("scale1d", ("C9",)), ("theory", ("C10",))):
        text = html_lib.unescape((out / f"{page}.html").read_text())
        text = text.translate(str.maketrans({"‘": "'", "’": "'", "“": '"', "”": '"'}))  # Sphinx's smart quotes
        for cid in cids:
            v = verdicts[cid]
            assert f"({cid} {v.verdict})" in text.replace("<em>", "").replace("</em>", ""), (page, cid, v.verdict)
            assert v.reason.split(";")[0][:40] in text, (page, cid, v.reason)
    claims_page = html_lib.unescape((out / "claims.html").read_text())
    assert "What would decide it" in claims_page
    for cid, v in verdicts.items():
        trend = claims.DECIDING[cid].trend[:60]
        assert (trend in claims_page) == (v.verdict in claims.UNDECIDED), (cid, v.verdict)


def _chromium() -> str:
    path = shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(path).exists():
        pytest.fail("Debian chromium is not installed: `make test` installs it (apt-get install chromium)")
    return path


@pytest.mark.browser
def test_book_in_a_browser_offline(built_book):
    from playwright.sync_api import sync_playwright

    proc, html = built_book
    assert proc.returncode == 0
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(html))
    handler.log_message = lambda *a, **k: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    external: list[str] = []
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=_chromium(),
                                        args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"])
            page = browser.new_page()

            def route(r):
                if r.request.url.startswith(base) or r.request.url.startswith("data:"):
                    r.continue_()
                else:
                    external.append(r.request.url)
                    r.abort()

            page.route("**/*", route)
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            toc = (REPO / "book" / "_toc.yml").read_text()
            chapters = ["intro"] + [line.split("file:")[1].strip() for line in toc.splitlines() if "file:" in line]
            for name in chapters:
                resp = page.goto(f"{base}/{name}.html")
                assert resp is not None and resp.ok, name
                heading = page.locator("h1").first.inner_text()
                source = (REPO / "book" / f"{name}.md").read_text()
                assert heading.strip() and heading.strip().rstrip("#").strip() in source, (name, heading)
            page.goto(f"{base}/index.html")
            page.wait_for_selector("mjx-container", timeout=30_000)
            assert page.locator("mjx-container").count() > 0  # MathJax rendered, from the local copy

            page.goto(f"{base}/perturbations.html")
            handle = page.locator(".noUi-handle").first
            handle.wait_for(timeout=30_000)

            def visible_image() -> str:
                return page.evaluate(
                    "() => [...document.querySelectorAll('.widget-stack img, .jupyter-widgets img')]"
                    ".filter(i => i.offsetParent !== null).map(i => i.src.slice(-200)).join('|')"
                )

            before = visible_image()
            assert before, "no explorer image is visible"
            handle.focus()
            page.keyboard.press("ArrowRight")
            page.wait_for_timeout(500)
            after = visible_image()
            assert after and after != before, "moving the slider did not change the displayed image"
            assert not [e for e in errors if "define is not defined" in e or "require" in e.lower()], errors
            browser.close()
    finally:
        server.shutdown()
    assert external == [], f"the book made external requests: {external}"
