"""The HTML report: built from a planted-feature run with real labels and scores, opened in
headless Chromium, which must draw every figure with data and raise no JavaScript error."""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from plotly.offline import get_plotlyjs

from sae_translate.bench.synthetic import make_synthetic_run
from sae_translate.errors import UserError
from sae_translate.label import BASELINES, LabelConfig, label_run
from sae_translate.report import ReportConfig, figures, write_report
from sae_translate.report.figures import pca_2d, read_training_log
from sae_translate.score import ScoreConfig, score_run
from sae_translate.store import db as label_db
from sae_translate.store.db import run_query

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
IN_CI = bool(os.environ.get("CI"))


def chromium_or_skip() -> str:
    if Path(CHROMIUM).exists():
        return CHROMIUM
    if IN_CI:
        pytest.fail("chromium is not installed; .ci/run installs Debian's chromium package")
    pytest.skip("chromium is not installed (apt-get install chromium)")


def chromium_args(profile: Path) -> list[str]:
    return [
        chromium_or_skip(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--hide-scrollbars",
        f"--user-data-dir={profile}",
        "--virtual-time-budget=30000",
        "--enable-logging=stderr",
        "--v=0",
    ]


def render(page: Path, profile: Path) -> tuple[dict, list[str], str]:
    """Load ``page`` headless; the page's own render status, console lines, and the final DOM."""
    proc = subprocess.run(
        [*chromium_args(profile), "--dump-dom", page.resolve().as_uri()], capture_output=True, text=True, timeout=180
    )
    dom = proc.stdout
    match = re.search(r'<pre id="report-status" data-state="(\w+)"[^>]*>([^<]*)</pre>', dom)
    assert match, f"no status element in the rendered page (chromium rc {proc.returncode}): {proc.stderr[-2000:]}"
    assert match.group(1) == "done", "the page never finished drawing its figures"
    console = [line for line in proc.stderr.splitlines() if ":CONSOLE" in line]
    return json.loads(match.group(2)), console, dom


def screenshot(page: Path, profile: Path, out: Path, height: int = 5000) -> Path:
    subprocess.run(
        [*chromium_args(profile), f"--window-size=1280,{height}", f"--screenshot={out}", page.resolve().as_uri()],
        capture_output=True,
        timeout=180,
        check=True,
    )
    return out


# ------------------------------------------------------------------ fixtures


def write_ground_truth(run, db: Path, trigger: np.ndarray) -> None:
    """The synthetic truth: each feature's concept is its trigger word; a label is right when
    its first item names that word (the ground_truth scorer's rule for a one-word concept)."""
    rows = run_query("SELECT feature, method, label FROM labels WHERE rank = 0", db).rows
    value = [float(label.split(", ")[0] == run.vocab[trigger[f]]) for f, _, label in rows]
    methods = sorted({m for _, m, _ in rows})
    summary = {
        "method": methods,
        "scorer": ["ground_truth"] * len(methods),
        "mean": [float(np.mean([v for (_, m, _), v in zip(rows, value) if m == method])) for method in methods],
        "n_scored": [sum(m == method for _, m, _ in rows) for method in methods],
        "n_excluded": [0] * len(methods),
    }
    feats = sorted({f for f, _, _ in rows})
    label_db.write_score_stage(
        db,
        run.dir.name,
        label_db.ScoreStageRows(
            scores={
                "feature": np.array([f for f, _, _ in rows], np.int32),
                "method": [m for _, m, _ in rows],
                "scorer": ["ground_truth"] * len(rows),
                "value": np.array(value),
            },
            summary=summary,
            true_concepts={
                "feature": np.array(feats, np.int32),
                "concept": [run.vocab[trigger[f]] for f in feats],
                "kind": ["lexical"] * len(feats),
                "status": ["planted"] * len(feats),
                "precision": np.full(len(feats), 0.9),
                "n_firing": np.full(len(feats), 10),
            },
            methods=methods,
            scorers=["ground_truth"],
        ),
    )


def write_training_log(run_dir: Path, steps: int = 300) -> Path:
    """A translator training log: one JSON object per step with its loss terms."""
    path = run_dir / "translator" / "log.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    with open(path, "w") as fh:
        for step in range(steps):
            decay = np.exp(-step / 80)
            record = {
                "step": step,
                "loss": 3 * decay + 0.1,
                "losses": {"dae": 2 * decay + 0.05 * rng.random(), "bt": decay + 0.05 * rng.random()},
                "lr": 1e-3,
                "time": step * 0.1,
            }
            fh.write(json.dumps(record) + "\n")
        fh.write('{"step": 300, "loss"')  # the line a killed run leaves half-written
    return path


def shared_latents(run_dir: Path, n_per_language: int, seed: int):
    """Two languages whose sentence latents sit in offset clouds, as a partly aligned
    translator's encoder gives them."""
    rng = np.random.default_rng(seed)
    feat = rng.normal(size=(n_per_language, 16))
    text = rng.normal(size=(n_per_language, 16)) + 3.0
    return (
        np.concatenate([feat, text]),
        ["feature"] * n_per_language + ["text"] * n_per_language,
        [f"sentence {i}" for i in range(2 * n_per_language)],
    )


@pytest.fixture(scope="module")
def labelled_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    syn = make_synthetic_run(root / "run", n_seq=160, ctx=32, d_sae=24, p_fire=0.95, noise_per_token=0.3, seed=3)
    db = root / "labels.duckdb"
    label_run(LabelConfig(run=str(syn.run.dir), db=str(db), methods=BASELINES))
    score_run(ScoreConfig(run=str(syn.run.dir), db=str(db), scorers=("detection", "simulation")))
    write_ground_truth(syn.run, db, syn.trigger)
    write_training_log(syn.run.dir)
    return syn, db


@pytest.fixture(scope="module")
def full_report(labelled_run, tmp_path_factory):
    syn, db = labelled_run
    mp = pytest.MonkeyPatch()
    mp.setattr(figures, "shared_latents", shared_latents)
    try:
        result = write_report(
            ReportConfig(run=str(syn.run.dir), db=str(db), out=str(tmp_path_factory.mktemp("out") / "report.html"))
        )
    finally:
        mp.undo()
    return syn, db, result


# ------------------------------------------------------------------ the browser


def test_every_figure_renders_with_data_in_chromium(full_report, tmp_path):
    syn, _, result = full_report
    assert result.notes == {}  # every section had data
    # 3 feature figures + scores + 2 ground truth + training + latent + one histogram per card
    assert result.n_cards == syn.run.d_sae
    assert result.n_figures == 8 + result.n_cards
    status, console, dom = render(result.path, tmp_path / "profile")
    assert status == {"figures": result.n_figures, "drawn": result.n_figures, "empty": [], "errors": []}
    assert console == []
    for title in (
        "Feature density",
        "Maximum activation per feature",
        "Label score distributions",
        "Ground-truth accuracy per method",
        "Ground-truth accuracy per true concept",
        "Translator training",
        "Translator shared latent",
    ):
        assert re.search(rf'class="gtitle"[^>]*>{re.escape(title)}', dom), title
    shot = screenshot(result.path, tmp_path / "profile", tmp_path / "report.png")
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 100_000  # a blank page is a few KB


def test_the_page_reports_empty_figures_and_script_errors(full_report, tmp_path):
    """The in-page check is what the test above relies on: it must see a broken page."""
    _, _, result = full_report
    page = result.path.read_text()
    empty_spec = json.dumps({"data": [{"type": "scatter", "x": [], "y": []}], "layout": {}})
    broken = page.replace(
        '<pre id="report-status"',
        f'<div class="report-figure" id="fig-broken"></div>'
        f'<script type="application/json" id="fig-broken-spec">{empty_spec}</script>'
        "<script>undefinedFunction();</script>"
        '<pre id="report-status"',
        1,
    )
    path = tmp_path / "broken.html"
    path.write_text(broken)
    status, console, _ = render(path, tmp_path / "profile")
    assert status["empty"] == ["fig-broken"]
    assert status["drawn"] == result.n_figures
    assert len(status["errors"]) == 1 and "undefinedFunction" in status["errors"][0]
    assert any("undefinedFunction" in line for line in console)


# ------------------------------------------------------------------ content


def test_cards_mark_the_planted_trigger_and_show_labels_and_scores(full_report):
    syn, db, result = full_report
    page = result.path.read_text()
    vocab = syn.run.vocab
    for f in range(syn.run.d_sae):
        card = page.split(f'id="feature-{f}"', 1)[1].split("</section>", 1)[0]
        label, kind = run_query(
            f"SELECT label, rule_kind FROM labels WHERE feature = {f} AND method = 'top-tokens'", db
        ).rows[0]
        assert f'<td>{label} <span class="rule">{kind.replace("_", " ")}</span></td>' in card
        assert "Top activations" in card and "Across activation quantiles" in card
        fired = re.findall(r'class="tok fire"[^>]*>([^<]*)</span>', card)
        # the trigger is the most common firing token in the feature's windows
        assert max(set(fired), key=fired.count) == vocab[syn.trigger[f]]


def test_named_features_limit_the_cards(labelled_run, tmp_path):
    syn, db = labelled_run
    result = write_report(
        ReportConfig(run=str(syn.run.dir), db=str(db), out=str(tmp_path / "r.html"), features=(5, 2, 5))
    )
    page = result.path.read_text()
    assert result.n_cards == 2
    assert sorted(re.findall(r'<section class="card" id="feature-(\d+)"', page)) == ["2", "5"]
    with pytest.raises(UserError, match="out of range"):
        write_report(ReportConfig(run=str(syn.run.dir), db=str(db), features=(24,)))
    few = write_report(ReportConfig(run=str(syn.run.dir), db=str(db), out=str(tmp_path / "few.html"), max_cards=4))
    assert few.n_cards == 4


def test_sections_without_data_say_so_in_text(tmp_path, monkeypatch):
    syn = make_synthetic_run(tmp_path / "bare", n_seq=40, ctx=16, d_sae=8, seed=4)
    monkeypatch.chdir(tmp_path)  # no stores/labels.duckdb here
    result = write_report(ReportConfig(run=str(syn.run.dir)))
    assert result.path == syn.run.dir / "report.html"
    assert set(result.notes) == {"scores", "translator", "latent"}
    page = result.path.read_text()
    for note in result.notes.values():
        assert html.escape(note) in page
    # 3 feature figures and one histogram per card, nothing else
    assert result.n_figures == 3 + result.n_cards
    # without label-stage examples, cards show windows around the stored top activations
    assert "top train activations stored in the run" in page
    with pytest.raises(UserError, match="no label database"):
        write_report(ReportConfig(run=str(syn.run.dir), db=str(tmp_path / "missing.duckdb")))


def test_size_does_not_grow_with_the_number_of_features(tmp_path):
    small = make_synthetic_run(tmp_path / "small", n_seq=64, ctx=16, d_sae=64, seed=5)
    wide = make_synthetic_run(tmp_path / "wide", n_seq=64, ctx=16, d_sae=8192, noise_per_token=20, seed=5)
    cfg = dict(max_cards=5, max_points=300)
    a = write_report(ReportConfig(run=str(small.run.dir), out=str(tmp_path / "a.html"), **cfg))
    b = write_report(ReportConfig(run=str(wide.run.dir), out=str(tmp_path / "b.html"), **cfg))
    assert b.n_cards == 5
    plotly_js = len(get_plotlyjs())
    # 128x the features, yet the figures and cards add only tens of KB
    assert b.size_bytes - plotly_js < 2 * (a.size_bytes - plotly_js) + 50_000
    spec = re.search(r"Frequency and maximum activation \(300 sampled of ([\d,]+)\)", b.path.read_text())
    assert spec and int(spec.group(1).replace(",", "")) == int((wide.run.stats.count > 0).sum())


# ------------------------------------------------------------------ pieces


def test_training_log_reader_flattens_and_survives_a_cut_line(tmp_path):
    path = write_training_log(tmp_path, steps=50)
    series = read_training_log(path)
    assert series["step"].tolist() == list(range(50))
    assert {"loss", "losses.dae", "losses.bt", "lr", "time"} <= set(series)
    assert series["losses.dae"][0] > series["losses.dae"][-1]


def test_pca_separates_offset_clouds():
    vectors, language, _ = shared_latents(Path("."), 200, seed=1)
    coords, share = pca_2d(vectors)
    is_text = np.array(language) == "text"
    # the offset between the languages is the main direction of variance
    assert share[0] > share[1]
    first = coords[:, 0]
    side = np.sign(first[is_text].mean())
    correct = np.where(is_text, first * side > 0, first * side < 0)
    assert correct.mean() > 0.95


def test_cli_writes_the_report_and_fails_in_one_line(labelled_run, tmp_path):
    syn, db = labelled_run
    out = tmp_path / "cli.html"
    ok = subprocess.run(
        [
            sys.executable,
            "-m",
            "sae_translate",
            "report",
            "--run",
            str(syn.run.dir),
            "--db",
            str(db),
            "--out",
            str(out),
            "--feature",
            "3",
            "--feature",
            "7",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert ok.returncode == 0, ok.stderr
    assert str(out) in ok.stdout and out.is_file()
    assert sorted(re.findall(r'<section class="card" id="feature-(\d+)"', out.read_text())) == ["3", "7"]
    bad = subprocess.run(
        [sys.executable, "-m", "sae_translate", "report", "--run", str(tmp_path / "none")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert bad.returncode == 1
    assert bad.stderr.strip().count("\n") == 0 and bad.stderr.startswith("error: no run at")
    assert f"--out {tmp_path / 'none'}`" in bad.stderr  # the directory given, not its parent


@pytest.mark.parametrize(
    "option, message",
    [
        (["--latent-sentences", "0"], "--latent-sentences must be 1 or more (got 0)"),
        (["--max-log-points", "-3"], "--max-log-points must be 1 or more (got -3)"),
        (["--n-top-windows", "-1"], "--n-top-windows must be 0 or more (got -1)"),
    ],
)
def test_out_of_range_options_are_one_line_errors_before_the_run_is_read(tmp_path, option, message):
    out = tmp_path / "report.html"
    result = subprocess.run(
        [sys.executable, "-m", "sae_translate", "report", "--run", str(tmp_path / "none"), "--out", str(out), *option],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 1 and result.stderr == f"error: {message}\n", result.stderr
    assert not out.exists()


def test_cards_show_a_describer_labels_fidelity(tmp_path):
    """A describer's label shows its fidelity on train tokens (as stored); a baseline's shows none."""
    syn = make_synthetic_run(tmp_path / "run", n_seq=160, ctx=32, d_sae=8, p_fire=0.95, noise_per_token=0.3, seed=3)
    db = tmp_path / "labels.duckdb"
    label_run(LabelConfig(run=str(syn.run.dir), db=str(db), methods=("describe-corpus", "top-tokens")))
    page = write_report(ReportConfig(run=str(syn.run.dir), db=str(db), out=str(tmp_path / "r.html"))).path.read_text()
    rows = run_query("SELECT feature, method, fidelity FROM labels WHERE rank = 0", db).rows
    assert rows
    for f, method, fidelity in rows:
        card = page.split(f'id="feature-{f}"', 1)[1].split("</section>", 1)[0]
        row = card.split(f"<td>{method}</td>", 1)[1].split("</tr>", 1)[0]
        shown = re.findall(r"fidelity (\d\.\d\d)", row.split('<div class="alt">', 1)[0])
        assert shown == ([f"{fidelity:.2f}"] if method == "describe-corpus" else []), (f, method)


def test_a_run_labelled_without_scorers_has_best_labels_and_a_report(tmp_path):
    """Unscored labels still make best labels (NULL score, ranked by the describer's fidelity),
    and the report shows them without a score."""
    syn = make_synthetic_run(tmp_path / "run", n_seq=160, ctx=32, d_sae=8, p_fire=0.95, noise_per_token=0.3, seed=3)
    db = tmp_path / "labels.duckdb"
    label_run(LabelConfig(run=str(syn.run.dir), db=str(db), methods=("describe-corpus", "top-tokens"), scorers=()))
    best = run_query("SELECT feature, method, score FROM best_labels", db).rows
    labelled = run_query("SELECT DISTINCT feature FROM labels", db).rows
    assert len(best) == len(labelled) > 0
    assert all(method == "describe-corpus" and score is None for _, method, score in best)
    page = write_report(ReportConfig(run=str(syn.run.dir), db=str(db), out=str(tmp_path / "r.html"))).path.read_text()
    assert "no embedding score" in page
