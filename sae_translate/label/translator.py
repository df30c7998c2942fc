"""Translator labels: the describer over what a trained translator reads into each feature.

The translator decodes each feature alone in an otherwise empty feature window and inside its
top train windows; the text distributions at the feature's position and at offsets -3..+3 are the
evidence, read as contrast to the translator's own average output (its base rate) and the corpus
unigram distribution. ``translator`` uses the unsupervised checkpoint, ``translator-aligned`` the
one trained on the true pairs (the upper bound).
"""

from __future__ import annotations

import numpy as np

from sae_translate.errors import UserError
from sae_translate.label.base import Label, LabelContext, register_labeler
from sae_translate.label.describe import describe_all, describer_for
from sae_translate.label.describer import EVIDENCE_TOP, OFFSETS, Evidence
from sae_translate.translator.run import (
    context_distributions,
    load_languages,
    translator_dir,
)


def translator_evidence(ctx: LabelContext, mode: str) -> list[Evidence]:
    directory = translator_dir(ctx.run.dir, mode)
    checkpoint = directory / "best.safetensors"
    if not checkpoint.exists():
        flag = "" if mode == "unsupervised" else f" --mode {mode}"
        raise UserError(f"no translator in {directory}; train one with `sae-translate train --run {ctx.run.dir}{flag}`")
    languages = load_languages(ctx.run, directory)
    # the top windows of even rank: those of odd rank are where the describer measures fidelity
    top_positions = np.asarray(ctx.run.top_positions)[:, EVIDENCE_TOP]
    ids, probs, marginal = context_distributions(
        checkpoint, languages, ctx.features, top_positions, OFFSETS, device=ctx.cfg.device
    )
    sample = describer_for(ctx).sample
    unigram = sample.unigram_rate
    to_run = languages.token_ids  # text word id -> run token id
    base = []
    for o in range(len(OFFSETS)):
        own = np.zeros(len(unigram))
        np.add.at(own, to_run, marginal[o])
        base.append(0.5 * own + 0.5 * unigram)
    return [
        Evidence.from_distributions([to_run[i] for i in ids[f]], list(probs[f]), base) for f in range(len(ctx.features))
    ]


@register_labeler("translator")
def translator_labels(ctx: LabelContext) -> list[list[Label]]:
    """The describer over the unsupervised translator's decoding of each feature."""
    evidence = translator_evidence(ctx, "unsupervised")
    return describe_all(ctx, evidence.__getitem__, "translator")


@register_labeler("translator-aligned")
def translator_aligned_labels(ctx: LabelContext) -> list[list[Label]]:
    """The same with the translator trained on true pairs (the upper bound)."""
    evidence = translator_evidence(ctx, "aligned")
    return describe_all(ctx, evidence.__getitem__, "translator-aligned")
