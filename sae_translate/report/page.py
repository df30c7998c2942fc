"""The HTML report: one self-contained file of plotly figures about a run and its labels.

Sections: the run's features (density, maximum activations, a sampled frequency/activation
scatter), label scores per method and scorer, ground-truth accuracy (toy worlds), translator
training curves and its shared latent, and per-feature cards (labels with scores, activation
histogram, top and quantile windows with firing tokens shaded by activation).

plotly.js is embedded once, inline, so the file opens offline. One script at the end of the page
draws every figure, then records in a hidden ``#report-status`` element how many figures were
drawn, which ones drew no data, and any JavaScript error; a visible banner tells the reader when
something failed (the browser test reads the same element).

Big runs stay small: distributions are binned here (their size does not grow with d_sae),
scatter plots are sampled to ``max_points``, and cards are drawn for at most ``max_cards``
features unless features are named.
"""

from __future__ import annotations

import html
from pathlib import Path

from plotly.offline import get_plotlyjs

from sae_translate.errors import UserError
from sae_translate.report.base import Page, ReportConfig, ReportResult, _table
from sae_translate.report.figures import (
    LabelTables,
    cards_section,
    features_section,
    ground_truth_section,
    latent_section,
    read_label_tables,
    resolve_db,
    scores_section,
    select_card_features,
    translator_section,
)
from sae_translate.store.atomic import atomic_write_text
from sae_translate.store.h5 import RunStore

CSS = """
.rule { font-size: 0.75em; color: #555; background: #eef; border-radius: 3px; padding: 0 4px; }
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0 auto;max-width:1200px;
padding:0 20px 60px;color:#222}
h1{margin-top:24px}h2{border-bottom:2px solid #ddd;padding-bottom:4px;margin-top:40px}
.note{color:#666;font-style:italic}.meta{color:#555;margin:2px 0}
.table{border-collapse:collapse;margin:8px 0;font-size:14px}
.table td,.table th{border:1px solid #ddd;padding:3px 8px;text-align:left;vertical-align:top}
.table th{background:#f5f5f5}.alt{color:#777;font-size:12px}
.card{border:1px solid #ddd;border-radius:6px;padding:8px 16px;margin:18px 0;background:#fff}
.card h3{margin:6px 0}.card h4{margin:10px 0 4px}
.card-body{display:flex;gap:16px;flex-wrap:wrap}.card-left{flex:1 1 420px}.card-right{flex:1 1 420px}
.window{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:13px;white-space:pre-wrap;
margin:2px 0;line-height:1.6}
.window .act{display:inline-block;width:56px;color:#888;text-align:right;margin-right:10px}
.tok.fire{border-radius:3px;padding:0 1px}
#card-filter{width:360px;padding:4px 8px;margin:6px 0}
.index a{margin-right:6px;font-size:13px}
#report-banner{display:none;background:#fdd;border:1px solid #c00;padding:8px;margin:8px 0}
nav a{margin-right:14px}
"""

# Registered before any other script, so errors anywhere on the page are recorded.
ERROR_CAPTURE_JS = """
window.reportErrors = [];
window.addEventListener('error', function (e) {
  window.reportErrors.push(String(e.message || e.type) + (e.filename ? ' at ' + e.filename + ':' + e.lineno : ''));
});
window.addEventListener('unhandledrejection', function (e) {
  window.reportErrors.push('unhandled rejection: ' + String(e.reason));
});
"""

RENDER_JS = """
(function () {
  var divs = Array.prototype.slice.call(document.querySelectorAll('div.report-figure'));
  var jobs = divs.map(function (div) {
    try {
      var spec = JSON.parse(document.getElementById(div.id + '-spec').textContent);
      return Plotly.newPlot(div, spec.data, spec.layout, {responsive: true, displaylogo: false});
    } catch (e) {
      window.reportErrors.push(div.id + ': ' + e);
      return Promise.resolve();
    }
  });
  function points(trace) {
    var n = 0;
    ['x', 'y', 'z', 'values'].forEach(function (k) {
      var v = trace[k];
      if (v && typeof v.length === 'number') n = Math.max(n, v.length);
    });
    return n;
  }
  Promise.allSettled(jobs).then(function (results) {
    results.forEach(function (r, i) {
      if (r.status === 'rejected') window.reportErrors.push(divs[i].id + ': ' + r.reason);
    });
    var empty = divs.filter(function (div) {
      var traces = div._fullData || [];
      var drawn = div.querySelector('svg.main-svg') !== null;
      return !drawn || !traces.some(function (t) { return points(t) > 0; });
    }).map(function (div) { return div.id; });
    var status = document.getElementById('report-status');
    var result = {figures: divs.length, drawn: divs.length - empty.length, empty: empty,
                  errors: window.reportErrors};
    status.textContent = JSON.stringify(result);
    status.setAttribute('data-state', 'done');
    if (empty.length || window.reportErrors.length) {
      var banner = document.getElementById('report-banner');
      banner.textContent = 'Some figures failed to render: ' + JSON.stringify(result);
      banner.style.display = 'block';
    }
  });
  var filter = document.getElementById('card-filter');
  if (filter) filter.addEventListener('input', function () {
    var q = filter.value.trim().toLowerCase();
    document.querySelectorAll('section.card').forEach(function (card) {
      card.style.display = !q || card.getAttribute('data-search').indexOf(q) >= 0 ? '' : 'none';
    });
  });
})();
"""


def _run_summary(run: RunStore, tables: LabelTables | None, db: Path | None, run_id: str) -> str:
    a = run.attrs
    rows = [
        ["model", a.get("model", "")],
        ["hook", a.get("hook", "")],
        ["SAE", a.get("sae", "")],
        ["dataset", a.get("dataset", "")],
        ["features (d_sae)", f"{run.d_sae:,}"],
        ["tokens", f"{run.n_tokens:,} in {run.n_seq:,} sequences of {run.ctx}"],
        ["held-out sequences", f"{len(run.heldout_seqs):,}"],
        ["run store", str(run.path)],
    ]
    if a.get("world"):
        rows.append(["toy world", a["world"]])
    rows.append(
        [
            "labels",
            f"{db} (run_id {run_id!r})"
            if tables is not None
            else "none"
            if db is None
            else f"none for run_id {run_id!r} in {db}",
        ]
    )
    return _table(None, rows, cls="table summary")


def write_report(cfg: ReportConfig) -> ReportResult:
    """Write the HTML report of ``cfg.run`` and return where, with what it holds."""
    cfg.validate()
    with RunStore.open(cfg.run) as run:  # a damaged file read on the way becomes one clear error
        return _write(run, cfg)


def _write(run: RunStore, cfg: ReportConfig) -> ReportResult:
    run_id = cfg.run_id or run.dir.name
    out = Path(cfg.out) if cfg.out else run.dir / "report.html"
    features = select_card_features(run, cfg)
    db, db_reason = resolve_db(cfg)
    tables = read_label_tables(db, run_id, features) if db is not None else None
    if db is not None and tables is None:
        db_reason = (
            f"{db} has no labels for run_id {run_id!r}; run `sae-translate label --run {cfg.run}` (or pass --run-id)"
        )

    page = Page()
    notes: dict[str, str] = {}
    sections: list[tuple[str, str, str]] = []  # (anchor, title, html)

    def add(anchor: str, title: str, body: str, note: str = "") -> None:
        sections.append((anchor, title, body))
        if note:
            notes[anchor] = note

    add("features", "Features", features_section(page, run, tables, cfg))
    add("scores", "Label scores", scores_section(page, tables, db_reason), "" if tables else db_reason)
    add("ground-truth", "Ground-truth accuracy", ground_truth_section(page, tables, run, db_reason))
    body, note = translator_section(page, run, cfg)
    add("translator", "Translator training", body, note)
    body, note = latent_section(page, run, cfg)
    add("latent", "Shared latent", body, note)
    add("cards", "Feature cards", cards_section(page, run, features, tables, cfg))

    title = cfg.title or f"sae-translate report: {run_id}"
    nav = " ".join(f'<a href="#{a}">{html.escape(t)}</a>' for a, t, _ in sections)
    content = "".join(f'<h2 id="{a}">{html.escape(t)}</h2>{b}' for a, t, b in sections)
    document = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{CSS}</style>"
        f"<script>{ERROR_CAPTURE_JS}</script>"
        f'<script type="text/javascript">{get_plotlyjs()}</script></head><body>'
        f'<h1>{html.escape(title)}</h1><div id="report-banner"></div>'
        f"{_run_summary(run, tables, db, run_id)}<nav>{nav}</nav>{content}"
        '<pre id="report-status" data-state="pending" hidden></pre>'
        f"<script>{RENDER_JS}</script></body></html>\n"
    )

    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out, document)  # a reader never sees a half-written report
    except OSError as e:
        raise UserError(f"cannot write {out}: {e.strerror or e}; choose a writable --out") from e
    return ReportResult(
        path=out, n_figures=page.n_figures, n_cards=len(features), size_bytes=out.stat().st_size, notes=notes
    )
