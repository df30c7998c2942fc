"""How much of a run's unsupervised translation the word-level dictionary limits, read against the
true pairs (a diagnosis, like the aligned mode: nothing here feeds a label).

    python benchmarks/dictionary_bound.py --run stores/real-corpus [--db labels.duckdb] [--json]

Per feature word of the run's feature language (the feature that fires most, relative to its
maximum, at each train token), its true counterpart is the text word it stands on most often.
Printed, as token accuracy (each train token counted once) and type precision (each feature word
once):

- the word-by-word ceiling: every feature word translated to its true counterpart;
- the unsupervised anchor's dictionary (saved in RUN/translator/last.safetensors);
- each trained translator's greedy translation of train windows;
- context matching with oracle neighbours: each feature word matched to the text word whose
  neighbours (offsets -2..+2, positive PMI over the most frequent text words, CSLS) are most like
  its own neighbours translated by the *true* dictionary: what a dictionary read off neighbour
  statistics reaches once the neighbours are right. Where it is far below the ceiling, the
  corpus's distributional signal, not the optimiser, limits the dictionary.

With --db, the translator's embedding AUROC against top-tokens per bucket of the unsupervised
translator's accuracy on the feature's own tokens.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch
from safetensors.torch import load_file

from sae_translate.errors import UserError
from sae_translate.store.h5 import RunStore
from sae_translate.translator.anchor import cooccurrence, csls
from sae_translate.translator.run import FEATURES, TEXT, load_languages, translator_dir
from sae_translate.translator.train import load_translator


def scores(joint: np.ndarray, best: np.ndarray) -> dict[str, float]:
    """Token accuracy and type precision of a dictionary `best` [V_features] under true counts `joint`."""
    truth, seen = joint.argmax(1), joint.sum(1) > 0
    return {
        "token_accuracy": float(joint[np.arange(len(best)), best].sum() / joint.sum()),
        "type_precision": float((best == truth)[seen].mean()),
    }


def neighbour_profiles(blocks: list[sp.csr_matrix], columns: np.ndarray, base: np.ndarray) -> np.ndarray:
    """Unit rows of positive PMI of each word's neighbours (one block per offset) over `columns`."""
    out = []
    for block in blocks:
        counts = block[:, columns].toarray()
        p = counts / np.maximum(counts.sum(1, keepdims=True), 1e-12)
        out.append(np.where(p > 0, np.maximum(np.log(np.maximum(p, 1e-12) / base), 0.0), 0.0))
    x = np.hstack(out)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def oracle_context_match(
    sent_f: np.ndarray, sent_t: np.ndarray, truth: np.ndarray, v_f: int, v_t: int, n_columns: int = 300
) -> np.ndarray:
    """Each feature word -> the text word with the most similar neighbours, the feature side's
    neighbours translated by the true dictionary `truth`."""
    freq_t = np.bincount(sent_t.ravel(), minlength=v_t).astype(np.float64)
    columns = np.argsort(-freq_t)[:n_columns]
    base = freq_t[columns] / freq_t.sum()
    to_text = sp.csr_matrix((np.ones(v_f), (np.arange(v_f), truth)), shape=(v_f, v_t))

    def cooc(s: np.ndarray, v: int, o: int) -> sp.csr_matrix:
        return cooccurrence(s, v, o) if o > 0 else cooccurrence(s, v, -o).T.tocsr()

    offsets = (-2, -1, 1, 2)
    pf = neighbour_profiles([cooc(sent_f, v_f, o) @ to_text for o in offsets], columns, base)
    pt = neighbour_profiles([cooc(sent_t, v_t, o) for o in offsets], columns, base)
    # CSLS over 5 neighbours: a text word near everything is no one's translation
    return csls(torch.from_numpy(pf), torch.from_numpy(pt), k=5).argmax(1).numpy()


@torch.no_grad()
def greedy(checkpoint: Path, sentences: np.ndarray, batch: int = 256) -> np.ndarray:
    model = load_translator(checkpoint)
    return np.concatenate(
        [
            model.word_log_probs(torch.as_tensor(sentences[s : s + batch], dtype=torch.long), FEATURES, TEXT)
            .argmax(-1)
            .numpy()
            for s in range(0, len(sentences), batch)
        ]
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", required=True)
    ap.add_argument("--db", help="labels database of the run: embedding AUROC per accuracy bucket")
    ap.add_argument("--windows", type=int, default=3000, help="train windows each translator translates")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    out: dict = {}
    with RunStore.open(args.run) as run:
        languages = load_languages(run, translator_dir(run.dir))
        run_id = run.dir.name
    pairs = languages.aligned()
    v_f, v_t = languages.feature_vocab_size, languages.text_vocab_size
    f, t = pairs.a.astype(np.int64), pairs.b.astype(np.int64)
    joint = sp.csr_matrix((np.ones(f.size), (f.ravel(), t.ravel())), shape=(v_f, v_t)).toarray()
    truth = joint.argmax(1)
    out["ceiling"] = scores(joint, truth)
    last = translator_dir(run.dir) / "last.safetensors"
    if last.exists() and "dict_ids_a" in (tensors := load_file(str(last))):
        out["anchor"] = scores(joint, tensors["dict_ids_a"][:, 0].numpy())
    sent_f, sent_t = (c.sentences.astype(np.int64) for c in languages.unsupervised())
    out["oracle_context_match"] = scores(joint, oracle_context_match(sent_f, sent_t, truth, v_f, v_t))

    rows = np.random.default_rng(0).choice(len(f), min(args.windows, len(f)), replace=False)
    own_accuracy: dict[int, float] = {}
    for mode in ("unsupervised", "aligned"):
        checkpoint = translator_dir(run.dir, mode) / "best.safetensors"
        if not checkpoint.exists():
            continue
        hit = greedy(checkpoint, f[rows]) == t[rows]
        out[f"translator_{mode}"] = {"token_accuracy": float(hit.mean())}
        if mode == "unsupervised":
            words = f[rows].ravel()
            n = np.bincount(words, minlength=v_f)
            right = np.bincount(words, weights=hit.ravel(), minlength=v_f)
            own_accuracy = {int(languages.feature_ids[w]): right[w] / n[w] for w in np.flatnonzero(n >= 10) if w > 0}

    if args.db and own_accuracy:
        import duckdb

        with duckdb.connect(args.db, read_only=True) as con:
            emb = con.execute(
                "SELECT feature, method, value FROM scores WHERE run_id = ? AND scorer = 'embedding' "
                "AND method IN ('translator', 'top-tokens')",
                [run_id],
            ).fetchall()
        by = {(feat, m): v for feat, m, v in emb}
        buckets: dict[str, list[float]] = {}
        for feature, acc in own_accuracy.items():
            if (feature, "translator") in by and (feature, "top-tokens") in by:
                name = "< 0.2" if acc < 0.2 else "0.2 - 0.6" if acc < 0.6 else ">= 0.6"
                buckets.setdefault(name, []).append(by[feature, "translator"] - by[feature, "top-tokens"])
        out["embedding_minus_top_tokens_by_accuracy"] = {
            k: {"features": len(v), "mean": float(np.mean(v))} for k, v in sorted(buckets.items())
        }

    if args.json:
        print(json.dumps(out, indent=1))
        return
    for name, value in out.items():
        if name == "embedding_minus_top_tokens_by_accuracy":
            print("translator minus top-tokens, embedding AUROC, by the translator's accuracy on the feature's tokens:")
            for bucket, b in value.items():
                print(f"  accuracy {bucket}: {b['mean']:+.3f} over {b['features']} features")
        else:
            print(f"{name}: " + ", ".join(f"{k} {v:.3f}" for k, v in value.items()))


if __name__ == "__main__":
    try:
        main()
    except UserError as e:
        raise SystemExit(f"error: {e}") from None
