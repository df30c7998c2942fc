"""Translator labels: each feature decoded into text by a trained translator.

``translator`` uses the unsupervised checkpoint, ``translator-aligned`` the one trained on the
true pairs (the upper bound).
"""

from __future__ import annotations

from sae_translate.errors import UserError
from sae_translate.label.base import LabelContext, register_labeler
from sae_translate.translator.run import (
    label_from_candidates,
    load_languages,
    translate_features,
    translator_dir,
)


def _translator_labels(ctx: LabelContext, mode: str) -> list[list[str]]:
    directory = translator_dir(ctx.run.dir, mode)
    checkpoint = directory / "best.safetensors"
    if not checkpoint.exists():
        flag = "" if mode == "unsupervised" else f" --mode {mode}"
        raise UserError(f"no translator in {directory}; train one with `sae-translate train --run {ctx.run.dir}{flag}`")
    languages = load_languages(ctx.run, directory)
    candidates = translate_features(checkpoint, languages, ctx.features, ctx.run.top_positions, device=ctx.cfg.device)
    labels = []
    for f in ctx.features:
        found = candidates[int(f)]
        best = label_from_candidates(found) if found else "<none>"
        labels.append([best] + [text for text, _ in found if text != best])
    return labels


@register_labeler("translator")
def translator_labels(ctx: LabelContext) -> list[list[str]]:
    """Decode each feature into text with the unsupervised translator."""
    return _translator_labels(ctx, "unsupervised")


@register_labeler("translator-aligned")
def translator_aligned_labels(ctx: LabelContext) -> list[list[str]]:
    """The same with the translator trained on true pairs (the upper bound)."""
    return _translator_labels(ctx, "aligned")
