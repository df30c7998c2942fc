"""The training signals of unsupervised translation, each usable alone.

All tensors hold joint token ids (see model.py); `lang` is the language of each row.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sae_translate.translator.anchor import WordDictionary
from sae_translate.translator.model import MASK, PAD, Translator
from sae_translate.translator.softmax import SampledSoftmax


@dataclass
class NoiseConfig:
    word_drop: float = 0.1  # probability of deleting a word (the sentence closes up, PAD at the end)
    shuffle_k: int = 3  # words move at most k positions
    word_mask: float = 0.1  # probability of replacing a word by MASK


def word_drop(tokens: Tensor, p: float, generator: torch.Generator | None = None) -> Tensor:
    if p <= 0:
        return tokens
    keep = (torch.rand(tokens.shape, generator=generator, device=tokens.device) >= p) & (tokens != PAD)
    keep[:, 0] |= ~keep.any(1)  # never drop a whole sentence
    order = torch.argsort((~keep).int(), dim=1, stable=True)  # kept words first, in order
    packed = tokens.gather(1, order)
    positions = torch.arange(tokens.shape[1], device=tokens.device)
    return packed.masked_fill(positions[None] >= keep.sum(1, keepdim=True), PAD)


def local_shuffle(tokens: Tensor, k: int, generator: torch.Generator | None = None) -> Tensor:
    """Sort positions by i + U(0, k + 1): no word moves more than k places (Lample et al. 2018)."""
    if k <= 0:
        return tokens
    positions = torch.arange(tokens.shape[1], device=tokens.device, dtype=torch.float32)
    jitter = torch.rand(tokens.shape, generator=generator, device=tokens.device) * (k + 1)
    keys = (positions[None] + jitter).masked_fill(tokens == PAD, float("inf"))
    return tokens.gather(1, keys.argsort(dim=1))


def word_mask(tokens: Tensor, p: float, generator: torch.Generator | None = None) -> Tensor:
    if p <= 0:
        return tokens
    hit = (torch.rand(tokens.shape, generator=generator, device=tokens.device) < p) & (tokens != PAD)
    return tokens.masked_fill(hit, MASK)


def add_noise(tokens: Tensor, cfg: NoiseConfig, generator: torch.Generator | None = None) -> Tensor:
    tokens = word_drop(tokens, cfg.word_drop, generator)
    tokens = local_shuffle(tokens, cfg.shuffle_k, generator)
    return word_mask(tokens, cfg.word_mask, generator)


@dataclass
class Encoded:
    """A pass through the encoder kept for the adversarial and KL terms."""

    latent: Tensor
    mask: Tensor
    lang: Tensor
    kl: Tensor

    @staticmethod
    def cat(encoded: list[Encoded]) -> Encoded:
        """Several passes as one batch (one discriminator forward per step)."""
        return Encoded(
            torch.cat([e.latent for e in encoded]),
            torch.cat([e.mask for e in encoded]),
            torch.cat([e.lang for e in encoded]),
            torch.stack([e.kl for e in encoded]).mean(),
        )


def _reconstruction(logits: Tensor, target: Tensor) -> Tensor:
    return F.cross_entropy(logits.flatten(0, 1), target.flatten())


def _translation_loss(
    model: Translator,
    source: Tensor,
    src_lang: Tensor,
    tgt_lang: Tensor,
    target: Tensor,
    sampled: SampledSoftmax | None,
    generator: torch.Generator | None,
) -> tuple[Tensor, Encoded]:
    """Cross-entropy of `target` given `source`: full softmax, or sampled for large vocabularies."""
    if sampled is None or not sampled.active:
        logits, latent, mask, kl = model(source, src_lang, tgt_lang)
        return _reconstruction(logits, target), Encoded(latent, mask, src_lang, kl)
    latent, mask, kl = model.encode(source, src_lang)
    hidden = model.decode_hidden(latent, mask, tgt_lang)
    return sampled.loss(hidden, tgt_lang, target, generator), Encoded(latent, mask, src_lang, kl)


def denoising_loss(
    model: Translator,
    tokens: Tensor,
    lang: Tensor,
    noise: NoiseConfig,
    generator: torch.Generator | None = None,
    sampled: SampledSoftmax | None = None,
) -> tuple[Tensor, Encoded]:
    """Each language reconstructs itself from a noised copy."""
    return _translation_loss(model, add_noise(tokens, noise, generator), lang, lang, tokens, sampled, generator)


@torch.no_grad()
def back_translate(
    model: Translator,
    tokens: Tensor,
    lang: Tensor,
    sample: bool = True,
    dictionary: WordDictionary | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Translate rows into the other language without gradient: by the model, or word by word."""
    other = 1 - lang
    if dictionary is None:
        was_training = model.training
        model.eval()
        out = model.translate(tokens, lang, other, sample=sample, generator=generator)
        model.train(was_training)
        return out
    words = model.to_words(tokens, lang)
    translated = torch.empty_like(words)
    for lng in (0, 1):
        rows = lang == lng
        if rows.any():
            translated[rows] = dictionary.sample(words[rows], lng, generator)
    return model.to_joint(translated, other)


def back_translation_loss(
    model: Translator,
    tokens: Tensor,
    lang: Tensor,
    sample: bool = True,
    dictionary: WordDictionary | None = None,
    generator: torch.Generator | None = None,
    sampled: SampledSoftmax | None = None,
    translated: Tensor | None = None,
) -> tuple[Tensor, Encoded]:
    """Recover the original sentence from its translation into the other language: `translated`
    when given (an anchor's translation of `tokens`), else the model's or the dictionary's."""
    source = translated
    if source is None:
        source = back_translate(model, tokens, lang, sample, dictionary, generator)
    return _translation_loss(model, source, 1 - lang, lang, tokens, sampled, generator)


def dictionary_loss(
    model: Translator,
    tokens: Tensor,
    lang: Tensor,
    dictionary: WordDictionary,
    generator: torch.Generator | None = None,
    sampled: SampledSoftmax | None = None,
) -> tuple[Tensor, Encoded]:
    """Anchor phase: translate real sentences into a sampled word-by-word dictionary translation, so
    every word of both languages starts from its dictionary counterparts."""
    translated = back_translate(model, tokens, lang, dictionary=dictionary, generator=generator)
    return pseudo_pair_loss(model, tokens, lang, translated, generator, sampled)


def pseudo_pair_loss(
    model: Translator,
    tokens: Tensor,
    lang: Tensor,
    translated: Tensor,
    generator: torch.Generator | None = None,
    sampled: SampledSoftmax | None = None,
) -> tuple[Tensor, Encoded]:
    """Anchor phase with a sentence-level anchor: translate real sentences into the anchor's
    translations of them (joint ids in the other language), as if they were true pairs."""
    return _translation_loss(model, tokens, lang, 1 - lang, translated, sampled, generator)


def supervised_loss(
    model: Translator,
    tokens_a: Tensor,
    tokens_b: Tensor,
    sampled: SampledSoftmax | None = None,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Encoded]:
    """Aligned mode: true pairs, both directions in one batch."""
    n = tokens_a.shape[0]
    lang = torch.cat([torch.zeros(n), torch.ones(n)]).long().to(tokens_a.device)
    source, target = torch.cat([tokens_a, tokens_b]), torch.cat([tokens_b, tokens_a])
    return _translation_loss(model, source, lang, 1 - lang, target, sampled, generator)


class Discriminator(nn.Module):
    """Predicts from one latent vector which language it was encoded from (logit of language 1)."""

    def __init__(self, dim: int, hidden: int = 128):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(dim, hidden),
            nn.LeakyReLU(0.2),
            nn.Linear(hidden, hidden),
            nn.LeakyReLU(0.2),
            nn.Linear(hidden, 1),
        )

    def forward(self, latent: Tensor) -> Tensor:
        return self.net(latent.float()).squeeze(-1)


def _language_targets(enc: Encoded) -> Tensor:
    return enc.lang[:, None].expand_as(enc.mask)[enc.mask].float()


def discriminator_loss(disc: nn.Module, enc: Encoded) -> Tensor:
    """Discriminator step: the latent is detached so the encoder is not trained by it."""
    logits = disc(enc.latent.detach())[enc.mask]
    return F.binary_cross_entropy_with_logits(logits, _language_targets(enc))


def adversarial_loss(disc: Discriminator, enc: Encoded) -> Tensor:
    """Encoder step: fool the discriminator (flipped labels). Only the model's optimiser steps on it."""
    logits = disc(enc.latent)[enc.mask]
    return F.binary_cross_entropy_with_logits(logits, 1 - _language_targets(enc))
