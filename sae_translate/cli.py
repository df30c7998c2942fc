"""The `sae-translate` command line: parses options, calls one stage, prints what it did.

A stage's options are the fields of its config dataclass (sae_translate.options): the same names,
defaults and help as the pipeline TOML keys, defined once.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path
from typing import Optional

import typer

# only the stages' config modules: light, so --help and query start fast (each stage's heavy
# libraries, torch among them, are imported inside the command that runs it)
from sae_translate.bench.config import BenchConfig, HMMConfig
from sae_translate.errors import UserError, error_line
from sae_translate.extract.config import ExtractConfig, TrainSaeConfig
from sae_translate.label.config import LabelConfig
from sae_translate.options import ConfigOptions, with_configs
from sae_translate.report.config import ReportConfig
from sae_translate.translator.config import DEVICE_DEFAULTS, LOSSES, LanguageConfig, TranslatorConfig

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Label every SAE feature by unsupervised translation between firing patterns and text.",
)
bench_app = typer.Typer(no_args_is_help=True, help="Benchmarks with ground truth.")
app.add_typer(bench_app, name="bench")


@app.command()
@with_configs(ConfigOptions(ExtractConfig, "cfg", skip={"progress"}))
def extract(cfg: ExtractConfig) -> None:
    """Run the model over a corpus, encode a hook with an SAE, store codes and statistics in HDF5."""
    from sae_translate.extract.extract import extract as run_extract

    result = run_extract(cfg)
    what = "already extracted" if result.reused else f"{result.n_tokens:,} tokens in {result.seconds:.1f}s"
    if result.resumed_chunks and not result.reused:
        what += f" ({result.resumed_chunks:,} chunks kept from the interrupted run)"
    typer.echo(f"{result.path}: {what}")


@app.command("train-sae")
@with_configs(ConfigOptions(TrainSaeConfig, "cfg"))
def train_sae_cmd(cfg: TrainSaeConfig) -> None:
    """Train an SAE on a model hook with sae-lens's own trainer."""
    from sae_translate.extract.sae_training import train_sae

    typer.echo(f"SAE saved to {train_sae(cfg)}")


def main() -> None:
    """Console entry point: user errors become one line and exit code 1, never a traceback."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        app()
    except (UserError, OSError) as e:  # disk full, permissions, vanished files too: one line
        typer.echo(error_line(e), err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        typer.echo(INTERRUPTED, err=True)
        sys.exit(130)
    except SystemExit as e:
        if e.code == 130:  # click turns Ctrl-C inside a command into Exit(130) before it gets here
            typer.echo(INTERRUPTED, err=True)
        raise


INTERRUPTED = "interrupted; rerun the same command to resume"


@app.command("run")
def run_cmd(
    pipeline: Path = typer.Argument(..., help="pipeline TOML file, e.g. pipelines/pythia-70m-deduped.toml"),
) -> None:
    """Run every stage of a pipeline file."""
    from sae_translate.config import load_pipeline
    from sae_translate.pipeline import run_pipeline

    run_pipeline(load_pipeline(pipeline), echo=typer.echo)


@app.command()
def demo(
    world_config: Optional[Path] = typer.Option(None, help="concept config (TOML/JSON); default: the packaged world"),
    out: Optional[Path] = typer.Option(
        None, help="run directory; default stores/demo, or stores/NAME with --world-config NAME.toml"
    ),
) -> None:
    """The whole pipeline on the embedded toy world: offline, CPU, minutes."""
    from sae_translate.pipeline import demo_pipeline, run_pipeline

    run_pipeline(demo_pipeline(world_config, out), echo=typer.echo)


@app.command()
@with_configs(ConfigOptions(LabelConfig, "cfg"))
def label(cfg: LabelConfig) -> None:
    """Label every alive feature with each method, store held-out examples, score the labels."""
    from sae_translate.score import label_and_score, summary_table

    labelled, scored = label_and_score(cfg)
    typer.echo(
        f"{labelled.run_id}: {labelled.n_features:,} features x {len(labelled.methods)} methods, "
        f"{labelled.n_examples:,} examples in {labelled.seconds:.1f}s -> {cfg.db}"
    )
    if scored is not None:
        typer.echo(summary_table(scored.summary))
        skipped = [s for s in ("ground_truth", "name_match") if s in cfg.scorers and not scored.world]
        if skipped:
            typer.echo(f"{' and '.join(skipped)} skipped: the run has no toy world (pass --world DIR for one)")
        typer.echo(f"scored in {scored.seconds:.1f}s")


@app.command()
def query(
    sql: str = typer.Argument(..., help='one SQL statement, e.g. "SELECT * FROM best_labels LIMIT 10"'),
    db: Path = typer.Option(Path("stores/labels.duckdb"), help="label database (opened read-only)"),
    fmt: str = typer.Option("table", "--format", help="table, csv or json"),
) -> None:
    """Query the label database read-only: runs, features, labels, scores, examples, best_labels."""
    from sae_translate.store.db import format_result, run_query

    if fmt not in ("table", "csv", "json"):
        raise UserError(f"unknown --format {fmt!r}; use table, csv or json")
    typer.echo(format_result(run_query(sql, db), fmt))


@app.command()
@with_configs(
    ConfigOptions(
        ReportConfig,
        "cfg",
        rename={"features": "feature"},
        help={"features": "(repeatable; default: up to --max-cards spread over the run)"},
    )
)
def report(cfg: ReportConfig) -> None:
    """Write one self-contained HTML report (plotly, opens offline) of a run and its labels."""
    from sae_translate.report import write_report

    result = write_report(cfg)
    typer.echo(
        f"{result.path}: {result.n_figures} figures, {result.n_cards} feature cards, {result.size_bytes / 1e6:.1f} MB"
    )
    for section, note in result.notes.items():
        typer.echo(f"  {section}: {note}")


@bench_app.command(
    "hmm", short_help="Unsupervised translation between two HMM languages, scored against the ground truth."
)
@with_configs(
    ConfigOptions(HMMConfig, "hmm"),
    ConfigOptions(
        BenchConfig, "bench", rename={"n_train": "train_sentences", "n_test": "test_sentences", "out_dir": "out"}
    ),
    # the benchmark's own translator settings are the defaults of these three
    ConfigOptions(
        TranslatorConfig,
        "translator",
        only={"steps", "batch_size", "device"},
        base=BenchConfig().translator,
        help={
            k: "(the unsupervised translator's; the aligned bound keeps its own, see --defaults)"
            for k in ("steps", "batch_size")
        },
    ),
)
def bench_hmm(
    hmm: HMMConfig,
    bench: BenchConfig,
    translator: TranslatorConfig,
    json_out: bool = typer.Option(False, "--json", help="last stdout line: one JSON object"),
    ablate: bool = typer.Option(False, help="retrain with each loss removed; write the table to --benchmarks"),
    benchmarks: Path = typer.Option(Path("BENCHMARKS.md"), help="markdown file the ablation table goes to"),
    defaults: bool = typer.Option(
        False, "--defaults", help="print the benchmark's settings (after any options) and exit"
    ),
) -> None:
    """Unsupervised translation between two HMM languages, scored against the ground truth. Every
    unset option takes the benchmark's default (see --defaults)."""
    import json

    from sae_translate.bench.hmm import ablation_markdown, run_ablation, run_benchmark, write_section

    cfg = replace(bench, hmm=hmm, translator=replace(translator, progress=not json_out))
    if defaults:
        from dataclasses import asdict

        typer.echo(json.dumps(asdict(cfg), indent=1))
        return
    cfg.validate()
    if ablate:  # the table is written after minutes of training: a path it cannot go to fails now
        _check_can_write(benchmarks, "--benchmarks")
        rows = run_ablation(cfg)
        write_section(benchmarks, ablation_markdown(rows, cfg))
        for r in rows:
            typer.echo(
                f"without {r['removed']:<17} accuracy {r['accuracy']:.3f}  gap closed {r['gap_closed']:.0%}  "
                f"selection score {r['selection_score']:.3f}"
            )
        typer.echo(f"table written to {benchmarks}")
        if json_out:
            typer.echo(json.dumps({"ablation": rows}))
        return
    result = run_benchmark(cfg)
    if json_out:
        typer.echo(json.dumps(result))
        return
    gap = f"per-symbol lookup {result['lookup']:.3f} -> HMM-aware ceiling {result['ceiling']:.3f}"
    typer.echo(
        f"unsupervised translator {result['accuracy']:.3f} ({result['gap_closed']:.0%} of the context gap, "
        f"{gap}) in {result['seconds']:.0f}s on {result['device']}"
    )
    if "word_by_word_accuracy" in result:
        typer.echo(f"word-by-word anchor {result['word_by_word_accuracy']:.3f} ({result['anchor_gap_closed']:.0%})")
    if "hmm_anchor_accuracy" in result:
        typer.echo(f"HMM anchor {result['hmm_anchor_accuracy']:.3f} ({result['hmm_anchor_gap_closed']:.0%})")
    if cfg.aligned:
        typer.echo(
            f"aligned (true pairs) {result['aligned_accuracy']:.3f} ({result['aligned_gap_closed']:.0%}) "
            f"in {result['aligned_seconds']:.0f}s; unsupervised / aligned {result['unsupervised_over_aligned']:.2f}"
        )
        typer.echo(
            f"a perfect model of the pairs, decoded alike {result['predictive_bound']:.3f} "
            f"({result['predictive_gap_closed']:.0%})"
        )


def _check_can_write(path: Path, option: str) -> None:
    """Fail now on a file that could not be written (atomically, beside itself) later."""
    if path.is_dir():
        raise UserError(f"{path} is a directory; choose another {option}")
    probe = path.with_name(f".{path.name}.probe-{os.getpid()}")
    try:
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise UserError(f"cannot write {path}: {e.strerror or e}; choose another {option}") from e


@app.command(
    short_help="Train the translator between a run's feature language and its text (resumes when interrupted)."
)
@with_configs(
    ConfigOptions(
        TranslatorConfig,
        "cfg",
        skip={"progress"},
        help={
            k: f"(when not given: {DEVICE_DEFAULTS['cpu'][k]} on a CPU, {DEVICE_DEFAULTS['cuda'][k]} on CUDA)"
            for k in DEVICE_DEFAULTS["cpu"]
        },
        hide_default=set(DEVICE_DEFAULTS["cpu"]),
    ),
    ConfigOptions(LanguageConfig, "language", skip={"seed"}),
)  # the translator's seed seeds both
def train(
    ctx: typer.Context,
    cfg: TranslatorConfig,
    language: LanguageConfig,
    run: Path = typer.Option(..., help="run directory (stores/RUN)"),
    out: Optional[Path] = typer.Option(None, help="checkpoint directory; default RUN/translator[-aligned]"),
    losses: Optional[str] = typer.Option(
        None,
        help="only these losses, comma-separated, from: "
        "denoise, back_translation, adversarial, kl, anchor "
        "(default: the loss weights below)",
    ),
) -> None:
    """Train the translator between a run's feature language and its text (resumes when interrupted).
    Model size, batch and crop options left unset take the device's defaults (on a CPU: dim 64, 1+1
    layers, batch 32, crop 16; on CUDA: dim 128, 2+2 layers, batch 256, whole windows); the settings
    and the expected time are printed once the first steps are timed."""
    from sae_translate.translator.run import train_on_run
    from sae_translate.translator.train import checkpoint_meta

    if losses is not None:
        cfg = _only_losses(cfg, {x.strip() for x in losses.split(",") if x.strip()}, LOSSES)
    unset = {k for k in DEVICE_DEFAULTS["cpu"] if getattr(ctx.get_parameter_source(k), "name", "") == "DEFAULT"}
    path = train_on_run(run, cfg, replace(language, seed=cfg.seed), out, unset, typer.echo)
    meta = checkpoint_meta(path)
    typer.echo(f"{path}: selected at step {meta['best_step']} (selection score {meta['best_score']:.3f})")


def _only_losses(cfg: TranslatorConfig, keep: set[str], known: Iterable[str]) -> TranslatorConfig:
    """cfg with every loss outside `keep` switched off (kl on with weight 0.01 when kept)."""
    unknown = keep - set(known)
    if unknown:
        raise UserError(f"unknown loss {sorted(unknown)[0]!r}; choose from {', '.join(known)}")
    cfg = replace(cfg, variational="kl" in keep, kl=0.01 if "kl" in keep else 0.0)
    for loss in set(known) - keep - {"kl"}:
        cfg = cfg.without(loss)
    if "anchor" not in keep:
        cfg = replace(cfg, bt_start=cfg.dictionary_steps)  # back-translation waits for the autoencoders
    return cfg
