"""Run the audit suites through Great Expectations Checkpoints and build GE's Data Docs from the results.

One fresh ephemeral (in-memory) context per audit: the suites keep their own names (no cache key in them),
nothing leaks from one project's audit into another's in the same process, and nothing is written but
the Data Docs site. The derived tables differ in shape, so each table gets its own Checkpoint (a Checkpoint
passes one DataFrame, through `batch_parameters`, to all of its validation definitions); all of them share
one run id, whose name is the dataset version.

Data Docs are built once, after the Checkpoints, with `build_data_docs` on this audit's results: what
`UpdateDataDocsAction` does, but the action rebuilds the site once per validation result, recompiling
GE's templates each time (measured: about 7 s more per audit of 13 suites, against about 0.5 s).
"""

from __future__ import annotations

import datetime as dt
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import pandas as pd

from mirops.audit.offline_index import add_offline_index
from mirops.audit.suites import Suite, SuiteError, index_columns

SITE = "mirops"  # the Data Docs site's name in the GE context
DATASOURCE = "mirops-audit"
PARTIAL_ROWS = 20  # unexpected rows GE reports per expectation (SUMMARY keeps audit.json small)
PLUGINS = Path(__file__).with_name("gx_plugins")  # custom_data_docs/styles: readable without the CDN styles
# Fields of a GE validation result that change on every run although data and suites did not.
_VOLATILE_META = ("run_id", "validation_time", "validation_id", "checkpoint_id")


@dataclass
class SuiteRun:
    """One suite's outcome: GE's validation result without its run-time fields, its per-expectation results
    in the order of the suite file (GE returns them in metric-graph order), and its Data Docs page."""

    suite: Suite
    raw: dict[str, Any]
    results: list[dict[str, Any]]
    page: Path | None = None


@dataclass
class CheckpointRun:
    runs: list[SuiteRun]
    data_docs: Path | None  # the site's index.html, when a site was built


def run_checkpoints(suites: list[Suite], tables: dict[str, pd.DataFrame], parameters: dict[str, Any],
                    run_name: str, data_docs_dir: Path | None = None) -> CheckpointRun:
    """Validate each suite's table; with `data_docs_dir`, build GE's Data Docs there (this audit's results;
    GE removes the pages of earlier audits from a site whose context no longer holds them)."""
    seen: dict[str, Path] = {}
    for suite in suites:
        if suite.name in seen:  # GE's stores (and the Data Docs pages) are keyed by suite name
            raise SuiteError(f"{suite.path}: suite name {suite.name!r} is also the name of {seen[suite.name]}")
        seen[suite.name] = suite.path
        missing = suite.parameters() - parameters.keys()
        if missing:
            raise SuiteError(f"{suite.path}: no value for suite parameter(s) {sorted(missing)}")
        if suite.table not in tables:
            raise SuiteError(f"{suite.path}: meta.table {suite.table!r} is not a derived table")
    import great_expectations as gx
    from great_expectations.core.run_identifier import RunIdentifier

    context = _context(data_docs_dir)
    datasource = context.data_sources.add_pandas(DATASOURCE)
    run_id = RunIdentifier(run_name=run_name, run_time=dt.datetime.now(dt.UTC))
    by_table: dict[str, list[Suite]] = {}
    for suite in suites:
        by_table.setdefault(suite.table, []).append(suite)
    outcome: dict[str, tuple[Any, Any]] = {}  # suite name -> (result key, GE validation result)
    gx_suites: dict[str, Any] = {}
    for table, members in by_table.items():
        batch = datasource.add_dataframe_asset(table).add_batch_definition_whole_dataframe("whole")
        for s in members:
            gx_suites[s.name] = context.suites.add(_gx_suite(s))
        definitions = [context.validation_definitions.add(
            gx.ValidationDefinition(name=s.name, data=batch, suite=gx_suites[s.name])) for s in members]
        result_format: dict[str, Any] = {"result_format": "SUMMARY", "partial_unexpected_count": PARTIAL_ROWS}
        if keys := index_columns(table, tables[table]):
            result_format["unexpected_index_column_names"] = keys
        checkpoint = context.checkpoints.add(gx.Checkpoint(
            name=f"mirops-audit-{table}", validation_definitions=definitions, result_format=result_format))
        names = set().union(*(s.parameters() for s in members))
        result = checkpoint.run(batch_parameters={"dataframe": tables[table]},
                                expectation_parameters={k: parameters[k] for k in names}, run_id=run_id)
        outcome.update({key.expectation_suite_identifier.name: (key, value)
                        for key, value in result.run_results.items()})
    runs = [_suite_run(suite, gx_suites[suite.name], outcome[suite.name][1]) for suite in suites]
    if data_docs_dir is None:
        return CheckpointRun(runs, None)
    return CheckpointRun(runs, _build_data_docs(context, runs, [outcome[s.name][0] for s in suites]))


def _context(data_docs_dir: Path | None) -> Any:
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")  # GE 1.24 sends nothing, other releases read this
    import great_expectations as gx
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        InMemoryStoreBackendDefaults,
        ProgressBarsConfig,
    )

    sites = {} if data_docs_dir is None else {SITE: {
        "class_name": "SiteBuilder",
        "show_how_to_buttons": False,  # the walkthrough modal needs GE's CDN scripts
        "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(data_docs_dir)},
        "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
    }}
    config = DataContextConfig(
        store_backend_defaults=InMemoryStoreBackendDefaults(init_temp_docs_sites=False),
        data_docs_sites=sites,
        plugins_directory=str(PLUGINS),
        progress_bars=ProgressBarsConfig(globally=False),  # tqdm bars would land on stderr of the CLI
        analytics_enabled=False,
    )
    return gx.get_context(mode="ephemeral", project_config=config)


def _gx_suite(suite: Suite) -> Any:
    """The suite as GE builds it, with GE's own `severity` set from ours (GE's default is critical)."""
    import great_expectations as gx

    payload = json.loads(json.dumps(suite.payload))
    for exp in payload.get("expectations", []):
        exp["severity"] = exp["meta"]["severity"]
    try:
        return gx.ExpectationSuite(**payload)
    except Exception as exc:  # GE raises pydantic/KeyError/ValueError for a malformed expectation
        raise SuiteError(f"{suite.path}: not a Great Expectations {gx.__version__} suite ({exc})") from exc


def _suite_run(suite: Suite, gx_suite: Any, result: Any) -> SuiteRun:
    # GE keeps the file's order in the suite it built; the validation result follows the metric graph.
    position = {exp.id: i for i, exp in enumerate(gx_suite.expectations)}
    results = []
    for entry in sorted(result.results, key=lambda r: position[r.expectation_config.id]):
        payload = entry.to_json_dict()
        payload.get("expectation_config", {}).pop("id", None)  # a fresh uuid in every context
        results.append(payload)
    raw = {**result.to_json_dict(), "results": results}
    for key in _VOLATILE_META:
        raw.get("meta", {}).pop(key, None)
    raw.get("meta", {}).get("batch_markers", {}).pop("ge_load_time", None)
    return SuiteRun(suite=suite, raw=raw, results=results)


def _build_data_docs(context: Any, runs: list[SuiteRun], keys: list[Any]) -> Path:
    from great_expectations.data_context.types.resource_identifiers import ExpectationSuiteIdentifier

    suite_keys = [ExpectationSuiteIdentifier(name=run.suite.name) for run in runs]
    urls = context.build_data_docs(site_names=[SITE], resource_identifiers=[*keys, *suite_keys])
    index = _path(urls[SITE])
    for run, key in zip(runs, keys, strict=True):
        [site] = context.get_docs_sites_urls(resource_identifier=key, site_name=SITE)
        run.page = _path(site["site_url"])
    add_offline_index(index, [(run.suite.name, bool(run.raw.get("success")), run.page) for run in runs])
    _remove_empty_folders(index.parent / "validations")  # GE deletes earlier audits' pages, not their folders
    return index


def _remove_empty_folders(folder: Path) -> None:
    for path in sorted(folder.rglob("*"), key=lambda p: len(p.parts), reverse=True):
        if path.is_dir() and not any(path.iterdir()):
            path.rmdir()


def _path(url: str) -> Path:
    return Path(unquote(urlparse(url).path))
