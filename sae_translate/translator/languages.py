"""The two languages of a run: its token windows written in features and written in text.

Feature language: position i becomes the active feature with the largest activation divided by
that feature's maximum, ignoring features denser than `dense_threshold` of the train tokens and
features seen fewer than `min_count` times; NONE where no feature qualifies. Text language: the
tokens themselves. Both use compact vocabularies (word ids 0..V-1) and the train split only.

The pairing (which feature sentence belongs to which text sentence) stays inside `Languages`:
`unsupervised()` hands out independently shuffled copies, `aligned()` the pairs, on request only.
"""

from __future__ import annotations

import numpy as np

from sae_translate.errors import UserError
from sae_translate.store.h5 import Codes, RunStore
from sae_translate.translator.config import VARIANTS as VARIANTS  # re-exported
from sae_translate.translator.config import LanguageConfig
from sae_translate.translator.train import Corpus, ParallelCorpus

NONE = "<none>"


def best_feature_per_token(codes: Codes, eligible: np.ndarray, max_value: np.ndarray) -> np.ndarray:
    """Feature id with the largest value / max among eligible active features of each token; -1 if none."""
    out = np.full(codes.n_tokens, -1, dtype=np.int64)
    ok = eligible[codes.feature]
    if not ok.any():
        return out
    token = codes.token_index()[ok]
    feature = codes.feature[ok].astype(np.int64)
    score = codes.value[ok] / max_value[feature]
    order = np.lexsort((-score, token))  # by token, best score first
    first = order[np.r_[True, token[order][1:] != token[order][:-1]]]
    out[token[first]] = feature[first]
    return out


class Languages:
    """Feature and text sentences of a run's train windows over compact vocabularies."""

    def __init__(
        self,
        seqs: np.ndarray,
        features: np.ndarray,
        text: np.ndarray,
        feature_ids: np.ndarray,
        token_ids: np.ndarray,
        token_strings: list[str],
        cfg: LanguageConfig,
    ):
        self.seqs = seqs  # train sequence ids, in row order
        self._features = features  # [n, ctx] feature word ids
        self._text = text  # [n, ctx] text word ids
        self.feature_ids = feature_ids  # feature word id -> feature id (word 0 is NONE: -1)
        self.token_ids = token_ids  # text word id -> token id
        self.feature_vocab = [NONE] + [f"f{f}" for f in feature_ids[1:]]
        self.text_vocab = token_strings  # display string of each text word
        self.cfg = cfg
        self._row_of = {int(s): i for i, s in enumerate(seqs)}
        self._word_of_feature = {int(f): w for w, f in enumerate(feature_ids) if f >= 0}

    @property
    def n_sentences(self) -> int:
        return len(self.seqs)

    @property
    def ctx(self) -> int:
        return self._features.shape[1]

    @property
    def feature_vocab_size(self) -> int:
        return len(self.feature_ids)

    @property
    def text_vocab_size(self) -> int:
        return len(self.token_ids)

    def feature_word(self, feature: int) -> int | None:
        """Word id of a feature, None when it is not a word (dead, too dense or too rare)."""
        return self._word_of_feature.get(int(feature))

    def unsupervised(self) -> tuple[Corpus, Corpus]:
        """(features, text) corpora shuffled independently: row i of one is unrelated to row i of the other."""
        rng_f = np.random.default_rng([self.cfg.seed, 1])
        rng_t = np.random.default_rng([self.cfg.seed, 2])
        features = self._features[rng_f.permutation(self.n_sentences)]
        text = self._text[rng_t.permutation(self.n_sentences)]
        return Corpus(features, self.feature_vocab_size), Corpus(text, self.text_vocab_size)

    def aligned(self) -> ParallelCorpus:
        """The true pairs (features of a window, its text): aligned mode and evaluation only."""
        return ParallelCorpus(self._features.copy(), self._text.copy())

    def feature_sentences(self, seqs: np.ndarray) -> np.ndarray:
        """Feature sentences [len(seqs), ctx] of train sequences (to decode a feature in its contexts)."""
        try:
            rows = [self._row_of[int(s)] for s in seqs]
        except KeyError as e:
            raise UserError(f"sequence {e.args[0]} is not in the train split of this run") from None
        return self._features[rows]


def build_languages(run: RunStore, cfg: LanguageConfig | None = None, split: str = "train") -> Languages:
    """Read a run's train windows and write them in both languages."""
    cfg = cfg or LanguageConfig()
    cfg.validate()
    if split != "train":
        raise UserError("languages are built from the train split only; held-out windows are for scoring")
    seqs = run.train_seqs
    if len(seqs) == 0:
        raise UserError(f"{run.path} has no train sequences; extract with a smaller --heldout share")
    stats = run.stats
    eligible = (stats.count >= max(cfg.min_count, 1)) & (stats.frequency <= cfg.dense_threshold) & (stats.max > 0)
    if not eligible.any():
        raise UserError(
            f"no feature of {run.path} is a word (all dead, denser than {cfg.dense_threshold} or rarer than "
            f"{cfg.min_count}); raise dense_threshold or lower min_count"
        )
    max_value = np.where(stats.max > 0, stats.max, 1.0).astype(np.float32)

    best = np.empty((len(seqs), run.ctx), dtype=np.int64)
    done = 0
    for batch, codes in run.iter_codes(seqs):
        best[done : done + len(batch)] = best_feature_per_token(codes, eligible, max_value).reshape(len(batch), run.ctx)
        done += len(batch)
    tokens = run.tokens(seqs).astype(np.int64)

    # compact vocabularies: NONE first, then the features that occur as words, ascending
    used = np.unique(best[best >= 0])
    feature_ids = np.concatenate([[-1], used]).astype(np.int64)
    feature_words = np.searchsorted(used, np.maximum(best, 0)) + 1
    feature_words[best < 0] = 0
    token_ids = np.unique(tokens)
    text_words = np.searchsorted(token_ids, tokens)
    vocab = run.vocab
    token_strings = [vocab[t] if 0 <= t < len(vocab) else str(t) for t in token_ids]
    return Languages(
        seqs, feature_words.astype(np.int32), text_words.astype(np.int32), feature_ids, token_ids, token_strings, cfg
    )
