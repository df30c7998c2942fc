"""Sampled softmax: the training cross-entropy of a large vocabulary from a few words.

The full softmax scores every word of the target language at every position, so a step grows
with the vocabulary (a 50k-word text language spends most of a step in the output layer). Here a
position is scored against its target word and K negatives shared by the whole batch, drawn
with replacement from the target language's smoothed unigram distribution q (raised to a power,
as word2vec does). Each negative's logit is corrected by -log(K q(w)) (the logQ correction:
sum_k exp(s_k) / (K q(w_k)) is an unbiased estimate of the partition sum), and a negative that
is the position's own target is masked (an accidental hit). When K reaches the vocabulary, the
negatives are the whole vocabulary, each once: K q = 1, the correction vanishes and the loss is
the full cross-entropy exactly.

Only the training losses use it, and only for a language with more than `above` words; decoding
and evaluation keep the full softmax.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from sae_translate.translator.model import Translator

POWER = 0.75  # flattens the unigram distribution: rare words are drawn often enough to be pushed down


class SampledSoftmax:
    def __init__(self, model: Translator, above: int, negatives: int, power: float = POWER):
        self.model, self.above, self.negatives = model, above, negatives
        # per language: the sampling distribution over its words (from the model's word prior)
        self.q = []
        for lang in (0, 1):
            lo, n = model.offsets[lang], model.vocab_sizes[lang]
            q = (model.log_prior[lo : lo + n].double() * power).exp()
            self.q.append((q / q.sum()).float())

    def sampled(self, lang: int) -> bool:
        """Whether this language's loss is estimated (else: its exact softmax)."""
        return 0 < self.above < self.model.vocab_sizes[lang] and self.negatives < self.model.vocab_sizes[lang]

    @property
    def active(self) -> bool:
        return self.sampled(0) or self.sampled(1)

    def _negatives(self, lang: int, generator: torch.Generator | None) -> tuple[Tensor, Tensor]:
        """(language-local word ids [K], logit correction [K])."""
        q = self.q[lang].to(self.model.log_prior.device)
        if not self.sampled(lang):
            return torch.arange(len(q), device=q.device), torch.zeros(len(q), device=q.device)
        ids = torch.multinomial(q, self.negatives, replacement=True, generator=generator)
        return ids, -(self.negatives * q[ids]).log()

    def loss(
        self, hidden: Tensor, tgt_lang: Tensor, target: Tensor, generator: torch.Generator | None = None
    ) -> Tensor:
        """Mean cross-entropy over all positions: hidden [B, L, D] decoder states, tgt_lang [B],
        target [B, L] joint ids of each row's target language."""
        total = hidden.new_zeros((), dtype=torch.float32)
        weight = self.model.output_weight
        for lang in (0, 1):
            rows = tgt_lang == lang
            if not rows.any():
                continue
            h = hidden[rows].flatten(0, 1)  # [N, D]
            words = target[rows].flatten() - self.model.offsets[lang]  # [N] language-local
            ids, correction = self._negatives(lang, generator)
            # one gather of the rows scored (its backward writes one dense gradient of the output layer)
            rows_scored = weight[self.model.offsets[lang] + torch.cat([words, ids])].to(h.dtype)
            w_target, w_negative = rows_scored[: len(words)], rows_scored[len(words) :]
            negative = (h @ w_negative.T).float() + correction  # [N, K]
            negative = negative.masked_fill(ids[None] == words[:, None], float("-inf"))  # accidental hits
            positive = (h * w_target).sum(-1).float()  # [N]
            logits = torch.cat([positive[:, None], negative], dim=1)
            total = total + F.cross_entropy(logits, torch.zeros_like(words), reduction="sum")
        return total / target.numel()
