"""One encoder-decoder shared by two languages; the encoder output is the shared latent.

Both languages live in one joint vocabulary: [PAD, MASK, words of language 0, words of language 1].
Translation is position-aligned (one symbol per position in both languages), so the decoder is
parallel: query i is a MASK token plus the target language embedding plus latent i, and it
cross-attends to the whole latent; every position is decoded at once and the output length
equals the input length.
"""

from __future__ import annotations

import heapq
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from x_transformers import Encoder, TransformerWrapper

PAD, MASK = 0, 1
N_SPECIAL = 2
# above this many words in a language, decoding computes each row's logits on its target language's
# words only (not on the joint vocabulary, where the other language's are masked anyway)
SLICED_DECODING_ABOVE = 4096


@dataclass
class ModelConfig:
    vocab_a: int
    vocab_b: int
    max_len: int
    dim: int = 128
    depth: int = 2  # encoder layers
    decoder_depth: int = 2
    heads: int = 4
    dropout: float = 0.0
    variational: bool = False  # mu/logvar on the latent, sampled in training, KL reported
    # argmax decoding scores log P(w | source) - prior_correction * log P(w), P(w) the target
    # language's word frequencies (`log_prior`). At 0.5 it is the mean of the direct model and the
    # channel model P(source | w) (maximum mutual information decoding): a plain argmax of P(w | source)
    # favours words that many meanings emit, over the one word that the most probable meaning emits
    prior_correction: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


class Translator(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.vocab_sizes = (cfg.vocab_a, cfg.vocab_b)
        self.offsets = (N_SPECIAL, N_SPECIAL + cfg.vocab_a)
        n_joint = N_SPECIAL + cfg.vocab_a + cfg.vocab_b
        layer_kwargs = dict(dim=cfg.dim, heads=cfg.heads, attn_dropout=cfg.dropout, ff_dropout=cfg.dropout)
        self.encoder = TransformerWrapper(
            num_tokens=n_joint,
            max_seq_len=cfg.max_len,
            attn_layers=Encoder(depth=cfg.depth, rotary_pos_emb=True, **layer_kwargs),  # relative positions only
            embed_num_tokens={"lang": 2},
            return_only_embed=True,  # the encoder's output is the latent: no unused logits head
        )
        self.decoder = TransformerWrapper(
            num_tokens=N_SPECIAL,
            max_seq_len=cfg.max_len,
            attn_layers=Encoder(depth=cfg.decoder_depth, cross_attend=True, rotary_pos_emb=True, **layer_kwargs),
            embed_num_tokens={"lang": 2},
            logits_dim=n_joint,
        )
        if cfg.variational:
            self.to_mu = nn.Linear(cfg.dim, cfg.dim)
            self.to_logvar = nn.Linear(cfg.dim, cfg.dim)
        # row l: 0 on language l's words, -inf elsewhere (specials and the other language)
        allowed = torch.full((2, n_joint), float("-inf"))
        for lang in (0, 1):
            allowed[lang, self.offsets[lang] : self.offsets[lang] + self.vocab_sizes[lang]] = 0.0
        self.allowed: Tensor
        self.register_buffer("allowed", allowed, persistent=False)
        # log word frequencies of both languages over the joint vocabulary (set from the training
        # corpora by `set_prior`; 0 on the specials); only argmax decoding reads it
        self.log_prior: Tensor
        self.register_buffer("log_prior", torch.zeros(n_joint))

    def set_prior(self, counts_a: Tensor, counts_b: Tensor) -> None:
        """Word counts of each language's corpus -> log frequencies (add-one smoothed)."""
        for lang, counts in ((0, counts_a), (1, counts_b)):
            freq = (counts.double() + 1) / (counts.double() + 1).sum()
            lo = self.offsets[lang]
            self.log_prior[lo : lo + self.vocab_sizes[lang]] = freq.log().to(self.log_prior)

    def load_weights(self, tensors: dict[str, Tensor]) -> None:
        """load_state_dict, accepting checkpoints written before the word prior existed (prior 0)."""
        missing, unexpected = self.load_state_dict(tensors, strict=False)
        if unexpected or set(missing) - {"log_prior"}:
            raise RuntimeError(f"checkpoint does not match the model: missing {missing}, unexpected {unexpected}")

    # ids: language-local word ids <-> joint ids
    def to_joint(self, words: Tensor, lang: Tensor) -> Tensor:
        offsets = torch.tensor(self.offsets, device=words.device)[lang]
        return words + offsets.view(-1, *([1] * (words.dim() - 1)))

    def to_words(self, joint: Tensor, lang: Tensor) -> Tensor:
        offsets = torch.tensor(self.offsets, device=joint.device)[lang]
        return joint - offsets.view(-1, *([1] * (joint.dim() - 1)))

    def encode(self, tokens: Tensor, lang: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """tokens [B, L] joint ids (PAD allowed), lang [B] -> latent [B, L, D], mask [B, L], kl []."""
        mask = tokens != PAD
        lang_ids = lang[:, None].expand_as(tokens)
        hidden = self.encoder(tokens, mask=mask, embed_ids={"lang": lang_ids}, return_embeddings=True)
        kl = hidden.new_zeros(())
        if self.cfg.variational:
            mu, logvar = self.to_mu(hidden), self.to_logvar(hidden).clamp(-8, 8)
            kl = 0.5 * (mu.pow(2) + logvar.exp() - logvar - 1).sum(-1)[mask].mean()
            hidden = mu + torch.randn_like(mu) * (0.5 * logvar).exp() if self.training else mu
        return hidden, mask, kl

    def decode(self, latent: Tensor, mask: Tensor, tgt_lang: Tensor) -> Tensor:
        """Logits [B, L, n_joint] (float32) for the L positions of the latent, restricted to each
        row's target language."""
        logits = self.decoder.to_logits(self.decode_hidden(latent, mask, tgt_lang))
        return logits.float() + self.allowed[tgt_lang][:, None, :]

    def forward(self, tokens: Tensor, src_lang: Tensor, tgt_lang: Tensor):
        """-> (logits [B, L, n_joint], latent [B, L, D], mask [B, L], kl [])"""
        latent, mask, kl = self.encode(tokens, src_lang)
        return self.decode(latent, mask, tgt_lang), latent, mask, kl

    def decode_hidden(self, latent: Tensor, mask: Tensor, tgt_lang: Tensor) -> Tensor:
        """The decoder's last hidden states [B, L, D]: `decode` without the output layer, for losses
        and decoders that need the logits of a few words only. Query i is MASK + position + target
        language + latent i (the aligned path is direct) and cross-attends to the whole latent
        (for reordered inputs)."""
        queries = torch.full(latent.shape[:2], MASK, dtype=torch.long, device=latent.device)
        lang_ids = tgt_lang[:, None].expand_as(queries)
        positions = torch.arange(latent.shape[1], device=latent.device)
        return self.decoder(
            queries,
            embed_ids={"lang": lang_ids},
            sum_embeds=latent,
            context=latent,
            context_mask=mask,
            context_pos=positions,
            return_embeddings=True,
        )

    @property
    def output_weight(self) -> Tensor:
        """[n_joint, D]: row w scores joint word w (logits = hidden @ output_weight.T, no bias)."""
        return self.decoder.to_logits.weight

    def language_logits(self, hidden: Tensor, lang: int) -> Tensor:
        """Logits [..., V_lang] (float32) over one language's words, from decoder hidden states."""
        lo = self.offsets[lang]
        weight = self.output_weight[lo : lo + self.vocab_sizes[lang]]
        return (hidden @ weight.T.to(hidden.dtype)).float()

    def _sliced_translate(
        self, tokens: Tensor, src_lang: Tensor, tgt_lang: Tensor, sample: bool, generator: torch.Generator | None
    ) -> Tensor:
        """`translate` for large vocabularies: rows grouped by target language, each row's logits
        over its own target language only (the same distribution, without the other language's)."""
        latent, mask, _ = self.encode(tokens, src_lang)
        hidden = self.decode_hidden(latent, mask, tgt_lang)
        out = torch.zeros(tokens.shape, dtype=torch.long, device=tokens.device)
        for lang in (0, 1):
            rows = tgt_lang == lang
            if not rows.any():
                continue
            lo = self.offsets[lang]
            logits = self.language_logits(hidden[rows], lang)
            if sample:
                probs = logits.softmax(-1).flatten(0, 1)
                picked = torch.multinomial(probs, 1, generator=generator).view(logits.shape[:2])
            elif self.cfg.prior_correction == 0:
                picked = logits.argmax(-1)  # the argmax of the logits is that of the log-probabilities
            else:
                prior = self.log_prior[lo : lo + self.vocab_sizes[lang]]
                picked = (logits.log_softmax(-1) - self.cfg.prior_correction * prior).argmax(-1)
            out[rows] = picked + lo
        return out

    @torch.no_grad()
    def translate(
        self,
        tokens: Tensor,
        src_lang: Tensor,
        tgt_lang: Tensor,
        sample: bool = False,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Joint ids in, joint ids of the target language out: a sample per position from
        P(w | source), or the argmax of log P(w | source) - prior_correction * log P(w)."""
        if max(self.vocab_sizes) > SLICED_DECODING_ABOVE:
            return self._sliced_translate(tokens, src_lang, tgt_lang, sample, generator)
        logits, *_ = self(tokens, src_lang, tgt_lang)
        if not sample:
            return (logits.log_softmax(-1) - self.cfg.prior_correction * self.log_prior).argmax(-1)
        probs = logits.softmax(-1).flatten(0, 1)
        return torch.multinomial(probs, 1, generator=generator).view(logits.shape[:2])

    @torch.no_grad()
    def translate_words(self, words: Tensor, src: int, tgt: int) -> Tensor:
        """Language-local word ids [B, L] of language src -> argmax word ids of language tgt."""
        src_lang = torch.full((words.shape[0],), src, dtype=torch.long, device=words.device)
        tgt_lang = torch.full_like(src_lang, tgt)
        joint = self.translate(self.to_joint(words, src_lang), src_lang, tgt_lang)
        return self.to_words(joint, tgt_lang)

    @torch.no_grad()
    def word_probs_at(self, words: Tensor, src: int, tgt: int, at: Tensor) -> Tensor:
        """Probabilities over the target language's words [B, K, V_tgt] at positions ``at`` [B, K]
        only. The decoder runs at every position (each query reads the whole latent); the output
        layer and softmax, the bulk of the work over a large vocabulary, only where read."""
        hidden = self._word_hidden(words, src, tgt)
        read = hidden.gather(1, at[..., None].expand(-1, -1, hidden.shape[-1]))
        return self.language_logits(read, tgt).softmax(-1)

    def _word_hidden(self, words: Tensor, src: int, tgt: int) -> Tensor:
        """The decoder's hidden states [B, L, D] for language-local words of ``src`` read into ``tgt``."""
        src_lang = torch.full((words.shape[0],), src, dtype=torch.long, device=words.device)
        latent, mask, _ = self.encode(self.to_joint(words, src_lang), src_lang)
        return self.decode_hidden(latent, mask, torch.full_like(src_lang, tgt))

    @torch.no_grad()
    def word_log_probs(self, words: Tensor, src: int, tgt: int) -> Tensor:
        """Per-position log-probabilities over the target language's words [B, L, V_tgt]."""
        src_lang = torch.full((words.shape[0],), src, dtype=torch.long, device=words.device)
        tgt_lang = torch.full_like(src_lang, tgt)
        if max(self.vocab_sizes) > SLICED_DECODING_ABOVE:
            return F.log_softmax(self.language_logits(self._word_hidden(words, src, tgt), tgt), dim=-1)
        logits, *_ = self(self.to_joint(words, src_lang), src_lang, tgt_lang)
        lo = self.offsets[tgt]
        return F.log_softmax(logits[..., lo : lo + self.vocab_sizes[tgt]], dim=-1)


def beam_search(log_probs: Tensor, beam: int) -> list[tuple[list[int], float]]:
    """The `beam` best sequences under per-position distributions [L, V] (exact: they factorise)."""
    top_lp, top_ids = log_probs.topk(min(beam, log_probs.shape[-1]), dim=-1)
    beams: list[tuple[float, list[int]]] = [(0.0, [])]
    for lp, ids in zip(top_lp.tolist(), top_ids.tolist()):
        grown = [(score + s, seq + [i]) for score, seq in beams for s, i in zip(lp, ids)]
        beams = heapq.nlargest(beam, grown, key=lambda x: x[0])
    return [(seq, score) for score, seq in beams]
