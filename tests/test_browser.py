"""The dashboards as a person sees them: headless Chromium opens the Evidently UI's three project dashboards and the
audit report (artifacts/audit/audit.html), waits for the panels to draw, checks their titles and values and that the
page logged no error, and saves a full-page screenshot of each: in the test's tmp folder, and also in
$MIROPS_SCREENSHOTS when set (e.g. MIROPS_SCREENSHOTS=docs/dashboards).

The browser is Debian's `chromium`, driven by the `playwright-core` npm package (it downloads no browser). Both
are installed when missing (`mirops.debian.ensure_packages`: root or password-less sudo; npm into
~/.cache/mirops-browser, or $MIROPS_BROWSER_CACHE); the test is skipped, with the reason, when that cannot be
done. It looks at the test session's tiny pipeline run (tests/test_dashboards.py `filled_project`), or at an
existing project with MIROPS_DASHBOARDS_ROOT=DIR (its dashboards filled by `mirops pipeline run` or `mirops ui`).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from mirops.debian import ensure_packages
from mirops.monitor import projects as boards
from tests.conftest import REPO, needs_soundfonts
from tests.test_dashboards import (
    EMBEDDING_PANELS,
    embedding_panels_plottable,
    evidently_server,
    filled_project,
    project_ids,
)

PLAYWRIGHT = "playwright-core@1.65"
CACHE = Path(os.environ.get("MIROPS_BROWSER_CACHE", Path.home() / ".cache" / "mirops-browser"))
SCREENSHOT_NAMES = {boards.DATA_QUALITY: "data-quality", boards.DRIFT: "drift", boards.MODELS: "models",
                    "audit": "audit"}

# Opens each page, waits for the named panels to draw, reports what it saw as one JSON object per page.
RUNNER = r"""
const { chromium } = require(process.env.PLAYWRIGHT_CORE);
const config = JSON.parse(require('fs').readFileSync(process.argv[2], 'utf8'));

function panels(titles) {  // in the page: per panel title, its drawn data marks and its counter numbers
  const out = {};
  for (const title of titles) {
    const heading = [...document.querySelectorAll('h1,h2,h3,h4,h5,h6')].find(h => h.innerText.trim() === title);
    let card = heading;
    while (card && !String(card.className || '').includes('MuiCard-root')) card = card.parentElement;
    out[title] = card ? {
      marks: card.querySelectorAll('[class*="MuiBarElement-root"], [class*="MuiMarkElement-root"]').length,
      numbers: [...card.querySelectorAll('h2')].map(h => h.innerText.trim()),
      text: card.innerText,
    } : null;
  }
  return out;
}

(async () => {
  const browser = await chromium.launch({ executablePath: config.chromium, args: ['--no-sandbox'] });
  const context = await browser.newContext({ viewport: { width: 1400, height: 900 } });
  for (const target of config.pages) {
    const page = await context.newPage();
    const errors = [];
    page.on('console', m => { if (m.type() === 'error') errors.push(`console: ${m.text()}`); });
    page.on('pageerror', e => errors.push(`page error: ${e}`));
    page.on('requestfailed', r => errors.push(`request failed: ${r.url()} ${r.failure() && r.failure().errorText}`));
    const result = { name: target.name, errors, missing: [], timed_out: false };
    try {
      await page.goto(target.url, { waitUntil: 'networkidle', timeout: config.timeout_ms });
      for (const title of target.titles) {
        try {
          await page.getByText(title, { exact: true }).first().waitFor({ timeout: config.timeout_ms });
        } catch (e) { result.missing.push(title); }
      }
      if (target.plots.length) {  // plots fetch their series after the page: wait until each has drawn marks
        try {
          await page.waitForFunction(([fn, titles]) => {
            const found = eval(`(${fn})`)(titles);
            return titles.every(t => found[t] && found[t].marks > 0);
          }, [panels.toString(), target.plots], { timeout: config.timeout_ms, polling: 250 });
        } catch (e) { result.timed_out = true; }
      }
      await page.waitForTimeout(1000);  // the charts' appearing animation
      result.panels = await page.evaluate(panels, target.titles);
      result.tables = await page.evaluate(() => [...document.querySelectorAll('table')].map(t => t.rows.length));
      result.text = await page.evaluate(() => document.body.innerText);
      await page.screenshot({ path: target.screenshot, fullPage: true });
    } catch (e) {
      errors.push(`runner: ${e}`);
    }
    console.log(JSON.stringify(result));
    await page.close();
  }
  await browser.close();
})();
"""


def _run(argv: list[str], timeout: float) -> tuple[bool, str]:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return False, str(exc)
    return done.returncode == 0, (done.stdout + done.stderr)[-2000:]


def _chromium() -> Path:
    def find() -> str | None:
        return next(filter(None, map(shutil.which, ("chromium", "chromium-browser"))), None)

    if find() is None and (why := ensure_packages(["chromium"])):
        pytest.skip(f"headless Chromium is missing and could not be installed: {why}")
    return Path(find() or pytest.skip("apt-get reported success but no chromium is on PATH"))


def _playwright_core() -> Path:
    if not (shutil.which("node") and shutil.which("npm")) and (why := ensure_packages(["nodejs", "npm"])):
        pytest.skip(f"node and npm are missing and could not be installed: {why}")
    module = CACHE / "node_modules" / "playwright-core"
    if not (module / "package.json").exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        ok, out = _run(["npm", "install", "--prefix", str(CACHE), "--no-audit", "--no-fund", PLAYWRIGHT], 600)
        if not ok or not (module / "package.json").exists():
            pytest.skip(f"npm install {PLAYWRIGHT} into {CACHE} failed: {out[-500:]}")
    return module


@pytest.fixture(scope="module")
def browser() -> tuple[Path, Path]:
    """(chromium, playwright-core module folder), installed if needed."""
    return _chromium(), _playwright_core()


@pytest.fixture(scope="module")
def project(tmp_path_factory, prefect_api) -> Path:
    return filled_project(tmp_path_factory.getbasetemp())


def _expected(project: Path) -> dict[str, dict]:
    """Per page: panel titles that must render, plots that must draw data, and text that must show."""
    from mlflow import MlflowClient

    from mirops.config import Settings
    from mirops.data.manifest import read_manifest
    from mirops.data.quarantine import read_quarantine
    from mirops.registry import tracking
    from mirops.registry.models import CHAMPION, alias_version

    settings = Settings.load(project)
    manifest, spec = read_manifest(settings.data_dir)
    checked = len(manifest) + len(read_quarantine(settings.data_dir))
    tracking.setup(settings)
    champions = {}
    for name in (settings.registry.model_name, settings.east.model_name):
        if MlflowClient().search_registered_models(filter_string=f"name = '{name}'"):
            champions[name] = alias_version(name, CHAMPION)

    def titles(panels) -> tuple[list[str], list[str], list[str]]:
        plotted = [p for p in panels if p.values and p.plot_params["plot_type"] in ("bar", "line")]
        counters = [p for p in panels if p.plot_params["plot_type"] == "counter"]
        return [p.title for p in panels], [p.title for p in plotted], [p.title for p in counters]

    dq = titles(boards.data_quality_panels(spec.classes, ["loudness_lufs", "spectral_centroid_hz", "silence_ratio",
                                                           "spectral_flatness"]))
    drift = titles(boards.drift_panels())
    models = titles(boards.models_panels([boards.Champion(name, version) for name, version in champions.items()]))
    skip = set() if embedding_panels_plottable() else set(EMBEDDING_PANELS)  # see tests/test_dashboards.py
    return {
        boards.DATA_QUALITY: {"titles": dq[0], "plots": dq[1], "counters": dq[2],
                              "numbers": {"Latest dataset version": str(checked)},
                              "texts": ["clips checked", "missing-label rate", *spec.classes[:3]]},
        boards.DRIFT: {"titles": drift[0], "plots": [t for t in drift[1] if t not in skip],
                       "counters": [t for t in drift[2] if t not in skip], "numbers": {},
                       "texts": ["share of drifted columns"]},
        boards.MODELS: {"titles": models[0], "plots": models[1], "counters": models[2],
                        "numbers": {f"{name}: champion": version for name, version in champions.items() if version},
                        "texts": [f"{name}: champion v{version}" for name, version in champions.items()]},
    }


@pytest.mark.slow
@needs_soundfonts
def test_dashboards_and_audit_report_render_with_data_in_chromium(project, browser, tmp_path):
    chromium, playwright = browser
    workspace = project / "dashboards" / "workspace"
    expected = _expected(project)
    audit_html = project / "artifacts" / "audit" / "audit.html"
    assert audit_html.exists(), "the pipeline wrote no audit report"
    with evidently_server(workspace, tmp_path / "logs") as ui:
        ids = project_ids(workspace)
        pages = [{"name": name, "url": f"{ui.url}/projects/{ids[name]}", "titles": want["titles"],
                  "plots": want["plots"], "screenshot": str(tmp_path / f"{SCREENSHOT_NAMES[name]}.png")}
                 for name, want in expected.items()]
        pages.append({"name": "audit", "url": audit_html.as_uri(), "titles": ["schema", "table: balance"],
                      "plots": [], "screenshot": str(tmp_path / "audit.png")})
        config = tmp_path / "pages.json"
        config.write_text(json.dumps({"chromium": str(chromium), "pages": pages, "timeout_ms": 30_000}))
        script = tmp_path / "runner.js"
        script.write_text(RUNNER)
        done = subprocess.run(["node", str(script), str(config)], capture_output=True, text=True, timeout=600,
                              env={**os.environ, "PLAYWRIGHT_CORE": str(playwright)})
    assert done.returncode == 0, done.stderr[-3000:]
    seen = {r["name"]: r for r in map(json.loads, done.stdout.splitlines())}

    if target := os.environ.get("MIROPS_SCREENSHOTS"):  # e.g. docs/dashboards, relative to the repository
        folder = Path(target) if Path(target).is_absolute() else REPO / target
        folder.mkdir(parents=True, exist_ok=True)
        for page in pages:
            shutil.copy(page["screenshot"], folder / Path(page["screenshot"]).name)

    for page in pages:
        result, name = seen[page["name"]], page["name"]
        assert Path(page["screenshot"]).stat().st_size > 10_000, f"{name}: no screenshot"
        assert not result["errors"], f"{name}: the browser reported errors: {result['errors']}"
        assert not result["missing"], f"{name}: panels never appeared: {result['missing']}"
        if name == "audit":  # the report's tables: one per suite and per reported table, each with rows
            assert "Dataset audit" in result["text"] and "dataset version" in result["text"]
            assert len(result["tables"]) >= 10 and min(result["tables"]) >= 2, result["tables"]
            continue
        want = expected[name]
        assert not result["timed_out"], f"{name}: plots without data: " + ", ".join(
            t for t in want["plots"] if not (result["panels"][t] or {}).get("marks"))
        for title in want["counters"]:  # Evidently's counters show 0 as "no value"
            numbers = result["panels"][title]["numbers"]
            assert numbers and all(n == "no value" or _is_number(n) for n in numbers), (name, title, numbers)
        for title, number in want["numbers"].items():
            assert number in result["panels"][title]["numbers"], (name, title, result["panels"][title]["numbers"])
        for text in want["texts"]:
            assert text in result["text"], f"{name}: {text!r} not shown"


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False
