"""The label stage's settings: light to import (no torch, nltk or DuckDB), so the command line
can read its options."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from sae_translate.store import DEFAULT_DB

if TYPE_CHECKING:
    from sae_translate.label.examples import ExampleConfig

BASELINES = ("top-tokens", "logit-lens", "constant", "random")
AUTO = "auto"  # the translators the run has, describe-corpus and the baselines
CRITERIA = ("detection", "f_beta")  # how the describer measures a rule's fidelity (--fidelity)


@dataclass
class LabelConfig:
    run: str  # run directory written by extract (stores/RUN)
    db: str = str(DEFAULT_DB)  # DuckDB file the labels, scores and examples go to
    # label methods, comma-separated: "auto" (the translator methods whose checkpoints the run
    # has, describe-corpus and the baselines) or any of translator, translator-aligned,
    # describe-corpus, top-tokens, logit-lens, constant, random
    methods: tuple[str, ...] = (AUTO,)
    run_id: str | None = None  # defaults to the run directory's name
    label_tokens: int = 3  # tokens named by a baseline label
    window: int = 16  # tokens per example window
    n_top_examples: int = 5  # held-out windows of the strongest firings stored per feature
    n_quantiles: int = 5  # activation quantiles the stored examples are also drawn from
    n_per_quantile: int = 2  # examples per quantile
    max_heldout_tokens: int = 262_144  # held-out tokens scanned for examples and scores
    seed: int = 0  # for the samples (examples, the describer's train tokens) and the random baseline
    device: str = "auto"  # where translators decode and labels are embedded: auto, cpu, cuda, cuda:N
    workers: int = 0  # processes the describer runs in (0: one per CPU core, for runs of 256+ features per core)
    # how the describer measures a rule against the feature's firing on train tokens: "detection"
    # (TPR - FPR of detecting the feature in --window-token windows) or "f_beta" (F-beta, beta 2)
    fidelity: str = "detection"
    # scorers run on the labels right after labelling, comma-separated: embedding, detection,
    # simulation, ground_truth, name_match (empty: label only)
    scorers: tuple[str, ...] = ("embedding", "detection", "simulation", "ground_truth", "name_match")
    world: str = ""  # toy-world dir for ground truth; "" = the run's own

    @property
    def example_config(self) -> ExampleConfig:
        from sae_translate.label.examples import ExampleConfig

        return ExampleConfig(
            window=self.window,
            n_top=self.n_top_examples,
            n_quantiles=self.n_quantiles,
            n_per_quantile=self.n_per_quantile,
            max_heldout_tokens=self.max_heldout_tokens,
            seed=self.seed,
        )
