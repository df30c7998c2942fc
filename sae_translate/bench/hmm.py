"""HMM languages: a benchmark for unsupervised translation with a known answer.

One random hidden Markov chain emits two languages through different emission matrices over
different vocabularies. Training sees sentences of each language from independent runs of the
chain (no parallel data); held-out parallel pairs (one state path emitted in both languages) give
the ground truth: the counterpart of a position is the other language's most probable symbol for
the state that emitted it.
"""

from __future__ import annotations

import json
import math
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file

from sae_translate.bench.config import BENCH_TRANSLATOR as BENCH_TRANSLATOR  # re-exported
from sae_translate.bench.config import BenchConfig, HMMConfig
from sae_translate.bench.config import bench_translator as bench_translator  # re-exported
from sae_translate.store.atomic import atomic_write_text
from sae_translate.translator.anchor import WordDictionary, induce_dictionary
from sae_translate.translator.hmm_anchor import FittedHMM, HMMAnchor, posteriors
from sae_translate.translator.model import Translator
from sae_translate.translator.train import (
    Corpus,
    ParallelCorpus,
    TranslatorConfig,
    load_translator,
    resolve_device,
    train_translator,
)


@dataclass
class HMM:
    transition: np.ndarray  # [S, S] rows sum to 1
    initial: np.ndarray  # [S] stationary distribution: sentences are windows of a running chain
    emission_a: np.ndarray  # [S, Va]
    emission_b: np.ndarray  # [S, Vb]

    @property
    def states(self) -> int:
        return self.transition.shape[0]

    def emission(self, language: str) -> np.ndarray:
        return {"a": self.emission_a, "b": self.emission_b}[language]

    def sample_states(self, n: int, length: int, rng: np.random.Generator) -> np.ndarray:
        """n independent state paths [n, length] (int64)."""
        cum = np.cumsum(self.transition, axis=1)
        paths = np.empty((n, length), dtype=np.int64)
        paths[:, 0] = rng.choice(self.states, size=n, p=self.initial)
        for t in range(1, length):
            u = rng.random(n)[:, None]
            paths[:, t] = (u > cum[paths[:, t - 1]]).sum(axis=1)
        return np.minimum(paths, self.states - 1)  # guards against rounding in the last cumsum

    def emit(self, paths: np.ndarray, language: str, rng: np.random.Generator) -> np.ndarray:
        """One symbol per state, same shape as paths."""
        cum = np.cumsum(self.emission(language), axis=1)
        u = rng.random(paths.shape)[..., None]
        symbols = (u > cum[paths]).sum(axis=-1)
        return np.minimum(symbols, cum.shape[1] - 1)

    def home_symbols(self, language: str) -> np.ndarray:
        """[S]: each state's most probable symbol in that language (the ground-truth counterpart)."""
        return self.emission(language).argmax(axis=1)

    def posterior(self, symbols: np.ndarray, language: str) -> np.ndarray:
        """Forward-backward state posteriors [n, L, S] for sentences [n, L] of one language."""
        return posteriors(symbols, FittedHMM(self.transition, self.initial, self.emission(language), math.nan))

    def ceiling_translate(self, symbols: np.ndarray, source: str, target: str) -> np.ndarray:
        """The decoder that knows the HMM: most probable posterior state -> its home symbol."""
        return self.home_symbols(target)[self.posterior(symbols, source).argmax(-1)]

    def predictive_translate(
        self, symbols: np.ndarray, source: str, target: str, prior_correction: float = 0.0
    ) -> np.ndarray:
        """What a perfect model of the training pairs decodes: the exact P(target symbol | whole
        source sentence) (forward-backward posterior times the target's emissions), argmax of
        log P(w | source) - prior_correction * log P(w) as the translator decodes. Pairs carry sampled
        emissions, not home symbols, so this (not the ceiling) bounds a translator trained on them."""
        emission = self.emission(target)
        predictive = self.posterior(symbols, source) @ emission
        prior = self.initial @ emission
        return (np.log(predictive) - prior_correction * np.log(prior)).argmax(-1)

    def lookup_translate(self, symbols: np.ndarray, source: str, target: str) -> np.ndarray:
        """The best per-symbol dictionary, knowing the HMM: each symbol alone -> its most probable
        state (Bayes on the stationary prior) -> that state's home symbol. No context is read."""
        joint = self.emission(source) * self.initial[:, None]  # [S, V_source]
        return self.home_symbols(target)[joint.argmax(0)][symbols]


def make_hmm(cfg: HMMConfig) -> HMM:
    """A random chain and two emission matrices; each state gets a distinct home symbol per language."""
    cfg.validate()
    rng = np.random.default_rng(cfg.seed)
    transition = rng.dirichlet(np.full(cfg.states, cfg.concentration), size=cfg.states)
    transition = 0.999 * transition + 0.001 / cfg.states  # keep the chain irreducible
    eigvals, eigvecs = np.linalg.eig(transition.T)
    stationary = np.abs(np.real(eigvecs[:, np.argmin(np.abs(eigvals - 1))]))
    stationary /= stationary.sum()

    def emission(vocab: int) -> np.ndarray:
        logits = rng.normal(size=(cfg.states, vocab))
        homes = rng.permutation(vocab)[: cfg.states]
        rows = np.arange(cfg.states)
        logits[rows, homes] += cfg.sharpness
        # if noise beat the bonus, swap values so each home stays its state's most probable symbol
        top = logits.argmax(1)
        logits[rows, homes], logits[rows, top] = logits[rows, top], logits[rows, homes].copy()
        probs = np.exp(logits - logits.max(1, keepdims=True))
        return probs / probs.sum(1, keepdims=True)

    return HMM(transition, stationary, emission(cfg.vocab_a), emission(cfg.vocab_b))


@dataclass
class HMMData:
    """Everything a benchmark run needs; only `pairs_*` and `test_*` know which sentences correspond."""

    hmm: HMM
    train_a: np.ndarray  # [n, L] independent chain runs, language a
    train_b: np.ndarray  # [n, L] independent chain runs, language b
    pairs_a: np.ndarray  # training pairs, for the aligned (supervised) upper bound only
    pairs_b: np.ndarray
    test_a: np.ndarray  # held-out parallel pairs: one state path emitted in both languages
    test_b: np.ndarray
    test_states: np.ndarray


def make_data(cfg: HMMConfig, n_train: int = 20000, n_test: int = 1000) -> HMMData:
    hmm = make_hmm(cfg)
    rng = np.random.default_rng(cfg.seed + 1)
    runs = lambda n: hmm.sample_states(n, cfg.length, rng)  # noqa: E731
    train_a = hmm.emit(runs(n_train), "a", rng)
    train_b = hmm.emit(runs(n_train), "b", rng)
    pair_paths, test_paths = runs(n_train), runs(n_test)
    return HMMData(
        hmm=hmm,
        train_a=train_a,
        train_b=train_b,
        pairs_a=hmm.emit(pair_paths, "a", rng),
        pairs_b=hmm.emit(pair_paths, "b", rng),
        test_a=hmm.emit(test_paths, "a", rng),
        test_b=hmm.emit(test_paths, "b", rng),
        test_states=test_paths,
    )


def counterpart_accuracy(hmm: HMM, states: np.ndarray, predicted: np.ndarray, target: str) -> float:
    """Share of positions translated to the target language's home symbol of the true state."""
    return float((predicted == hmm.home_symbols(target)[states]).mean())


def both_ways(data: HMMData, translate) -> float:
    """Mean counterpart accuracy of a -> b and b -> a on the held-out pairs; translate(symbols, src, tgt)."""
    hmm, states = data.hmm, data.test_states
    return (
        counterpart_accuracy(hmm, states, translate(data.test_a, "a", "b"), "b")
        + counterpart_accuracy(hmm, states, translate(data.test_b, "b", "a"), "a")
    ) / 2


def gap_closed(accuracy: float, lookup: float, ceiling: float) -> float:
    """Share of the context gap (per-symbol lookup -> HMM-aware ceiling) a translator closes."""
    return (accuracy - lookup) / max(ceiling - lookup, 1e-9)


def evaluate_translator(model: Translator, data: HMMData) -> tuple[float, float]:
    """(a -> b, b -> a) counterpart accuracy on the held-out pairs."""
    device = next(model.parameters()).device
    a = torch.as_tensor(data.test_a, device=device)
    b = torch.as_tensor(data.test_b, device=device)
    to_b = model.translate_words(a, 0, 1).cpu().numpy()
    to_a = model.translate_words(b, 1, 0).cpu().numpy()
    return (
        counterpart_accuracy(data.hmm, data.test_states, to_b, "b"),
        counterpart_accuracy(data.hmm, data.test_states, to_a, "a"),
    )


def _train_and_score(cfg: TranslatorConfig, data: HMMData, out: Path, aligned: bool) -> dict:
    corpus_a, corpus_b = (
        Corpus(data.train_a, data.hmm.emission_a.shape[1]),
        Corpus(data.train_b, data.hmm.emission_b.shape[1]),
    )
    start = time.perf_counter()
    if aligned:
        path = train_translator(
            replace(cfg, mode="aligned"), corpus_a, corpus_b, out, ParallelCorpus(data.pairs_a, data.pairs_b)
        )
    else:
        path = train_translator(replace(cfg, mode="unsupervised"), corpus_a, corpus_b, out)
    seconds = time.perf_counter() - start
    model = load_translator(path, cfg.device)
    ab, ba = evaluate_translator(model, data)
    meta = json.loads(path.with_suffix(".json").read_text())
    result = {
        "accuracy": (ab + ba) / 2,
        "accuracy_a_to_b": ab,
        "accuracy_b_to_a": ba,
        "selection_score": meta["best_score"],
        "selected_step": meta["best_step"],
        "seconds": seconds,
    }
    last = load_file(str(out / "last.safetensors"))
    if "hmm_match" in last:
        anchor = HMMAnchor.from_tensors(last)
        result["hmm_anchor_accuracy"] = both_ways(data, lambda x, src, tgt: anchor.translate(x, "ab".index(src)))
        result |= {f"hmm_anchor_{k}": v for k, v in meta.get("anchor", {}).items()}
    if "dict_ids_a" in last:
        dictionary = WordDictionary.from_tensors(last)
        words = (dictionary.best(0).numpy(), dictionary.best(1).numpy())
        result["word_by_word_accuracy"] = both_ways(data, lambda x, src, tgt: words["ab".index(src)][x])
        anchor = meta.get("anchor", {})
        if anchor:  # the unsupervised evidence the dictionary was chosen on
            result["anchor_discrepancy"] = anchor["discrepancy"]
            result["anchor_runner_up"] = anchor["runner_up"]
    return result


def word_by_word_accuracy(data: HMMData) -> float:
    """Accuracy of the word-by-word dictionary induced without pairs (the translator's word anchor)."""
    vocab_a, vocab_b = data.hmm.emission_a.shape[1], data.hmm.emission_b.shape[1]
    dictionary, _ = induce_dictionary(data.train_a, vocab_a, data.train_b, vocab_b)
    words = (dictionary.best(0).numpy(), dictionary.best(1).numpy())
    return both_ways(data, lambda x, src, tgt: words["ab".index(src)][x])


def run_benchmark(cfg: BenchConfig) -> dict:
    """Train unsupervised (and aligned), score on held-out parallel pairs; one flat dict of numbers.

    Beside each translator: the per-symbol lookup bound (the best context-free dictionary, knowing
    the HMM), the HMM-aware ceiling (forward-backward), and the share of the gap between them closed.
    An HMM anchor is given the true number of hidden states."""
    cfg = replace(cfg, translator=replace(cfg.translator, anchor_states=cfg.hmm.states))
    data = make_data(cfg.hmm, cfg.n_train, cfg.n_test)
    hmm = data.hmm
    ceiling, lookup = both_ways(data, hmm.ceiling_translate), both_ways(data, hmm.lookup_translate)
    alpha = cfg.aligned_translator.prior_correction
    predictive = both_ways(data, lambda x, src, tgt: hmm.predictive_translate(x, src, tgt, alpha))
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(cfg.out_dir or tmp)
        result = _train_and_score(cfg.translator, data, root / "unsupervised", aligned=False)
        if cfg.aligned:
            acfg = replace(cfg.aligned_translator, device=cfg.translator.device, progress=cfg.translator.progress)
            aligned = _train_and_score(acfg, data, root / "aligned", aligned=True)
    out = {
        "accuracy": result["accuracy"],
        "lookup": lookup,
        "ceiling": ceiling,
        "gap_closed": gap_closed(result["accuracy"], lookup, ceiling),
        "beats_lookup": result["accuracy"] >= lookup,
        "share_of_ceiling": result["accuracy"] / ceiling,
        # a perfect model of the training pairs, decoded as the translator decodes
        "predictive_bound": predictive,
        "predictive_gap_closed": gap_closed(predictive, lookup, ceiling),
        "steps": cfg.translator.steps,
        "seconds": result["seconds"],
        "device": str(resolve_device(cfg.translator.device)),
        "threads": torch.get_num_threads(),
        **{k: v for k, v in result.items() if k not in ("accuracy", "seconds")},
    }
    if cfg.translator.anchor and "word_by_word_accuracy" not in result:  # the HMM anchor replaced it
        start = time.perf_counter()
        out["word_by_word_accuracy"] = word_by_word_accuracy(data)
        out["word_by_word_seconds"] = time.perf_counter() - start
    if "word_by_word_accuracy" in out:
        out["anchor_gap_closed"] = gap_closed(out["word_by_word_accuracy"], lookup, ceiling)
    if "hmm_anchor_accuracy" in out:
        out["hmm_anchor_gap_closed"] = gap_closed(out["hmm_anchor_accuracy"], lookup, ceiling)
    if cfg.aligned:
        out |= {
            "aligned_accuracy": aligned["accuracy"],
            "aligned_seconds": aligned["seconds"],
            "aligned_steps": cfg.aligned_translator.steps,
            "aligned_selected_step": aligned["selected_step"],
            "aligned_gap_closed": gap_closed(aligned["accuracy"], lookup, ceiling),
            "unsupervised_over_aligned": result["accuracy"] / aligned["accuracy"],
        }
    out |= {
        "states": cfg.hmm.states,
        "vocab_a": cfg.hmm.vocab_a,
        "vocab_b": cfg.hmm.vocab_b,
        "sharpness": cfg.hmm.sharpness,
        "concentration": cfg.hmm.concentration,
        "seed": cfg.hmm.seed,
    }
    return out


ABLATIONS = ("denoise", "back_translation", "adversarial", "anchor")
ABLATION_SECTION = "## Translator ablations (HMM)"


def run_ablation(cfg: BenchConfig) -> list[dict]:
    """The full unsupervised translator, then the same with each loss removed in turn."""
    rows = []
    for removed in ("", *ABLATIONS):
        tcfg = cfg.translator if not removed else cfg.translator.without(removed)
        if removed == "anchor" and tcfg.denoise > 0:  # without an anchor, back-translation waits for the autoencoders
            tcfg = replace(tcfg, bt_start=tcfg.dictionary_steps)
        result = run_benchmark(replace(cfg, translator=tcfg, aligned=False, out_dir=""))
        rows.append({"removed": removed or "(none)", **result})
    return rows


def ablation_markdown(rows: list[dict], cfg: BenchConfig) -> str:
    h = cfg.hmm
    lines = [
        ABLATION_SECTION,
        "",
        f"`sae-translate bench hmm --ablate`: {h.states} states, vocabularies {h.vocab_a} / {h.vocab_b}, "
        f"sharpness {h.sharpness}, concentration {h.concentration}, seed {h.seed}; {cfg.translator.steps} steps, "
        f"batch {cfg.translator.batch_size}; accuracy on {cfg.n_test} held-out parallel pairs "
        f"(per-symbol lookup bound {rows[0]['lookup']:.3f}, HMM-aware ceiling {rows[0]['ceiling']:.3f}). The "
        f"checkpoint of each row is chosen by the {cfg.translator.selection.replace('_', ' ')} score, "
        "never by accuracy.",
        "",
        "| loss removed | accuracy | context gap closed | selection score | word-by-word anchor | seconds |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        anchor = f"{r['word_by_word_accuracy']:.3f}" if "word_by_word_accuracy" in r else "-"
        lines.append(
            f"| {r['removed']} | {r['accuracy']:.3f} | {r['gap_closed']:.0%} | {r['selection_score']:.3f} "
            f"| {anchor} | {r['seconds']:.0f} |"
        )
    return "\n".join(lines) + "\n"


def write_section(path: Path, section: str) -> None:
    """Replace (or append) the markdown section that starts with the same heading."""
    heading = section.splitlines()[0]
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    start = text.find(heading + "\n")
    if start < 0:
        text = text.rstrip("\n") + "\n\n" + section
    else:
        nxt = text.find("\n## ", start + len(heading))
        text = text[:start] + section + ("" if nxt < 0 else "\n" + text[nxt + 1 :])
    atomic_write_text(path, text)
