"""A static list of the audit's validation results, added to GE's Data Docs index page.

GE's index draws its tables with bootstrap-table, loaded from a CDN: offline the page shows no results
at all. The validation and suite pages themselves are static HTML (their styles, icons and charts come
from CDNs too, and `gx_plugins/.../data_docs_custom_styles.css` gives them plain fallbacks). This list
makes the index usable offline; a script hides it when GE's own table did load.
"""

from __future__ import annotations

import html
import os
from pathlib import Path

from mirops.atomic import atomic_write_bytes

MARKER = "mirops-offline-index"


def add_offline_index(index: Path, results: list[tuple[str, bool, Path | None]]) -> None:
    """Insert, before `</body>` of `index`, one row per (suite, success, validation page)."""
    page = index.read_text(encoding="utf-8")
    if f"id='{MARKER}'" in page or "</body>" not in page:  # already there, or not GE's page
        return
    rows = []
    for suite, success, result_page in results:
        link = Path(os.path.relpath(result_page, index.parent)).as_posix() if result_page else None
        status = "✔ passed" if success else "✘ failed"
        result_cell = f"<a href='{html.escape(link)}'>validation result</a>" if link else ""
        rows.append(
            f"<tr class='{'pass' if success else 'fail'}'><td>{html.escape(suite)}</td><td>{status}</td>"
            f"<td>{result_cell}</td>"
            f"<td><a href='expectations/{html.escape(suite)}.html'>expectation suite</a></td></tr>"
        )
    block = (
        f"<section id='{MARKER}' style='margin:1em 3em'><h2>Validation results of the latest audit</h2>"
        "<p>A static list (GE's table above needs its CDN scripts).</p>"
        "<table><tr><th>suite</th><th>status</th><th>result</th><th>suite</th></tr>" + "".join(rows) + "</table>"
        "</section><script>if (window.jQuery && window.jQuery.fn && window.jQuery.fn.bootstrapTable) "
        f"document.getElementById('{MARKER}').hidden = true;</script>"
    )
    atomic_write_bytes(index, page.replace("</body>", block + "</body>", 1).encode("utf-8"))
