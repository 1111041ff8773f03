"""report.html in a real headless Chromium (Debian's ``chromium``): it renders offline, one LR-curve
plot per task with the study's panel beside a GLUE task, the tables, no console errors. The
screenshot is kept in ``test-artifacts/`` (``LORASWEEP_TEST_ARTIFACTS`` moves it)."""

from __future__ import annotations

import functools
import math
import os
import re
import shutil
import subprocess
from pathlib import Path

import optuna
import pytest
from helpers import tell_waiting

from lorasweep.config import SweepSpec, VariantSpec
from lorasweep.report import collect_rows, summarise, write_report
from lorasweep.sweep.store import open_storage
from lorasweep.sweep.study import study_name, sync_sweep

ARTIFACTS = Path(os.environ.get("LORASWEEP_TEST_ARTIFACTS",
                                Path(__file__).resolve().parents[2] / "test-artifacts"))
_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
          "--disable-background-networking", "--disable-component-update", "--disable-sync",
          "--virtual-time-budget=15000"]


def _chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        if os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no"):
            pytest.fail("chromium is not installed in CI (.ci/run installs it)", pytrace=False)
        pytest.skip("chromium is not installed (apt-get install chromium)")
    return path


def _browser(chromium: str, profile: Path, *args: str) -> subprocess.CompletedProcess:
    profile.mkdir()
    return subprocess.run([chromium, *_FLAGS, f"--user-data-dir={profile}", *args],
                          capture_output=True, text=True, timeout=180)


def _outcome(key: str, peak: float, task: str, lr: float, seed: int):
    """A trial's score: peaks at 10^peak; dora fails at (1e-5, seed 1) and diverges at 1e-2."""
    if (key, lr, seed, task) == ("dora", 1e-5, 1, "sentiment"):
        return None, {"fail_reason": "RuntimeError: out of memory"}
    score = 0.9 - 0.1 * abs(math.log10(lr) - peak) + 0.01 * seed
    return score, {"metric": "accuracy", "validation_accuracy": score,
                   "test_accuracy": score - 0.01, "best_validation_accuracy": score,
                   "diverged": lr == 1e-2 and key == "dora",
                   "validation_is_test": task != "sentiment", "steps": 40,
                   "train_time_s": 4.0, "peak_memory_mb": 300.0,
                   "trainable_params": 2000 if key == "dora" else 1000,
                   "loss_curve": [[s, 0.7 * math.exp(-s * lr * 100) + 0.1] for s in range(1, 41, 3)],
                   "config": {"lr": lr, "seed": seed}, "host": "node-1", "device": "cpu"}


@pytest.fixture(scope="module")
def report_html(tmp_path_factory) -> Path:
    """Two tasks (one of the study's GLUE family), three variants, two seeds; one failure."""
    tmp = tmp_path_factory.mktemp("html")
    url = f"journal:{tmp / 's.journal'}"
    storage = open_storage(url)
    for task in ("sentiment", "glue-rte"):
        for key, peak in (("lora", -4), ("loraplus", -3), ("dora", -3)):
            variant = VariantSpec(key)
            spec = SweepSpec(name="demo", task=task, variants=[variant],
                             lrs=[1e-5, 1e-4, 1e-3, 1e-2], seeds=[0, 1], storage=url)
            sync_sweep(spec, storage)
            study = optuna.load_study(study_name=study_name(spec, variant, task), storage=storage)
            tell_waiting(study, functools.partial(_outcome, key, peak, task))
    rows = collect_rows(url)
    return write_report(summarise(rows), rows, tmp / "report")["report.html"]


def test_report_html_is_self_contained(report_html):
    text = report_html.read_text()
    assert not re.search(r"<script[^>]+src=", text)  # plotly's JavaScript is inlined
    assert not re.search(r"<link[^>]+href=\"?https?:", text)
    assert "node-1" in text and "out of memory" in text  # provenance and the failed trial


def test_report_html_renders_in_chromium(report_html, tmp_path):
    chromium = _chromium()
    dom = _browser(chromium, tmp_path / "p1", "--dump-dom", report_html.as_uri())
    assert dom.returncode == 0, dom.stderr[-2000:]
    html = dom.stdout
    sections = html.split('<section class="task">')[1:]
    assert len(sections) == 2
    for section in sections:
        plots = section.count('class="plot-container plotly"')
        assert plots == 2, plots  # the LR curves and the training losses, drawn
        assert section.count('class="main-svg"') >= 2
        assert '<table class="tuned">' in section
    glue = next(s for s in sections if "glue-rte" in s.split("</h2>")[0])
    assert "the study:" in glue and '<table class="reference">' in glue  # the study's panel
    sentiment = next(s for s in sections if "sentiment" in s.split("</h2>")[0])
    assert '<table class="reference">' not in sentiment  # the study has no sentiment curves


def test_report_html_has_no_console_errors_and_a_screenshot(report_html, tmp_path):
    chromium = _chromium()
    shot = tmp_path / "report.png"
    proc = _browser(chromium, tmp_path / "p2", "--enable-logging=stderr", "--v=0",
                    "--window-size=1400,2400", f"--screenshot={shot}", report_html.as_uri())
    assert proc.returncode == 0, proc.stderr[-2000:]
    # Chromium logs every console message (errors and uncaught exceptions too) as CONSOLE lines.
    console = [line for line in proc.stderr.splitlines() if ":CONSOLE" in line]
    assert console == []
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 50_000
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shutil.copy(shot, ARTIFACTS / "report-html.png")


# ------------------------------------------------------------- an adaptive search's report

_PROBE = """<script>window.addEventListener("load", () => {
  const plots = [...document.querySelectorAll(".js-plotly-plot")].map(gd => gd.data.map(t => ({
    name: t.name, text: t.text || null, hover: t.hovertemplate || null, n: (t.x || []).length,
    legend: t.showlegend !== false})));
  const pre = document.createElement("pre"); pre.id = "probe";
  pre.textContent = JSON.stringify(plots); document.body.appendChild(pre);
});</script>"""


@pytest.fixture(scope="module")
def adaptive_html(tmp_path_factory) -> Path:
    """The default sweep's shape (three variants, seven LRs, the adaptive search), reported."""
    from helpers import adaptive_default_sweep

    tmp = tmp_path_factory.mktemp("adaptive-html")
    rows = collect_rows(adaptive_default_sweep(tmp), "default")
    for r in rows:  # the synthetic curve trains nothing: each trial's loss as a real one records it
        r["loss_curve"] = [[s, 0.7 / (1 + s * r["lr"] * 50)] for s in range(1, int(80 * r["budget"]), 4)]
    return write_report(summarise(rows), rows, tmp / "report")["report.html"]


def test_an_adaptive_search_shows_its_rungs_in_chromium(adaptive_html, tmp_path):
    """Drawn by Chromium: each variant's first rung over all seven learning rates (the curve),
    every point's fidelity in its hover, the rungs of a point named apart in the provenance,
    and a legend on the training-loss panel."""
    import html as html_lib
    import json

    chromium = _chromium()
    probed = tmp_path / "probed.html"
    probed.write_text(adaptive_html.read_text().replace("</body>", _PROBE + "</body>"))
    dom = _browser(chromium, tmp_path / "p3", "--dump-dom", probed.as_uri())
    assert dom.returncode == 0, dom.stderr[-2000:]
    page = dom.stdout
    found = re.search(r'<pre id="probe">(.*?)</pre>', page, re.S)
    assert found, "the page's plots never ran"
    curves, losses = json.loads(html_lib.unescape(found.group(1)))
    for tag in ("lora-r8-a16", "loraplus-r8-a16", "adalora-r8-a16"):
        (first,) = [t for t in curves if t.get("name") == f"{tag} at 30% (validation)"]
        assert first["n"] == 7  # the first rung: every learning rate of the grid
        assert all("fidelity: 30% of the schedule" in h for h in first["text"])
        (full,) = [t for t in curves if t.get("name") == tag]
        assert all("fidelity: 100% of the schedule" in h for h in full["text"])
    # the training-loss panel: one legend entry per variant, each trial (rung) named on hover
    assert sorted(t.get("name") for t in losses if t["legend"]) == ["adalora-r8-a16", "lora-r8-a16",
                                                                 "loraplus-r8-a16"]
    assert any("30% of the schedule" in t["hover"] for t in losses)
    legend = re.findall(r'class="legendtext"[^>]*data-unformatted="([^"]+)"', page)
    assert {"lora-r8-a16 at 30% (validation)", "lora-r8-a16"} <= set(legend)  # drawn legends
    assert legend.count("adalora-r8-a16") >= 2  # in the curves' and in the losses' legend
    # the provenance names a point's rungs apart: no two summaries alike
    summaries = re.findall(r"<details><summary>(.*?)</summary>", page)
    assert len(summaries) == len(set(summaries)) == 27
    assert sum("30% of the schedule" in s for s in summaries) == 21


# ------------------------------------------------------------- a transfer search's report

_TRANSFER_PROBE = """<script>window.addEventListener("load", () => {
  const gd = document.querySelector(".js-plotly-plot");
  const out = {traces: gd.data.map(t => ({name: t.name, x: t.x || [], text: t.text || null})),
               shapes: (gd.layout.shapes || []).map(s => ({x0: s.x0, x1: s.x1, xref: s.xref})),
               titles: (gd.layout.annotations || []).map(a => a.text)};
  const pre = document.createElement("pre"); pre.id = "probe";
  pre.textContent = JSON.stringify(out); document.body.appendChild(pre);
});</script>"""


@pytest.fixture(scope="module")
def transfer_html(tmp_path_factory) -> tuple[Path, dict]:
    """A transfer sweep (LoRA, then LoRA+ whose prior x0.1 is a decade off, so its window
    extends) on the synthetic curves, run by the real worker loop; reported as `report` does."""
    from test_transfer_search import _spec, _sweep

    from lorasweep.report.transfer import transfer_rows
    from lorasweep.sweep.synthetic import SyntheticCurve

    tmp = tmp_path_factory.mktemp("transfer-html")
    url = f"sqlite:///{tmp / 's.db'}"
    _sweep(_spec(tmp, url), SyntheticCurve(peaks=(("lora", -3.0), ("loraplus", -3.0))))
    rows, transfer = collect_rows(url, "transfer"), transfer_rows(url, "transfer")
    for r in rows:
        r["loss_curve"] = [[s, 0.7 / (1 + s * r["lr"] * 50)] for s in range(1, 20, 4)]
    page = write_report(summarise(rows), rows, tmp / "report", transfer=transfer)["report.html"]
    (plus,) = [r for r in transfer if r["variant"] == "loraplus"]
    return page, plus


def test_a_transfer_search_shows_what_it_trusted_in_chromium(transfer_html, tmp_path):
    """Drawn by Chromium: the section (per variant LoRA's LR, prior shift, predicted LR, window,
    extended, chosen LR and its shift), titled as a search; on the curve, LoRA+'s window shaded
    and its squares at the window's LRs, its prediction a diamond, the rungs named as the
    transfer search's (never the adaptive's)."""
    import html as html_lib
    import json

    from lorasweep.report.transfer import transfer_cells

    page, plus = transfer_html
    assert plus["extended"] and not plus["widened"] and len(plus["window"]) == 3
    chromium = _chromium()
    probed = tmp_path / "probed.html"
    probed.write_text(page.read_text().replace("</body>", _TRANSFER_PROBE + "</body>"))
    dom = _browser(chromium, tmp_path / "p4", "--dump-dom", probed.as_uri())
    assert dom.returncode == 0, dom.stderr[-2000:]
    drawn = dom.stdout
    found = re.search(r'<pre id="probe">(.*?)</pre>', drawn, re.S)
    assert found, "the page's plots never ran"
    plot = json.loads(html_lib.unescape(found.group(1)))
    # the section: the same cells as the terminal's and report.md's, in a table of its own
    assert "Transfer search: what it trusted (a search, not a full grid)" in drawn
    table = re.search(r'<table class="transfer">(.*?)</table>', drawn, re.S).group(1)
    cells = [html_lib.unescape(c) for c in re.findall(r"<td>(.*?)</td>", table)]
    assert cells == transfer_cells(plus)
    assert "extended" in cells and f"{plus['predicted_lr']:.3g}" in cells
    assert "x0.1 (4 tables, 0 sweeps)" in cells  # the study's prior for LoRA+
    # the curve: the rungs are the transfer search's
    traces = {t.get("name"): t for t in plot["traces"]}
    assert any("a rung of the transfer search" in t for t in plot["titles"])
    assert not any("adaptive" in (h or "") for t in plot["traces"] for h in (t["text"] or []))
    rung = traces["loraplus-r8-a16 at 30% (validation)"]
    assert all("(a rung of the transfer search)" in h for h in rung["text"])
    # LoRA+'s window and prediction on its first rung; LoRA, the reference, has neither
    window = traces["loraplus-r8-a16 window probed first"]
    assert window["x"] == pytest.approx(plus["window"])
    assert set(plus["window"]) <= set(rung["x"]) and len(rung["x"]) > 3  # then extended
    (predicted,) = traces["loraplus-r8-a16 predicted LR"]["x"]
    assert predicted == pytest.approx(plus["predicted_lr"])
    assert min(plus["window"]) <= predicted <= max(plus["window"])
    assert "lora-r8-a16 predicted LR" not in traces
    (band,) = plot["shapes"]
    assert band["x0"] < min(plus["window"]) < max(plus["window"]) < band["x1"]
    assert band["x1"] < 2 * max(plus["window"])  # the window alone, not its extensions
