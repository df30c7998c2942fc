"""Runs the stages of a pipeline file in order: world -> extract -> train -> label -> report."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sae_translate.config import PipelineConfig, build_config, load_pipeline, split_train_section
from sae_translate.errors import UserError
from sae_translate.store.db import QueryResult, connect_readonly

DEMO_PIPELINE = Path(__file__).with_name("demo.toml")


def demo_pipeline(world_config: Path | None = None, out: Path | None = None) -> PipelineConfig:
    """The packaged demo pipeline, on another concept world when `world_config` names one (built
    into its own stores/world-NAME, so it never replaces the default world, and run into
    stores/NAME unless `out` says otherwise; the default world's run goes to stores/demo)."""
    config = load_pipeline(DEMO_PIPELINE)
    if world_config is not None:
        stem = Path(world_config).stem
        config.stages["world"]["config"] = str(world_config)
        config.stages["world"]["out"] = f"stores/world-{stem}"
        if out is None:
            # the default world, the default run and every world's own directory are taken
            if stem in ("world", "demo") or stem.startswith("world-"):
                raise UserError(
                    f"a world config named {Path(world_config).name} would run into stores/{stem}, which the "
                    "demo's own stores use; rename the file or pass --out"
                )
            out = Path("stores") / stem
    config.stages["extract"]["out"] = str(out or Path("stores/demo"))
    return config


@dataclass
class PipelineState:
    """What earlier stages produced, for later stages' defaults."""

    config: PipelineConfig
    run_dir: Path | None = None
    defaults: dict[str, Any] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    results: dict[str, Any] = field(default_factory=dict)


def stage_world(state: PipelineState, section: dict) -> None:
    from sae_translate.world.build import WorldBuildConfig, build_world

    world = build_world(build_config(WorldBuildConfig, section, "world"))
    state.defaults.update(
        model=str(world.model_dir), sae=str(world.sae_dir), dataset=str(world.corpus_files[0]), world=str(world.dir)
    )
    state.results["world"] = world


def stage_extract(state: PipelineState, section: dict) -> None:
    from sae_translate.extract.extract import ExtractConfig, extract

    defaults = {"out": f"stores/{state.config.name}", **state.defaults}
    cfg = build_config(ExtractConfig, section, "extract", **defaults)
    state.results["extract"] = extract(cfg)
    state.run_dir = Path(cfg.out)


def stage_train(state: PipelineState, section: dict) -> None:
    """Train the translator on the run, once per mode listed in `modes` (unsupervised, aligned)."""
    from sae_translate.translator.languages import LanguageConfig
    from sae_translate.translator.run import train_on_run
    from sae_translate.translator.train import TranslatorConfig

    modes, language_keys, translator = split_train_section(section)
    language = build_config(LanguageConfig, language_keys, "train")
    run_dir = str(state.run_dir or state.config.run_dir)
    for mode in modes:
        cfg = build_config(TranslatorConfig, {**translator, "mode": mode}, "train")
        path = train_on_run(run_dir, cfg, language)
        print(f"   {mode} translator: {path}")


def stage_label(state: PipelineState, section: dict) -> None:
    """Label with every method, score on held-out windows, print the per-method means."""
    from sae_translate.label import LabelConfig
    from sae_translate.score import concept_kind_table, concept_recovery_table, label_and_score, summary_table
    from sae_translate.store.db import format_result

    cfg = build_config(LabelConfig, section, "label", run=str(state.run_dir or state.config.run_dir))
    cfg.methods, cfg.scorers = tuple(cfg.methods), tuple(cfg.scorers)
    labelled, scored = label_and_score(cfg)
    state.results["label"] = (labelled, scored)
    print(f"   {labelled.n_features:,} features x {len(labelled.methods)} methods -> {cfg.db}")
    if scored is not None:
        print(summary_table(scored.summary))
        if scored.world:  # scored against a toy world's ground truth
            print(concept_kind_table(cfg.db, labelled.run_id))
            print(concept_recovery_table(cfg.db, labelled.run_id))
    literal = "'" + labelled.run_id.replace("'", "''") + "'"  # for the command shown; the query binds the id
    print(f'   sae-translate query "{BEST_LABELS_SQL.replace("?", literal)}" --db {cfg.db}')
    print(format_result(best_labels(cfg.db, labelled.run_id)))


BEST_LABELS_SQL = (
    "SELECT feature, method, label, round(score, 3) AS score FROM best_labels "
    "WHERE run_id = ? ORDER BY score DESC, feature LIMIT 5"
)


def best_labels(db: str | Path, run_id: str) -> QueryResult:
    """The five best-scored labels of a run, the run id bound as a parameter (ids may hold quotes)."""
    con = connect_readonly(db)
    try:
        rel = con.execute(BEST_LABELS_SQL, [run_id])
        return QueryResult([d[0] for d in rel.description], rel.fetchall())
    finally:
        con.close()


def stage_report(state: PipelineState, section: dict) -> None:
    from sae_translate.report import ReportConfig, write_report

    defaults: dict[str, Any] = {"run": str(state.run_dir or state.config.run_dir)}
    if "db" in state.config.stages.get("label", {}):  # read the database the label stage wrote
        defaults["db"] = state.config.stages["label"]["db"]
    cfg = build_config(ReportConfig, section, "report", **defaults)
    if "features" in section:
        cfg.features = tuple(int(f) for f in cfg.features)
    result = state.results["report"] = write_report(cfg)
    print(f"   {result.path}: {result.n_figures} figures, {result.n_cards} feature cards")


STAGE_RUNNERS: dict[str, Callable[[PipelineState, dict], None]] = {
    "world": stage_world,
    "extract": stage_extract,
    "train": stage_train,
    "label": stage_label,
    "report": stage_report,  # keep last: it reads what every other stage wrote
}


def run_pipeline(config: PipelineConfig, echo: Callable[[str], None] = print) -> PipelineState:
    state = PipelineState(config)
    for stage, runner in STAGE_RUNNERS.items():
        if stage not in config.stages:
            continue
        echo(f"== {stage}")
        t0 = time.time()
        runner(state, dict(config.stages[stage]))
        state.seconds[stage] = time.time() - t0
        echo(f"   {stage} done in {state.seconds[stage]:.1f}s")
    return state
