"""The translator's settings and those of its two languages: light to import (no torch, no
x-transformers), so the command line can read their options."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import asdict, dataclass, fields, replace
from typing import TYPE_CHECKING, Any

from sae_translate.errors import UserError

if TYPE_CHECKING:
    from sae_translate.translator.losses import NoiseConfig

LOSSES = ("denoise", "back_translation", "adversarial", "kl", "anchor")
ANCHOR_MODELS = ("words", "hmm")


@dataclass
class TranslatorConfig:
    mode: str = "unsupervised"  # "unsupervised": monolingual corpora only; "aligned": true pairs
    steps: int = 2000  # optimiser steps (rerun into the same checkpoint directory with more, it resumes)
    batch_size: int = 64  # sentences per language per step
    crop: int = 0  # train on random windows of this many positions (0: whole sentences); positions are relative
    lr: float = 5e-4  # peak learning rate (AdamW), after a linear warmup and before a cosine decay to a tenth
    warmup: int = 100  # steps of linear warmup
    grad_clip: float = 1.0
    # model
    dim: int = 128
    depth: int = 2
    decoder_depth: int = 2
    heads: int = 4
    dropout: float = 0.0
    variational: bool = False
    prior_correction: float = 0.0  # argmax decoding scores log P(w | source) - this x log P(w) (0.5: direct + channel)
    # output layer: a language with more words than this trains on a sampled softmax
    # (0: always the full one)
    sampled_softmax: int = 4096
    negatives: int = 1024  # words the sampled softmax scores per step, shared by the batch
    # loss weights: 0 switches a loss off
    denoise: float = 1.0
    back_translation: float = 1.0
    adversarial: float = 0.1
    kl: float = 0.0  # weight of the variational bottleneck's KL term (needs --variational)
    anchor: bool = True  # start from translations found without pairs (see anchor_model)
    # "words": a word-by-word dictionary from embeddings aligned without pairs; "hmm": one hidden
    # Markov model per language, states matched by their chains, sentences translated in context
    anchor_model: str = "words"
    anchor_starts: int = 24  # distinct starting maps the word anchor refines (more: robust, slower)
    anchor_states: int = 8  # hidden states of each language's HMM (anchor_model "hmm")
    dictionary_steps: int = 300  # before this step back-translation sources come from the anchor
    dictionary_weight: float = 1.0  # weight of learning the anchor's translations (all steps)
    dictionary_until: int = -1  # stop learning them at this step (-1: never)
    bt_start: int = 0  # no back-translation before this step
    bt_sample: bool = False  # argmax translations; sampling is closer to real sentences but can collapse
    # denoising noise
    word_drop: float = 0.1
    shuffle_k: int = 3
    word_mask: float = 0.1
    # discriminator
    disc_lr: float = 5e-4
    disc_hidden: int = 128
    # run
    device: str = "auto"  # auto, cpu, cuda, cuda:1, ...
    amp: bool = True  # bf16 autocast on CUDA
    seed: int = 0
    checkpoint_every: int = 500
    eval_every: int = 250
    select_sentences: int = 256  # held out from each corpus for model selection
    # unsupervised checkpoint choice: "round_trip" (a -> b -> a reconstruction; blind to a consistently
    # wrong mapping) or "statistics" (sampled translations reproduce the other language's bigrams)
    selection: str = "round_trip"
    progress: bool = True

    def validate(self) -> None:
        if self.mode not in ("unsupervised", "aligned"):
            raise UserError(f"mode must be 'unsupervised' or 'aligned' (got {self.mode!r})")
        if self.steps < 1 or self.batch_size < 1:
            raise UserError("steps and batch size must be positive")
        for name in ("dim", "heads", "eval_every", "checkpoint_every", "select_sentences"):
            if getattr(self, name) < 1:
                raise UserError(f"{name} must be 1 or more (got {getattr(self, name)})")
        for name in ("depth", "decoder_depth"):
            if getattr(self, name) < 0:
                raise UserError(f"{name} must be 0 or more (got {getattr(self, name)})")
        if self.lr < 0:
            raise UserError(f"lr must not be negative (got {self.lr})")
        if not 0 <= self.dropout < 1:
            raise UserError(f"dropout must lie in [0, 1) (got {self.dropout})")
        if self.selection not in ("round_trip", "statistics"):
            raise UserError(f"selection must be 'round_trip' or 'statistics' (got {self.selection!r})")
        if self.anchor_model not in ANCHOR_MODELS:
            raise UserError(f"anchor_model must be one of {', '.join(ANCHOR_MODELS)} (got {self.anchor_model!r})")
        if self.anchor_model == "hmm" and self.anchor_states < 2:
            raise UserError(f"anchor_states must be at least 2 (got {self.anchor_states})")
        if self.kl > 0 and not self.variational:
            raise UserError("a KL weight needs the variational bottleneck: set variational=True")
        idle = self.first_step_without_loss()
        if idle is not None:  # found now, not after the languages are built and written
            raise UserError(
                f"no loss is active at step {idle}: denoise {self.denoise}, anchor {self.anchor} "
                f"(until step {self.dictionary_until}), back-translation from step {self.bt_start}; "
                "enable one of them for every step"
            )

    def first_step_without_loss(self) -> int | None:
        """The first step at which no loss term would act (None: every step has one). Adversarial
        and KL terms act on what the others encode, so they never act alone."""
        if self.mode == "aligned" or self.denoise > 0:
            return None
        never = self.steps
        anchor_until = (
            (self.dictionary_until if self.dictionary_until >= 0 else never)
            if self.anchor and self.dictionary_weight > 0
            else 0
        )
        bt_from = self.bt_start if self.back_translation > 0 else never
        return anchor_until if anchor_until < min(bt_from, self.steps) else None

    def noise(self) -> NoiseConfig:
        from sae_translate.translator.losses import NoiseConfig  # torch: only when training

        return NoiseConfig(self.word_drop, self.shuffle_k, self.word_mask)

    def without(self, loss: str) -> TranslatorConfig:
        """A copy with one loss switched off (for ablations)."""
        if loss not in LOSSES:
            raise UserError(f"unknown loss {loss!r}; choose from {', '.join(LOSSES)}")
        value = False if loss == "anchor" else 0.0
        return TranslatorConfig(**{**asdict(self), loss: value})

    @classmethod
    def from_dict(cls, data: dict) -> TranslatorConfig:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


# the sizes `train` picks for the options a user leaves unset, by the device it runs on: on a CPU the
# demo's small model on 16-position crops (about a tenth of a second per step at the demo's
# vocabularies); on a GPU the full model on whole windows, batched to keep the GPU busy
DEVICE_DEFAULTS: dict[str, dict[str, Any]] = {
    "cpu": {"dim": 64, "depth": 1, "decoder_depth": 1, "batch_size": 32, "crop": 16},
    "cuda": {"dim": 128, "depth": 2, "decoder_depth": 2, "batch_size": 256, "crop": 0},
}


def with_device_defaults(cfg: TranslatorConfig, device_type: str, unset: Collection[str]) -> TranslatorConfig:
    """cfg with the device's sizes for the options in `unset` (those the user did not give)."""
    defaults = DEVICE_DEFAULTS.get(device_type, DEVICE_DEFAULTS["cpu"])
    return replace(cfg, **{k: v for k, v in defaults.items() if k in unset})


VARIANTS = ("top1",)


@dataclass
class LanguageConfig:
    dense_threshold: float = 0.1  # features firing on more than this share of train tokens are not words
    min_count: int = 1  # features firing fewer times than this on the train split are not words
    variant: str = "top1"  # one feature word per position: the largest normalised activation
    seed: int = 0  # for the independent shuffles of the unsupervised corpora

    def validate(self) -> None:
        if self.variant not in VARIANTS:
            raise UserError(f"unknown language variant {self.variant!r}; choose from {', '.join(VARIANTS)}")
        if not 0 < self.dense_threshold <= 1:
            raise UserError(f"dense_threshold must lie in (0, 1] (got {self.dense_threshold})")
