"""The describer: evidence about what text a feature means -> the rule that best states it.

Evidence is, for each offset -3..+3 around the firing position, a distribution over tokens read
as *contrast* to the base rate: positive pointwise mutual information weights p * log(p / base),
so the corpus's frequent tokens do not win by being frequent. It comes from the translator
(``label/translator.py``) or from the feature's real train contexts (``describe-corpus``).

From the evidence the describer proposes candidate rules (``rules.py``): token sets (the top
words together, and each of the top words alone) and WordNet categories for the firing token
(offset 0), also for the words its neighbours imply there (the
corpus's bigrams between the evidence at -1 and +1) and for the top words at -1 and +1 themselves
(a dictionary induced without pairs is identifiable only up to a shift: text read one position off
has the statistics of text, so an unsupervised translator can put the feature's word beside the
firing position), and for its neighbours (offsets -1 and +1,
as "right after X" / "right before X"; for a firing word read at -1 or +1, the offsets beside that),
the structural contexts the evidence points at (sentence
start and end, inside a delimiter pair: where the marks stand out around the firing position) and
targets in contexts. Two more sources of firing words, for the same reason: the words whose
distribution in the corpus is most like that of the top evidence words (a translator confuses "."
with "?", "wolf" with "fox"), and a category for the words the best category leaves out (evidence
that mixes two classes). Word sets are also grown by fidelity, one candidate word at a time from
the best single word. It keeps the candidate with the best *fidelity* on train tokens (never
held-out ones): how well the rule detects the feature in windows like those the scorers use,
Youden's J = TPR - FPR, TPR the share of the feature's firings the rule selects and FPR the
chance that the rule selects a token of a 16-token window where the feature is silent. Recall is
measured on firing positions apart from those the evidence was read from (cross-fitting: a rule
read off a few contexts fits those contexts). A rule under which the feature fires less than
twice as often as anywhere (lift) loses to any that reaches it; a target in a context must hold
70% of the feature's firings on the target and make them twice as likely. Where fidelities tie
within one standard error of the estimate (capped at a share of the best), the shorter, more
general rule wins, with one exception: a context rule most of whose firings are one category's
words, or one word, becomes that target in the context where that rule is within the tie too ('a
number right after "sold"', not 'the word right after "sold", mostly a number'; '"the" right after
"took"', not 'the word right after "took", e.g. "the"'). (``criterion="f_beta"``:
F-beta at beta 2 between the tokens the rule selects and those where the feature fires.)

Fidelity without scanning the corpus per candidate: recall is the share of a sample of the
feature's firing positions that the rule selects; the number of tokens the rule selects in the
train sample comes from unigram, neighbour and bigram counts and per-context token histograms
computed once. The tokens it selects where the feature is silent = selected - recall x (feature
firings), both scaled to the train split; FPR = 1 - (1 - their share) ** window.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol

import numpy as np
import scipy.sparse as sp

from sae_translate.label.config import CRITERIA
from sae_translate.label.rules import (
    STRUCTURAL,
    Context,
    Rule,
    RuleEvaluator,
    Selector,
    TokenView,
    isin,
)
from sae_translate.store.h5 import RunStore

OFFSETS = (-3, -2, -1, 0, 1, 2, 3)
AT, BEFORE, AFTER = OFFSETS.index(0), OFFSETS.index(-1), OFFSETS.index(1)
# a feature's top train windows: those of even rank give evidence, those of odd rank fidelity
EVIDENCE_TOP, FIDELITY_TOP = slice(0, None, 2), slice(1, None, 2)
BELOW_CHANCE = 1e-3  # detection fidelity of a rule no better than chance: this times its F-beta
MIN_SIMILAR_COUNT = 5  # a token seen less often in the train sample has no distribution to compare


class CategorySource(Protocol):
    """WordNet categories over the run's vocabulary (``label/wordnet.py``)."""

    def propose(self, weights: dict[int, float], top_n: int = 3) -> Sequence[Selector]: ...

    def prepare(self) -> None:
        """Build what is otherwise built on first use."""
        ...

    def lemma_of_forms(self, synset: str, words: Sequence[str]) -> str | None:
        """The synset's lemma that every one of ``words`` is a form of, if one is."""
        ...


@dataclass
class Evidence:
    """Per offset in OFFSETS: token ids (run vocabulary) and their positive PMI weights, strongest
    first, with each token's lift (its probability over its base rate)."""

    ids: list[np.ndarray]
    weights: list[np.ndarray]
    lift: list[np.ndarray]

    @staticmethod
    def from_distributions(
        ids: Sequence[np.ndarray], probs: Sequence[np.ndarray], base: Sequence[np.ndarray], max_words: int = 64
    ) -> Evidence:
        """PMI contrast of distributions ``probs[d]`` over ``ids[d]`` to base rates ``base[d]``
        (dense over the vocabulary)."""
        return Evidence.from_contrast(
            ids, probs, [b[np.asarray(i, dtype=np.int64)] for i, b in zip(ids, base)], max_words
        )

    @staticmethod
    def from_contrast(
        ids: Sequence[np.ndarray], probs: Sequence[np.ndarray], base: Sequence[np.ndarray], max_words: int = 64
    ) -> Evidence:
        """PMI contrast of probabilities ``probs[d]`` of words ``ids[d]`` to their base rates
        ``base[d]`` (aligned with ``ids[d]``)."""
        out_ids, out_w, out_lift = [], [], []
        for i, p, b in zip(ids, probs, base):
            i, p = np.asarray(i, dtype=np.int64), np.asarray(p, dtype=np.float64)
            q = np.maximum(np.asarray(b, dtype=np.float64), 1e-12)
            lift = np.maximum(p, 1e-12) / q
            w = np.where(p > q, p * np.log(lift), 0.0)
            keep = np.flatnonzero(w > 0)
            keep = keep[np.argsort(-w[keep], kind="stable")][:max_words]
            out_ids.append(i[keep])
            out_w.append(w[keep])
            out_lift.append(lift[keep])
        return Evidence(out_ids, out_w, out_lift)


@dataclass
class DescriberConfig:
    max_tokens: int = 3  # words in a token-set rule
    # each of this many top words at the firing position is also tried alone (64: every evidence
    # word): an unsupervised translator's dictionary can put the feature's word far down its list
    single_words: int = 64
    n_categories: int = 3  # WordNet categories proposed per offset
    residual_categories: int = 1  # more proposed for the words the best one leaves out (0: off)
    n_context_words: int = 3  # neighbour token sets tried: the top 1..n words
    n_combined: int = 3  # best targets x best contexts tried together
    n_examples: int = 3  # members shown beside a category or context label: "fruit (apple, pear, plum)"
    neighbour_words: int = 16  # evidence words at offsets -1 / +1 that imply the firing word (0: off)
    # each of the top words at the firing position brings this many words of the most similar
    # distribution in the corpus, the words a translator confuses it with (0: off)
    similar_words: int = 8
    similar_from: int = 3  # top evidence words that bring their similar words
    # the top words at offsets -1 / +1 also tried as the firing word, and the words beside them as
    # its neighbours (0: off): a translator can read every feature one position off
    shifted_words: int = 3
    tie: float = 0.02  # fidelities this close count as equal (at least; see Describer.describe)
    max_tie_share: float = 0.5  # and never a rule below this share of the best fidelity
    min_lift: float = 2.0  # a structural mark must be this many times its base rate near the firing
    sample_tokens: int = 262_144  # train tokens the fidelity statistics come from
    firing_sample: int = 64  # firing positions per feature for recall
    min_firings: int = 16  # below this in the sample, the feature's top positions are added
    # Fidelity ("detection"): how well the rule detects the feature in windows like those it is
    # scored on, Youden's J = TPR - FPR, TPR the share of the feature's firings the rule selects,
    # FPR the chance that it selects a token of a silent window of ``window`` tokens. "f_beta"
    # (F-beta on tokens) degenerates for a feature that fires on few instances of its word: at a
    # tiny precision F-beta is about (1 + beta^2) x precision whatever beta, so a context that
    # doubles the precision won while dropping half the firings ("have" -> '"have" right after
    # "i"', held-out detection 0.70 where "have" detects it at 1.00).
    criterion: str = "detection"
    window: int = 16  # tokens per window of the detection criterion: the scorers' window
    fidelity_beta: float = 2.0  # beta of "f_beta": a missed firing costs beta^2 extra selected tokens
    min_rule_lift: float = 2.0  # rules under which the feature fires less than this many times its rate lose
    # a target in a context keeps at least this share of the target's recall: a context that holds
    # half of the feature's firings on a word does not describe the feature
    min_context_share: float = 0.7
    # a context label names the category of its words ("mostly a city") where more than this share
    # of the feature's firings in the context are in it
    mostly_share: float = 0.5
    # and where that category (or one word holding that share) in the context is as faithful as
    # the best rule (within the tie), it is the label: 'a number such as "two" right after "sold"',
    # '"the" right after "took"' (False: the context label names it)
    mostly_stated: bool = True
    seed: int = 0


@dataclass(frozen=True)
class RuleFit:
    fidelity: float  # against the feature's firing, by DescriberConfig.criterion
    # how much more often the feature fires where the rule selects than anywhere (precision over
    # the feature's firing rate = recall over the share of tokens selected): near 1 it says nothing
    lift: float
    recall: float  # share of the feature's firings the rule selects


@dataclass
class Description:
    rule: Rule
    fidelity: float  # on train tokens, by DescriberConfig.criterion
    alternatives: list[tuple[Rule, float]] = field(default_factory=list)  # the next best


class TrainSample:
    """A random sample of train sequences with the counts fidelity needs, and each feature's firing
    positions in it (plus top positions of features that fire too rarely in the sample), split
    into those evidence is read from and those fidelity is measured on."""

    def __init__(self, run: RunStore, evaluator: RuleEvaluator, features: np.ndarray, cfg: DescriberConfig):
        rng = np.random.default_rng(cfg.seed)
        train = np.asarray(run.train_seqs, dtype=np.int64)
        n_seqs = max(1, min(len(train), cfg.sample_tokens // run.ctx))
        sample = np.sort(rng.choice(train, n_seqs, replace=False)) if n_seqs < len(train) else train
        self.evaluator = evaluator
        if cfg.criterion not in CRITERIA:
            raise ValueError(f"unknown fidelity criterion {cfg.criterion!r}; choose from {', '.join(CRITERIA)}")
        self.criterion, self.window, self.beta = cfg.criterion, cfg.window, cfg.fidelity_beta
        self.vocab_size = len(evaluator.vocab)
        stats = run.stats
        self.count = stats.count.astype(np.float64)  # firings over the whole train split
        self.scale = len(train) / len(sample)  # sample counts -> train counts (sequences of equal length)
        self.n_tokens = float(len(train) * run.ctx)  # train tokens

        found = self._firing_positions(run, sample, features, cfg, rng)
        rare = [f for f in features.tolist() if len(found.get(f, ())) < cfg.min_firings]
        top_rows = run.top_positions[np.asarray(rare, dtype=np.int64)] if rare else np.zeros((0, 0), np.int64)
        extra = np.setdiff1d(np.unique(top_rows[top_rows >= 0] // run.ctx), sample)
        seqs = np.concatenate([sample, extra])
        self.seqs = seqs  # run sequence of each view row
        # the store returns rows in ascending sequence order: read the two sorted parts apart
        tokens = np.concatenate(
            [np.asarray(run.tokens(part), dtype=np.int64).reshape(len(part), run.ctx) for part in (sample, extra)]
        )
        self.view = evaluator.view(tokens)
        self.n_sample_rows = len(sample)
        top = np.asarray(run.top_positions[features], dtype=np.int64)  # [F, K], -1 padded
        row_of = np.full(max(int(seqs.max(initial=0)), int(top.max(initial=0)) // run.ctx) + 1, -1, dtype=np.int64)
        row_of[seqs] = np.arange(len(seqs))  # run sequence -> view row (-1: not in the view)
        top_row = np.where(top >= 0, row_of[np.maximum(top, 0) // run.ctx], -1)
        top_flat = np.where(top_row >= 0, top_row * run.ctx + top % run.ctx, -1)  # view index, -1: not in it
        rare_set = set(rare)
        # Cross-fitting: the positions a rule is proposed from are not the ones its fidelity is
        # measured on. Rules read off a feature's own contexts fit those contexts (a rare
        # feature's one-off neighbour makes a narrow rule of high train fidelity that never fires
        # again), so each feature's firings are split in two: ``evidence_positions`` for
        # ``evidence`` and ``positions`` for fidelity. The top windows of even rank, which the
        # translator decodes (``EVIDENCE_TOP``), are on the evidence side.
        self.positions: dict[int, np.ndarray] = {}
        self.evidence_positions: dict[int, np.ndarray] = {}
        for i, f in enumerate(features.tolist()):
            tops = top_flat[i][top[i] >= 0]
            own = found.get(f, np.zeros(0, np.int64))
            if f in rare_set:
                own = np.concatenate([own, tops[tops >= 0][~isin(tops[tops >= 0], own)]])
            own = own[np.sort(np.unique(own, return_index=True)[1])]  # a position once, order kept
            on_evidence = isin(own, tops[EVIDENCE_TOP])
            on_fidelity = isin(own, tops[FIDELITY_TOP]) & ~on_evidence
            rest = own[~on_evidence & ~on_fidelity]  # random order: halves are random halves
            half = (len(rest) + 1) // 2
            fidelity = np.concatenate([own[on_fidelity], rest[:half]])[: cfg.firing_sample]
            evidence = np.concatenate([own[on_evidence], rest[half:]])[: cfg.firing_sample]
            if len(fidelity) < 2:  # too few firings to split: measure on all of them (optimistic)
                fidelity = own[: cfg.firing_sample]
            self.positions[f] = np.sort(fidelity)
            self.evidence_positions[f] = np.sort(evidence) if len(evidence) else self.positions[f]
        self._counts(run.ctx)
        self._similar: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}

    def _firing_positions(
        self, run: RunStore, sample: np.ndarray, features: np.ndarray, cfg: DescriberConfig, rng: np.random.Generator
    ) -> dict[int, np.ndarray]:
        """Up to twice ``firing_sample`` random firing positions (flat indices into the sample) per
        feature, in random order (half for evidence, half for fidelity)."""
        want = np.zeros(run.d_sae, dtype=bool)
        want[features] = True
        feats, flats = [], []
        done = 0
        for batch, codes in run.iter_codes(sample):
            token = codes.token_index() + done * run.ctx
            f = np.asarray(codes.feature, dtype=np.int64)
            ok = want[f] & (np.asarray(codes.value) > 0)
            feats.append(f[ok])
            flats.append(token[ok])
            done += len(batch)
        f = np.concatenate(feats) if feats else np.zeros(0, np.int64)
        flat = np.concatenate(flats) if flats else np.zeros(0, np.int64)
        order = np.lexsort((rng.random(len(f)), f))  # random order within each feature
        f, flat = f[order], flat[order]
        starts = np.searchsorted(f, features)
        ends = np.searchsorted(f, features, side="right")
        return {int(x): flat[a : min(b, a + 2 * cfg.firing_sample)] for x, a, b in zip(features, starts, ends)}

    def _counts(self, ctx: int) -> None:
        """Counts over the random sample rows only (top sequences are not a random sample)."""
        n, v = self.n_sample_rows, self.vocab_size
        tok, prev, nxt = (a[:n].reshape(-1) for a in (self.view.tokens, self.view.prev, self.view.next))
        valid = tok >= 0
        word = self.evaluator.is_word[np.where(valid, tok, v)]
        self.unigram = np.bincount(tok[valid], minlength=v).astype(np.float64)
        self.flag_hist = {
            k: np.bincount(tok[flag[:n].reshape(-1)], minlength=v).astype(np.float64)
            for k, flag in self.view.flags.items()
        }
        self.neighbour: dict[str, np.ndarray] = {}
        self.bigram: dict[str, sp.csr_matrix] = {}
        for kind, other in (("after", prev), ("before", nxt)):
            ok = word & (other >= 0)
            self.neighbour[kind] = np.bincount(other[ok], minlength=v).astype(np.float64)
            self.bigram[kind] = sp.csr_matrix((np.ones(int(ok.sum())), (other[ok], tok[ok])), shape=(v, v))
        # P(word | the token before it) and P(word | the token after it): rows normalised
        self.conditional = {
            kind: sp.diags(1.0 / np.maximum(self.neighbour[kind], 1.0)) @ m for kind, m in self.bigram.items()
        }

    def implied_by_neighbours(self, evidence: Evidence, n_words: int) -> tuple[np.ndarray, np.ndarray]:
        """The words the evidence's neighbours imply at the firing position, strongest first, with
        PMI weights as in ``Evidence``. A translator can read a feature's contexts (the features
        around it in its windows) better than the feature itself: a frequent function word's
        feature may decode as the wrong function word, its neighbours right ("at" before, "first"
        after). The corpus's bigrams say which word stands between such neighbours: with
        neighbour evidence a (before) and b (after), P(w | a, b) ~ P(w | a) P(w | b) / P(w)
        (the two sides taken as independent given w), each side the evidence-weighted mean of
        the bigram conditionals over the top ``n_words`` words. Sides without evidence drop out."""
        base = np.maximum(self.unigram_rate, 1e-12)
        log_p = np.log(base)
        used = False
        for kind, at in (("after", BEFORE), ("before", AFTER)):
            ids, w = evidence.ids[at][:n_words], evidence.weights[at][:n_words]
            if n_words <= 0 or len(ids) == 0 or w.sum() <= 0:
                continue
            rows = self.conditional[kind][ids]  # P(w | neighbour) per evidence word
            given = np.asarray((w / w.sum()) @ rows).ravel()  # [V]
            log_p += np.log(np.maximum(given, 1e-12)) - np.log(base)
            used = True
        if not used:
            return np.zeros(0, np.int64), np.zeros(0)
        p = np.exp(log_p - log_p.max())
        p /= p.sum()
        found = Evidence.from_contrast([np.arange(len(p))], [p], [base])
        return found.ids[0], found.weights[0]

    def similar_words(self, words: np.ndarray, k: int) -> list[tuple[np.ndarray, np.ndarray]]:
        """For each word, the ``k`` words of most similar distribution in the sample (cosine of their
        PPMI left- and right-neighbour vectors), most similar first, with the similarities. An
        unsupervised translator identifies a word only up to words that share its distribution
        (".", "?" and "!"; "wolf" and "fox"): these are the words it may have meant."""
        out = []
        for w in np.asarray(words, dtype=np.int64).tolist():
            if (w, k) not in self._similar:  # features share their top words: each is looked up once
                # one sparse row times the transpose: touches only the rows of the contexts w has
                sims = (self.distribution_vectors[w] @ self.distribution_vectors_t).toarray().ravel()
                sims[w] = 0.0
                top = np.argsort(-sims, kind="stable")[:k]
                top = top[sims[top] > 0]
                self._similar[w, k] = (top, sims[top])
            out.append(self._similar[w, k])
        return out

    @functools.cached_property
    def distribution_vectors_t(self) -> sp.csr_matrix:
        """[2V, V]: ``distribution_vectors`` transposed, rows by context, for one word's similarities."""
        return self.distribution_vectors.T.tocsr()

    @functools.cached_property
    def distribution_vectors(self) -> sp.csr_matrix:
        """[V, 2V]: each token's PPMI-weighted counts of the tokens right before and right after it
        in the sample, rows L2-normalised; zero for tokens seen fewer than ``MIN_SIMILAR_COUNT`` times."""
        n, v = self.n_sample_rows, self.vocab_size
        tok = self.view.tokens[:n]
        left, right = tok[:, :-1].reshape(-1), tok[:, 1:].reshape(-1)
        ok = (left >= 0) & (right >= 0)
        pairs = sp.csr_matrix((np.ones(int(ok.sum())), (left[ok], right[ok])), shape=(v, v))  # [before, after]
        parts = []
        for m in (pairs.T.tocsr(), pairs.tocsr()):  # rows: a token; columns: the token before / after it
            m = m.tocoo()
            total = m.data.sum()
            rows, cols = np.asarray(m.sum(1)).ravel(), np.asarray(m.sum(0)).ravel()
            pmi = np.log(m.data * total / np.maximum(rows[m.row] * cols[m.col], 1e-12))
            keep = pmi > 0
            parts.append(sp.csr_matrix((pmi[keep], (m.row[keep], m.col[keep])), shape=(v, v)))
        vectors = sp.hstack(parts).tocsr()
        norm = np.sqrt(np.asarray(vectors.multiply(vectors).sum(1)).ravel())
        scale = np.where((self.unigram >= MIN_SIMILAR_COUNT) & (norm > 0), 1.0 / np.maximum(norm, 1e-12), 0.0)
        return (sp.diags(scale) @ vectors).tocsr()

    @property
    def unigram_rate(self) -> np.ndarray:
        """The sample's token distribution: the corpus base rate evidence is contrasted with."""
        return self.unigram / max(self.unigram.sum(), 1.0)

    def selected(self, rule: Rule) -> float:
        """How many sample tokens the rule selects (train scale)."""
        ev = self.evaluator
        target = ev.selector_ids(rule.target) if rule.target is not None else None
        c = rule.context
        if c is None:
            assert target is not None
            n = self.unigram[target].sum()
        elif c.kind in ("after", "before"):
            assert c.of is not None
            neighbours = ev.selector_ids(c.of)
            if target is None:
                n = self.neighbour[c.kind][neighbours].sum()
            else:
                n = joint_count(self.bigram[c.kind], neighbours, target)
        else:
            key = c.kind if c.kind in STRUCTURAL else ("inside", *c.delimiters)
            hist = self.flag_hist.get(key)
            if hist is None:
                return 0.0
            n = hist.sum() if target is None else hist[target].sum()
        return float(n) * self.scale

    def context_counts(self, context: Context) -> np.ndarray:
        """[V]: how often each token stands in the context in the sample."""
        ev = self.evaluator
        if context.kind in ("after", "before"):
            assert context.of is not None
            rows = ev.selector_ids(context.of)
            return np.asarray(self.bigram[context.kind][rows].sum(axis=0)).ravel()
        key = context.kind if context.kind in STRUCTURAL else ("inside", *context.delimiters)
        return self.flag_hist.get(key, np.zeros(self.vocab_size))

    def firing_cells(self, feature: int) -> TokenView:
        """The view at the feature's sampled firing positions."""
        flat = self.positions.get(feature, np.zeros(0, np.int64))
        ctx = self.view.tokens.shape[1]
        return self.evaluator.cells(self.view, flat // ctx, flat % ctx)

    def fidelity(self, feature: int, rule: Rule, cells: TokenView | None = None) -> float:
        """How well the rule's selection states the feature's firing on train tokens (``fit``)."""
        return self.fit(feature, rule, cells).fidelity

    def fit(self, feature: int, rule: Rule, cells: TokenView | None = None) -> RuleFit:
        """How the rule fits the feature's firing on train tokens."""
        cells = cells if cells is not None else self.firing_cells(feature)
        if cells.tokens.size == 0:
            return RuleFit(0.0, 0.0, 0.0)
        recall = float(self.evaluator.select(rule, cells).mean())
        selected = self.selected(rule)
        if recall == 0.0 or selected <= 0:
            return RuleFit(0.0, 0.0, recall)
        lift = recall * self.n_tokens / selected
        firings = self.count[feature]
        scale = 1.0
        if self.criterion == "detection":
            # the share of the tokens where the feature is silent that the rule selects, and the
            # chance that a silent window holds one (tokens taken as independent)
            silent = min(1.0, max(0.0, selected - recall * firings) / max(self.n_tokens - firings, 1.0))
            fpr = 1.0 - (1.0 - silent) ** self.window
            if recall > fpr:
                return RuleFit(recall - fpr, lift, recall)
            # no better than chance at telling windows apart: such rules rank below every rule that
            # is, and among themselves by F-beta (else all would tie at 0 and the simplest would win)
            scale = BELOW_CHANCE
        precision = min(1.0, recall * firings / selected)
        b2 = self.beta**2
        return RuleFit(scale * (1 + b2) * precision * recall / (b2 * precision + recall), lift, recall)

    def evidence(self, feature: int, max_words: int = 64) -> Evidence:
        """The feature's real train contexts as evidence: token counts at each offset of its firing
        sample (the evidence half), contrasted with the sample's unigram distribution."""
        flat = self.evidence_positions.get(feature, np.zeros(0, np.int64))
        ctx = self.view.tokens.shape[1]
        rows, cols = flat // ctx, flat % ctx
        base = self.unigram_rate
        ids, probs = [], []
        for d in OFFSETS:
            c = cols + d
            ok = (c >= 0) & (c < ctx)
            t = self.view.tokens[rows[ok], c[ok]]
            t = t[t >= 0]
            u, n = np.unique(t, return_counts=True)
            ids.append(u)
            probs.append(n / max(len(flat), 1))
        return Evidence.from_distributions(ids, probs, [base] * len(OFFSETS), max_words)


class Describer:
    """Evidence -> candidate rules -> the one with the best fidelity on train windows."""

    def __init__(self, sample: TrainSample, categories: CategorySource | None, cfg: DescriberConfig):
        self.sample, self.categories, self.cfg = sample, categories, cfg
        self._proposed: dict[tuple[bytes, bytes, int], list[Selector]] = {}  # per candidates() call
        ev = sample.evaluator
        # each structural context with the marks whose presence around the firing position points
        # at it: (marks before, marks after)
        starts = np.union1d(ev.sentence_end, ev.boundary)
        empty = np.zeros(0, np.int64)
        self.structural: list[tuple[Context, np.ndarray, np.ndarray]] = [
            (Context("sentence_start"), starts, empty),
            (Context("sentence_end"), empty, ev.sentence_end),
        ] + [(Context("inside", delimiters=d), ev.token_ids((d[0],)), ev.token_ids((d[1],))) for d in ev.delimiters]

    def prepare(self) -> None:
        """Build now what is otherwise built on the first description that needs it (the WordNet
        index, the words' distribution vectors): forked workers then share it instead of each
        building its own."""
        if self.categories is not None:
            self.categories.prepare()
        _ = self.sample.distribution_vectors_t

    def selectors(
        self, ids: np.ndarray, weights: np.ndarray, n_tokens: int, n_single: int = 0, residual: int = 0
    ) -> list[Selector]:
        """Token sets of the top 1..n distinct words, each of the top ``n_single`` words alone, and
        WordNet categories of the weighted words (with ``residual`` rounds over the words the best
        leaves out)."""
        words = self._distinct_words(ids, max(n_tokens, n_single))
        out = [Selector(tokens=tuple(words[:k])) for k in range(1, min(n_tokens, len(words)) + 1)]
        out += [Selector(tokens=(w,)) for w in words[1:n_single]]
        if self.categories is not None and len(ids):
            out += self.category_proposals(ids, weights, residual)
        return out

    def category_proposals(self, ids: np.ndarray, weights: np.ndarray, residual: int = 0) -> list[Selector]:
        """WordNet categories of the weighted words; then, ``residual`` times, those of
        the words the best category so far leaves out. Evidence often mixes two classes ("car",
        "wolf", "bus", "lion"): the best few categories are then nested ones of the heavier class
        (vehicle, wheeled vehicle, motor vehicle) and the other class is never a candidate."""
        assert self.categories is not None
        # one feature's candidates read the same offset's evidence up to three times (as the firing
        # word, and as the neighbour of a word read one position off): propose its categories once
        key = (np.asarray(ids).tobytes(), np.asarray(weights).tobytes(), residual)
        if key in self._proposed:
            return self._proposed[key]
        out: list[Selector] = []
        self._proposed[key] = out
        left = np.asarray(weights, dtype=np.float64).copy()
        for round_ in range(1 + residual):
            keep = left > 0
            if not keep.any():
                break
            weights_of = {int(i): float(w) for i, w in zip(ids[keep], left[keep])}
            found = list(self.categories.propose(weights_of, self.cfg.n_categories if round_ == 0 else 1))
            out += [c for c in found if c not in out]
            if not found:
                break
            left[isin(ids, self.sample.evaluator.selector_ids(found[0]))] = 0.0
        return out

    def _distinct_words(self, ids: np.ndarray, n: int) -> list[str]:
        text = self.sample.evaluator.text
        return [text[int(ids[j])] for j in self._distinct(ids, n)]

    def _distinct(self, ids: np.ndarray, n: int) -> list[int]:
        """Indices into ``ids`` of its first ``n`` distinct words (tokens of one text are one word)."""
        text = self.sample.evaluator.text
        first: dict[str, int] = {}
        for j, i in enumerate(ids.tolist()):
            if len(first) == n:
                break
            first.setdefault(text[i], j)
        return list(first.values())

    def supported_structure(self, evidence: Evidence) -> list[Context]:
        """The structural contexts the evidence points at: a sentence start where a sentence end
        (or a sequence boundary) stands out right before the firing position, a sentence end where
        one stands out right after it, inside a delimiter pair where its opening mark stands out
        before or its closing mark after (offsets up to 3). A mark stands out at an offset when it
        is at least ``min_lift`` times as likely there as its base rate. Proposing structure
        regardless lets the most common structure win every feature whose evidence proposes
        nothing faithful."""

        def standing_out(offsets: range) -> np.ndarray:
            ids = [evidence.ids[d][evidence.lift[d] >= self.cfg.min_lift] for d in offsets]
            return np.concatenate(ids) if ids else np.zeros(0, np.int64)

        before, after = standing_out(range(AT)), standing_out(range(AT + 1, len(OFFSETS)))
        right_before, right_after = standing_out(range(BEFORE, AT)), standing_out(range(AFTER, AFTER + 1))
        out = []
        for context, marks_before, marks_after in self.structural:
            near_before = right_before if context.kind == "sentence_start" else before
            near_after = right_after if context.kind == "sentence_end" else after
            if isin(near_before, marks_before).any() or isin(near_after, marks_after).any():
                out.append(context)
        return out

    def candidates(self, evidence: Evidence) -> list[Rule]:
        cfg = self.cfg
        self._proposed.clear()
        # The firing word's evidence ranks the right word high but not always first (a translator
        # confuses function words of one class; neighbours imply several words): the words below
        # the top are tried alone as well, and fidelity on train windows picks.
        residual = cfg.residual_categories  # for the firing word only: its categories matter most
        targets = self.selectors(evidence.ids[AT], evidence.weights[AT], cfg.max_tokens, cfg.single_words, residual)
        implied_ids, implied_weights = self.sample.implied_by_neighbours(evidence, cfg.neighbour_words)
        implied = self.selectors(implied_ids, implied_weights, cfg.max_tokens, cfg.single_words, residual)
        targets += [t for t in implied if t not in targets]
        similar_ids, similar_weights = self.similar_evidence(evidence.ids[AT], evidence.weights[AT])
        similar = self.selectors(similar_ids, similar_weights, cfg.max_tokens, cfg.similar_words, residual)
        targets += [t for t in similar if t not in targets]
        for at in self.firing_offsets()[1:]:  # the evidence read one position off
            shifted = self.selectors(evidence.ids[at], evidence.weights[at], cfg.shifted_words)
            targets += [t for t in shifted if t not in targets]
        contexts = self.supported_structure(evidence)
        for firing in self.firing_offsets():
            for kind in ("after", "before"):
                at = neighbour_offset(firing, kind)
                for sel in self.selectors(evidence.ids[at], evidence.weights[at], cfg.n_context_words):
                    if (c := Context(kind, of=sel)) not in contexts:
                        contexts.append(c)
        return [Rule(target=t) for t in targets] + [Rule(context=c) for c in contexts]

    def similar_evidence(self, ids: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The top ``similar_from`` distinct words of the evidence with the words of most similar
        distribution to each, weighted by the word's weight times the similarity (a word reached
        from two keeps the larger), strongest first."""
        cfg = self.cfg
        if cfg.similar_words <= 0 or len(ids) == 0:
            return np.zeros(0, np.int64), np.zeros(0)
        top = np.array(self._distinct(ids, cfg.similar_from), dtype=np.int64)
        weight: dict[int, float] = {}
        for j, (near, sims) in zip(top.tolist(), self.sample.similar_words(ids[top], cfg.similar_words)):
            for i, w in [(int(ids[j]), float(weights[j]))] + list(zip(near.tolist(), (weights[j] * sims).tolist())):
                weight[i] = max(weight.get(i, 0.0), w)
        order = sorted(weight, key=lambda i: -weight[i])
        return np.array(order, dtype=np.int64), np.array([weight[i] for i in order])

    def firing_offsets(self) -> tuple[int, ...]:
        """Where the evidence may hold the firing word (indices into OFFSETS): at the firing
        position, and with ``shifted_words`` one position off either side."""
        return (AT, BEFORE, AFTER) if self.cfg.shifted_words else (AT,)

    def describe(self, feature: int, evidence: Evidence) -> Description | None:
        cells = self.sample.firing_cells(feature)
        fits = {r: self.sample.fit(feature, r, cells) for r in self.candidates(evidence)}
        self.grow_token_set(feature, fits, cells)
        scored = {r: fit.fidelity for r, fit in fits.items()}
        # targets in contexts: the best few of each, together
        best_targets = sorted((r for r in scored if r.context is None), key=lambda r: -scored[r])[: self.cfg.n_combined]
        best_contexts = sorted((r for r in scored if r.target is None), key=lambda r: -scored[r])[: self.cfg.n_combined]
        for t in best_targets:
            for c in best_contexts:
                if scored[t] > 0 and scored[c] > 0:
                    rule = Rule(target=t.target, context=c.context)
                    fit = fits[rule] = self.sample.fit(feature, rule, cells)
                    # the context must hold most of the feature's firings on the target (a feature
                    # that fires on the word anywhere, most in one context, is about the word) and
                    # make them likelier than on the target anywhere (not the word's usual context)
                    alone = fits[t]
                    if fit.recall >= self.cfg.min_context_share * alone.recall and (
                        fit.lift >= self.cfg.min_rule_lift * alone.lift
                    ):
                        scored[rule] = fit.fidelity
        if not scored:
            return None
        # a rule under which the feature fires hardly more often than anywhere describes nothing;
        # recall-weighted fidelity would otherwise let a broad one win ("a word inside quotes")
        telling = {r: s for r, s in scored.items() if fits[r].lift >= self.cfg.min_rule_lift}
        scored = telling or scored
        n = len(self.sample.positions.get(feature, ()))
        best = max(scored.values())
        margin = tie_margin(best, n, self.cfg)
        ranked = choose(scored, margin)
        rule, fidelity = self.pruned(feature, *ranked[0], best - margin, cells, bool(telling))
        rule, fidelity = self.stated(feature, self.with_examples(rule, evidence, cells), fidelity, best - margin, cells)
        return Description(rule, fidelity, ranked[1:6])

    def grow_token_set(self, feature: int, fits: dict[Rule, RuleFit], cells: TokenView) -> None:
        """The best word set of up to ``max_tokens`` words, grown one word at a time from the best
        single word among the candidate words the feature fires on, while a word raises the
        fidelity by more than ``tie`` (added to ``fits``). The evidence ranks the feature's words
        high but not in the order of how often the feature fires on them ("?" before ".")."""
        singles = [r for r, fit in fits.items() if r.context is None and fit.recall > 0 and _single_word(r)]
        if not singles:
            return
        current = max(singles, key=lambda r: fits[r].fidelity)
        pool = [r.target.tokens[0] for r in singles if r is not current]  # type: ignore[union-attr]
        for _ in range(self.cfg.max_tokens - 1):
            words = current.target.tokens  # type: ignore[union-attr]
            options = [Rule(target=Selector(tokens=(*words, w))) for w in pool if w not in words]
            for rule in options:
                if rule not in fits:
                    fits[rule] = self.sample.fit(feature, rule, cells)
            best = max(options, key=lambda r: fits[r].fidelity, default=None)
            if best is None or fits[best].fidelity <= fits[current].fidelity + self.cfg.tie:
                return
            current = best

    def pruned(
        self, feature: int, rule: Rule, fidelity: float, floor: float, cells: TokenView, need_lift: bool
    ) -> tuple[Rule, float]:
        """A context rule with the neighbour words that fit nothing dropped, one at a time while the
        fidelity stays at or above ``floor`` (the tie margin below the best), and its lift at
        ``min_rule_lift`` where the choice required it (``need_lift``). Neighbour sets are
        the evidence's top words in order, and the rare word among them that adds nothing is no
        part of the description ('right before "they", "administering" or ","' where "," carries
        the rule)."""
        while True:
            options = []
            for simpler in one_token_fewer(rule):
                fit = self.sample.fit(feature, simpler, cells)
                if fit.fidelity >= floor and (not need_lift or fit.lift >= self.cfg.min_rule_lift):
                    options.append((fit.fidelity, simpler))
            if not options:
                return rule, fidelity
            fidelity, rule = max(options, key=lambda o: o[0])

    def stated(self, feature: int, rule: Rule, fidelity: float, floor: float, cells: TokenView) -> tuple[Rule, float]:
        """A context label whose words are mostly one category ('the word right after "sold",
        mostly a number such as "two"') or one word ('the word right after "took", e.g. "the"') as
        that target in the context ('a number such as "two" right after "sold"', '"the" right after
        "took"') where its fidelity is at or above ``floor`` (the tie margin below the best): it
        says what the feature fires on as well as where. The more general context rule stays where
        stating the target costs fidelity."""
        if not self.cfg.mostly_stated or rule.target is not None or rule.context is None:
            return rule, fidelity
        target = rule.mostly or self._mostly_word(rule, cells)
        if target is None:
            return rule, fidelity
        stated = Rule(target=target, context=rule.context)
        fit = self.sample.fit(feature, stated, cells)
        return (stated, fit.fidelity) if fit.fidelity >= floor else (rule, fidelity)

    def _mostly_word(self, rule: Rule, cells: TokenView) -> Selector | None:
        """The context label's example word that more than ``mostly_share`` of the feature's firings
        in the context are on, if one is (a word is not named as 'mostly "the"' in the text: only
        a category says more than the examples do)."""
        in_context = self.sample.evaluator.select(rule, cells)
        for word in rule.examples:
            selector = Selector(tokens=(word,))
            if self._holds_most(in_context, selector, cells):
                return selector
        return None

    def _holds_most(self, in_context: np.ndarray, selector: Selector, cells: TokenView) -> bool:
        """More than ``mostly_share`` of the firings a context selects (``in_context``) are on the
        selector's words."""
        on = in_context & self.sample.evaluator.select(Rule(target=selector), cells)
        return bool(on.sum() > self.cfg.mostly_share * in_context.sum())

    def with_examples(self, rule: Rule, evidence: Evidence, cells: TokenView | None = None) -> Rule:
        """A target category, or else the neighbour category of a context, shown with the members
        the evidence weighs most where the rule looks ("fruit (apple, pear)", 'the word right
        after a number such as "two" or "three"'): a category name alone can be obscure
        ("cardinal") and its members say which part of it the feature prefers. The rule, and so
        every score but the text's, is unchanged."""
        if rule.target is not None and rule.target.is_category:
            # members where the evidence puts them: at the firing position first, then where the
            # neighbours imply them, then one position off (where the candidate may have come from)
            implied = self.sample.implied_by_neighbours(evidence, self.cfg.neighbour_words)[0]
            ids = [evidence.ids[AT], implied] + [evidence.ids[a] for a in self.firing_offsets()[1:]]
            return replace(rule, target=self._examples(rule.target, np.concatenate(ids)))
        c = rule.context
        if rule.target is None and c is not None:
            if c.of is not None and c.of.is_category:
                near = np.concatenate([evidence.ids[neighbour_offset(a, c.kind)] for a in self.firing_offsets()])
                rule = replace(rule, context=replace(c, of=self._examples(c.of, near)))
            there, shifted = self._context_example_scores(c, evidence)
            rule = replace(rule, examples=self._top_words((there, shifted)))
            return replace(rule, mostly=self._mostly(rule, there, cells)) if cells is not None else rule
        return rule

    def _mostly(self, rule: Rule, scores: np.ndarray, cells: TokenView) -> Selector | None:
        """A category of the words the evidence puts in the context rule's place, if most of the
        feature's train firings that the rule selects are in it (checked on the fidelity half of
        the firings, as fidelity is), with its members the evidence weighs most as examples. A
        reader learns what fills the context ('the word right after "from", mostly a city');
        the rule, and every score but the text's, is unchanged."""
        if self.categories is None:
            return None
        top = np.argsort(-scores, kind="stable")[: self.cfg.neighbour_words]
        top = top[scores[top] > 0]
        if len(top) == 0:
            return None
        in_context = self.sample.evaluator.select(rule, cells)
        if not in_context.any():
            return None
        for category in self.categories.propose({int(i): float(scores[i]) for i in top}, self.cfg.n_categories):
            if category.part_of_speech == "noun" and self._holds_most(in_context, category, cells):
                return self._examples(category, top)
        return None

    def _context_example_scores(self, context: Context, evidence: Evidence) -> tuple[np.ndarray, np.ndarray]:
        """[V] x 2: how much the evidence puts each word in a context rule's place ('the word right
        after "at" or "in", e.g. "the"'): the evidence's words at the firing position and those its
        neighbours imply, each weighted by its evidence and by how often the context holds it in
        the train sample (so a word the context never holds scores 0); then, to fill in examples
        after those, the evidence's words one position off."""
        ev = self.sample.evaluator
        ids, weights = self.sample.implied_by_neighbours(evidence, self.cfg.neighbour_words)
        held = self.sample.context_counts(context)
        there = np.zeros(len(ev.vocab))
        np.add.at(there, evidence.ids[AT], evidence.weights[AT])
        np.add.at(there, ids, weights)
        # the evidence one position off fills in after those (where the rule may have come from)
        shifted = np.zeros(len(ev.vocab))
        for at in self.firing_offsets()[1:]:
            np.add.at(shifted, evidence.ids[at], evidence.weights[at])
        return there * held, shifted * held

    def _top_words(self, scores: tuple[np.ndarray, ...]) -> tuple[str, ...]:
        """Up to ``n_examples`` distinct words, by the first scores, then the next to fill."""
        ev = self.sample.evaluator
        words: list[str] = []
        for score in scores:
            for i in np.argsort(-score, kind="stable").tolist():
                if score[i] <= 0 or len(words) == self.cfg.n_examples:
                    break
                if ev.text[i] not in words:
                    words.append(ev.text[i])
        return tuple(words)

    def _examples(self, category: Selector, ids: np.ndarray) -> Selector:
        """The category with its members the evidence ``ids`` weigh most as examples; named by its
        own word where every example is a form of it ('feel (felt)', not 'find (felt)')."""
        ev = self.sample.evaluator
        members = ids[isin(ids, ev.selector_ids(category))].tolist()

        def shown(name: str) -> tuple[str, ...]:
            words: list[str] = []
            for i in members:
                word = ev.text[i]
                if word != name and word not in words:
                    words.append(word)
                if len(words) == self.cfg.n_examples:
                    break
            return tuple(words)

        words = shown(category.name)
        lemma = self.categories.lemma_of_forms(category.synset, words) if self.categories is not None else None
        if lemma is not None and lemma != category.name:
            return replace(category, name=lemma, examples=shown(lemma))
        return replace(category, examples=words)


def tie_margin(best: float, n: int, cfg: DescriberConfig) -> float:
    """How far below the best fidelity a simpler rule still counts as good as the best: the
    one-standard-error rule (a fidelity estimated from n firing positions is uncertain by about
    sqrt(F (1 - F) / n)), at least ``cfg.tie``, capped at ``cfg.max_tie_share`` of the best. For a
    rare feature every rule's fidelity is small (few firings against many selected tokens): uncapped,
    the margin would exceed the best fidelity itself, call every candidate equal and hand the
    feature the simplest rule proposed, faithful or not."""
    margin = max(cfg.tie, float(np.sqrt(best * (1 - best) / max(n, 1))))
    return min(margin, cfg.max_tie_share * best)


def neighbour_offset(firing: int, kind: str) -> int:
    """The index into OFFSETS of the neighbour an "after" / "before" context names, for a firing
    word read at index ``firing``."""
    return firing - 1 if kind == "after" else firing + 1


def _single_word(rule: Rule) -> bool:
    return rule.target is not None and not rule.target.is_category and len(rule.target.tokens) == 1


def one_token_fewer(rule: Rule) -> list[Rule]:
    """A context rule with one word left out of its neighbour's token set. A word rule keeps its
    words: they show the reader the class ("my, our, your"), and a target in a context keeps the
    words its context was chosen for."""
    c = rule.context
    if rule.target is None and c is not None and c.of is not None and not c.of.is_category and len(c.of.tokens) > 1:
        words = c.of.tokens
        return [Rule(context=replace(c, of=Selector(tokens=words[:i] + words[i + 1 :]))) for i in range(len(words))]
    return []


def choose(scored: dict[Rule, float], tie: float) -> list[tuple[Rule, float]]:
    """Rules best first: by fidelity, except that within ``tie`` of the best the simpler rule leads."""
    best = max(scored.values())
    near = sorted((r for r, s in scored.items() if s >= best - tie), key=lambda r: (r.complexity, -scored[r]))
    rest = sorted((r for r in scored if r not in set(near)), key=lambda r: -scored[r])
    return [(r, scored[r]) for r in near + rest]


def joint_count(bigram: sp.csr_matrix, rows: np.ndarray, cols: np.ndarray) -> float:
    """Sum of ``bigram[rows][:, cols]`` (cols sorted) without building the submatrix."""
    if len(rows) == 0 or len(cols) == 0:
        return 0.0
    starts, ends = bigram.indptr[rows], bigram.indptr[np.asarray(rows) + 1]
    lengths = ends - starts
    if lengths.sum() == 0:
        return 0.0
    idx = np.repeat(starts - np.r_[0, np.cumsum(lengths)[:-1]], lengths) + np.arange(lengths.sum())
    return float(bigram.data[idx][isin(bigram.indices[idx], cols)].sum())
