"""The `sae-translate` command line: parses options, calls one stage, prints what it did."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Optional

import typer

from sae_translate.errors import UserError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Label every SAE feature by unsupervised translation between firing patterns and text.")
bench_app = typer.Typer(no_args_is_help=True, help="Benchmarks with ground truth.")
app.add_typer(bench_app, name="bench")


@app.command()
def extract(
    model: str = typer.Option(..., help="TransformerLens model name (pythia-160m) or local checkpoint dir"),
    sae: str = typer.Option(..., help="RELEASE/SAE_ID, sparsify:REPO/LAYER, or a local SAE dir"),
    dataset: str = typer.Option(..., help="hub dataset name, or local .txt/.jsonl/.parquet files, dir or glob"),
    out: Path = typer.Option(Path("stores/run"), help="run directory"),
    hook: Optional[str] = typer.Option(None, help="hook name; defaults to the SAE's own"),
    tokens: int = typer.Option(1_000_000, help="upper bound on tokens"),
    ctx: int = typer.Option(128, help="context length of each window"),
    batch_size: int = typer.Option(32, help="sequences per forward pass"),
    chunk_seqs: int = typer.Option(256, help="sequences per resumable chunk"),
    device: str = typer.Option("auto", help="auto, cpu, cuda, cuda:1, ..."),
    dtype: str = typer.Option("float32", help="model dtype: float32, bfloat16, float16"),
    heldout: float = typer.Option(0.1, help="share of sequences held out for scoring"),
    top_k_codes: Optional[int] = typer.Option(None, help="keep only the k largest codes per token (default: exact)"),
    text_column: str = typer.Option("text", help="column holding the text"),
    dataset_split: str = typer.Option("train", help="split of a hub dataset"),
    dataset_name: Optional[str] = typer.Option(None, help="configuration of a hub dataset"),
    seed: int = typer.Option(0),
    force: bool = typer.Option(False, help="replace a run made with other settings"),
) -> None:
    """Run the model over a corpus, encode a hook with an SAE, store codes and statistics in HDF5."""
    from sae_translate.extract import ExtractConfig, extract as run_extract

    cfg = ExtractConfig(model=model, sae=sae, dataset=dataset, out=str(out), hook=hook, tokens=tokens, ctx=ctx,
                        batch_size=batch_size, chunk_seqs=chunk_seqs, device=device, dtype=dtype, heldout=heldout,
                        top_k_codes=top_k_codes, text_column=text_column, dataset_split=dataset_split,
                        dataset_name=dataset_name, seed=seed, force=force)
    result = run_extract(cfg)
    what = "already extracted" if result.reused else f"{result.n_tokens:,} tokens in {result.seconds:.1f}s"
    typer.echo(f"{result.path}: {what}")


@app.command("train-sae")
def train_sae_cmd(
    model: str = typer.Option(..., help="TransformerLens model name or local checkpoint dir"),
    hook: str = typer.Option(..., help="hook to train on, e.g. blocks.3.hook_resid_post"),
    dataset: str = typer.Option(..., help="hub dataset name, or local .txt/.jsonl/.parquet files, dir or glob"),
    out: Path = typer.Option(..., help="directory to save the SAE in (sae-lens format)"),
    architecture: str = typer.Option("topk", help="topk, batchtopk or standard (L1)"),
    d_sae: Optional[int] = typer.Option(None, help="dictionary width (default: expansion x d_model)"),
    expansion: int = typer.Option(8),
    k: int = typer.Option(8, help="active features per token (topk, batchtopk)"),
    training_tokens: int = typer.Option(1_000_000),
    context_size: int = typer.Option(128),
    lr: float = typer.Option(4e-4),
    device: str = typer.Option("auto"),
    text_column: str = typer.Option("text"),
    seed: int = typer.Option(0),
) -> None:
    """Train an SAE on a model hook with sae-lens's own trainer."""
    from sae_translate.sae_training import TrainSaeConfig, train_sae

    cfg = TrainSaeConfig(model=model, hook=hook, dataset=dataset, out=out, architecture=architecture, d_sae=d_sae,
                         expansion=expansion, k=k, training_tokens=training_tokens, context_size=context_size, lr=lr,
                         device=device, text_column=text_column, seed=seed)
    typer.echo(f"SAE saved to {train_sae(cfg)}")


def main() -> None:
    """Console entry point: user errors become one line and exit code 1, never a traceback."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        app()
    except UserError as e:
        typer.echo(f"error: {e}", err=True)
        sys.exit(1)
    except OSError as e:  # disk full, permissions, vanished files: one line, not a traceback
        where = f" ({e.filename})" if e.filename else ""
        typer.echo(f"error: {e.strerror or e}{where}", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        typer.echo("interrupted; rerun the same command to resume", err=True)
        sys.exit(130)


@app.command("run")
def run_cmd(pipeline: Path = typer.Argument(..., help="pipeline TOML file, e.g. pipelines/pythia-70m-deduped.toml")) -> None:
    """Run every stage of a pipeline file."""
    from sae_translate.config import load_pipeline
    from sae_translate.pipeline import run_pipeline

    run_pipeline(load_pipeline(pipeline), echo=typer.echo)


@app.command()
def demo(
    world_config: Optional[Path] = typer.Option(None, help="concept config (TOML/JSON); default: the packaged world"),
    out: Path = typer.Option(Path("stores/demo"), help="run directory"),
) -> None:
    """The whole pipeline on the embedded toy world: offline, CPU, minutes."""
    from sae_translate.config import load_pipeline
    from sae_translate.pipeline import DEMO_PIPELINE, run_pipeline

    config = load_pipeline(DEMO_PIPELINE)
    if world_config is not None:
        config.stages["world"]["config"] = str(world_config)
        config.stages["world"]["out"] = f"stores/world-{world_config.stem}"
    config.stages["extract"]["out"] = str(out)
    run_pipeline(config, echo=typer.echo)


def _names(csv: str) -> tuple[str, ...]:
    return tuple(x.strip() for x in csv.split(",") if x.strip())


@app.command()
def label(
    run: Path = typer.Option(..., help="run directory (stores/RUN) or its activations.h5"),
    methods: str = typer.Option("top-tokens,logit-lens,random", help="comma-separated label methods"),
    db: Path = typer.Option(Path("stores/labels.duckdb"), help="label database"),
    scorers: str = typer.Option("embedding,detection,simulation,ground_truth",
                                help="comma-separated scorers run after labelling; '' to skip"),
    device: str = typer.Option("auto", help="auto, cpu, cuda, ..."),
    world: str = typer.Option("", help="toy-world dir for ground truth (default: the run's own)"),
    seed: int = typer.Option(0),
) -> None:
    """Label every alive feature with each method, store held-out examples, score the labels."""
    from sae_translate.label import LabelConfig
    from sae_translate.score import label_and_score, summary_table

    cfg = LabelConfig(run=str(run), db=str(db), methods=_names(methods), scorers=_names(scorers),
                      device=device, world=world, seed=seed)
    labelled, scored = label_and_score(cfg)
    typer.echo(f"{labelled.run_id}: {labelled.n_features:,} features x {len(labelled.methods)} methods, "
               f"{labelled.n_examples:,} examples in {labelled.seconds:.1f}s -> {db}")
    if scored is not None:
        typer.echo(summary_table(scored.summary))
        typer.echo(f"scored in {scored.seconds:.1f}s")


@app.command()
def query(
    sql: str = typer.Argument(..., help="one SQL statement, e.g. \"SELECT * FROM best_labels LIMIT 10\""),
    db: Path = typer.Option(Path("stores/labels.duckdb"), help="label database (opened read-only)"),
    fmt: str = typer.Option("table", "--format", help="table, csv or json"),
) -> None:
    """Query the label database read-only: runs, features, labels, scores, examples, best_labels."""
    from sae_translate.store.db import format_result, run_query

    if fmt not in ("table", "csv", "json"):
        raise UserError(f"unknown --format {fmt!r}; use table, csv or json")
    typer.echo(format_result(run_query(sql, db), fmt))


@app.command()
def report(
    run: Path = typer.Option(..., help="run directory (stores/RUN)"),
    out: Optional[Path] = typer.Option(None, help="HTML file to write; default RUN/report.html"),
    feature: Optional[list[int]] = typer.Option(None, "--feature", help="card for this feature (repeatable); "
                                                "default: up to --max-cards spread over the run"),
    db: Optional[Path] = typer.Option(None, help="label database; default stores/labels.duckdb when present"),
    max_cards: int = typer.Option(50, help="feature cards drawn when no --feature is given"),
    run_id: Optional[str] = typer.Option(None, help="the run's id in the label database; default: RUN's name"),
) -> None:
    """Write one self-contained HTML report (plotly, opens offline) of a run and its labels."""
    from sae_translate.report import ReportConfig, write_report

    cfg = ReportConfig(run=str(run), out=None if out is None else str(out), db=None if db is None else str(db),
                       features=tuple(feature or ()), max_cards=max_cards, run_id=run_id)
    result = write_report(cfg)
    typer.echo(f"{result.path}: {result.n_figures} figures, {result.n_cards} feature cards, "
               f"{result.size_bytes / 1e6:.1f} MB")
    for section, note in result.notes.items():
        typer.echo(f"  {section}: {note}")


@bench_app.command("hmm")
def bench_hmm(
    json_out: bool = typer.Option(False, "--json", help="last stdout line: one JSON object"),
    ablate: bool = typer.Option(False, help="retrain with each loss removed; write the table to --benchmarks"),
    # None = the benchmark's own default (HMMConfig, BenchConfig, BENCH_TRANSLATOR in the hmm module):
    # each default is defined there once and printed by `bench hmm --defaults`
    states: Optional[int] = typer.Option(None, help="hidden states of the chain"),
    vocab_a: Optional[int] = typer.Option(None, help="symbols of language a"),
    vocab_b: Optional[int] = typer.Option(None, help="symbols of language b"),
    sharpness: Optional[float] = typer.Option(
        None, help="logit bonus of each state's home symbol (higher: less ambiguous, context matters less)"),
    concentration: Optional[float] = typer.Option(
        None, help="Dirichlet concentration of the transitions (lower: more predictable)"),
    length: Optional[int] = typer.Option(None, help="symbols per sentence"),
    seed: Optional[int] = typer.Option(None, help="seed of the chain and its samples"),
    steps: Optional[int] = typer.Option(None, help="translator steps"),
    batch_size: Optional[int] = typer.Option(None, help="sentences per language per step"),
    train_sentences: Optional[int] = typer.Option(None, help="training sentences per language"),
    test_sentences: Optional[int] = typer.Option(None, help="held-out parallel pairs"),
    aligned: Optional[bool] = typer.Option(None, "--aligned/--no-aligned",
                                           help="also train on true pairs (the upper bound)"),
    device: Optional[str] = typer.Option(None, help="auto, cpu, cuda"),
    out: Optional[Path] = typer.Option(None, help="keep checkpoints and logs here"),
    benchmarks: Path = typer.Option(Path("BENCHMARKS.md"), help="markdown file the ablation table goes to"),
    defaults: bool = typer.Option(False, "--defaults", help="print the benchmark's settings (after any options) and exit"),
) -> None:
    """Unsupervised translation between two HMM languages, scored against the ground truth. Every
    unset option takes the benchmark's default (see --defaults)."""
    import json
    from dataclasses import replace

    from sae_translate.hmm import BenchConfig, ablation_markdown, run_ablation, run_benchmark, write_section

    def given(**values) -> dict:
        return {k: v for k, v in values.items() if v is not None}

    cfg = BenchConfig()
    cfg = replace(
        cfg,
        hmm=replace(cfg.hmm, **given(states=states, vocab_a=vocab_a, vocab_b=vocab_b, sharpness=sharpness,
                                     concentration=concentration, length=length, seed=seed)),
        translator=replace(cfg.translator, progress=not json_out,
                           **given(steps=steps, batch_size=batch_size, device=device)),
        **given(n_train=train_sentences, n_test=test_sentences, aligned=aligned, out_dir=out and str(out)),
    )
    if defaults:
        from dataclasses import asdict

        typer.echo(json.dumps(asdict(cfg), indent=1))
        return
    if ablate:
        rows = run_ablation(cfg)
        write_section(benchmarks, ablation_markdown(rows, cfg))
        for r in rows:
            typer.echo(f"without {r['removed']:<17} accuracy {r['accuracy']:.3f}  gap closed {r['gap_closed']:.0%}  "
                       f"round trip {r['selection_score']:.3f}")
        typer.echo(f"table written to {benchmarks}")
        if json_out:
            typer.echo(json.dumps({"ablation": rows}))
        return
    result = run_benchmark(cfg)
    if json_out:
        typer.echo(json.dumps(result))
        return
    gap = f"per-symbol lookup {result['lookup']:.3f} -> HMM-aware ceiling {result['ceiling']:.3f}"
    typer.echo(f"unsupervised translator {result['accuracy']:.3f} ({result['gap_closed']:.0%} of the context gap, "
               f"{gap}) in {result['seconds']:.0f}s on {result['device']}")
    if "word_by_word_accuracy" in result:
        typer.echo(f"word-by-word anchor {result['word_by_word_accuracy']:.3f} ({result['anchor_gap_closed']:.0%})")
    if cfg.aligned:
        typer.echo(f"aligned (true pairs) {result['aligned_accuracy']:.3f} ({result['aligned_gap_closed']:.0%}) "
                   f"in {result['aligned_seconds']:.0f}s; unsupervised / aligned {result['unsupervised_over_aligned']:.2f}")


@app.command()
def train(
    run: Path = typer.Option(..., help="run directory (stores/RUN)"),
    mode: str = typer.Option("unsupervised", help="unsupervised (no pairs) or aligned (true pairs: the upper bound)"),
    device: str = typer.Option("auto", help="auto, cpu, cuda, cuda:1, ..."),
    steps: int = typer.Option(2000, help="training steps"),
    batch_size: int = typer.Option(64, help="sentences per language per step, over all ranks under torchrun"),
    dim: int = typer.Option(128, help="model width"),
    depth: int = typer.Option(2, help="encoder and decoder layers"),
    crop: int = typer.Option(0, help="train on random windows of this many positions (0: whole windows)"),
    losses: str = typer.Option("denoise,back_translation,adversarial,anchor",
                               help="losses to use, comma-separated: denoise, back_translation, adversarial, kl, anchor"),
    dense_threshold: float = typer.Option(0.1, help="features firing on more than this share of tokens are not words"),
    out: Optional[Path] = typer.Option(None, help="checkpoint directory; default RUN/translator[-aligned]"),
    seed: int = typer.Option(0),
) -> None:
    """Train the translator between a run's feature language and its text (resumes when interrupted)."""
    import json
    from dataclasses import replace

    from sae_translate.language import LanguageConfig
    from sae_translate.translator.run import train_on_run
    from sae_translate.translator.train import LOSSES, TranslatorConfig

    keep = set(_names(losses))
    if keep - set(LOSSES):
        raise UserError(f"unknown loss {sorted(keep - set(LOSSES))[0]!r}; choose from {', '.join(LOSSES)}")
    cfg = TranslatorConfig(mode=mode, device=device, steps=steps, batch_size=batch_size, dim=dim, depth=depth,
                           decoder_depth=depth, crop=crop, seed=seed,
                           variational="kl" in keep, kl=0.01 if "kl" in keep else 0.0)
    for loss in set(LOSSES) - keep - {"kl"}:
        cfg = cfg.without(loss)
    if "anchor" not in keep:
        cfg = replace(cfg, bt_start=cfg.dictionary_steps)  # back-translation waits for the autoencoders
    path = train_on_run(run, cfg, LanguageConfig(dense_threshold=dense_threshold, seed=seed), out)
    meta = json.loads(path.with_suffix(".json").read_text())
    typer.echo(f"{path}: selected at step {meta['best_step']} (selection score {meta['best_score']:.3f})")
