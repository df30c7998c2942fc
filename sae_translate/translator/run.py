"""The translator on a run: train on its two languages, decode features into text, encode latents.

A run's translators live in RUN/translator/ (unsupervised) and RUN/translator-aligned/ (aligned),
each with languages.json recording how the languages were built, so labelling rebuilds the same
vocabularies.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch

from sae_translate.devices import resolve_device
from sae_translate.distributed import Ranks
from sae_translate.errors import UserError
from sae_translate.store.atomic import atomic_write_text
from sae_translate.store.h5 import RunStore
from sae_translate.translator.config import with_device_defaults
from sae_translate.translator.languages import (
    LanguageConfig,
    Languages,
    build_languages,
)
from sae_translate.translator.train import (
    TranslatorConfig,
    checkpoint_meta,
    load_translator,
    train_translator,
)

FEATURES, TEXT = 0, 1  # language ids inside the translator


def translator_dir(run_dir: str | Path, mode: str = "unsupervised") -> Path:
    return Path(run_dir) / ("translator" if mode == "unsupervised" else f"translator-{mode}")


def train_on_run(
    run: str | Path,
    cfg: TranslatorConfig,
    lang_cfg: LanguageConfig | None = None,
    out: str | Path | None = None,
    unset: Collection[str] = (),
    echo: Callable[[str], None] | None = None,
) -> Path:
    """Build the run's languages and train; returns the selected checkpoint. The size options in
    `unset` (those the user did not give) take the defaults of the device training runs on; `echo`
    gets the settings and the expected time once the first steps are timed."""
    lang_cfg = lang_cfg or LanguageConfig()
    cfg.validate()  # before the languages are built and written down: a bad setting leaves nothing
    with RunStore.open(run) as store:
        languages = build_languages(store, lang_cfg)
        out_dir = Path(out) if out else translator_dir(store.dir, cfg.mode)
    last = out_dir / "last.safetensors"
    if unset and last.exists():  # resuming: the sizes training started with, whatever the device now
        started = checkpoint_meta(last)["config"]
        cfg = replace(cfg, **{k: started[k] for k in unset if k in started})
    else:
        device = torch.device(resolve_device(Ranks.from_env().device(cfg.device)))
        cfg = with_device_defaults(cfg, device.type, unset)
    meta_path = out_dir / "languages.json"
    if last.exists() and meta_path.exists():  # resuming: only on the languages training started on
        started_on = _read_languages_json(meta_path)
        if not _same_words(started_on, languages):
            raise UserError(
                f"{out_dir} holds a translator trained on other languages (other language settings, or the "
                "run was re-extracted); pass another --out or delete it to start afresh"
            )
    out_dir.mkdir(parents=True, exist_ok=True)
    if Ranks.from_env().main:  # under torchrun every rank builds the same languages; one writes them down
        meta = {
            "language": asdict(lang_cfg),
            "feature_ids": languages.feature_ids.tolist(),
            "token_ids": languages.token_ids.tolist(),
        }
        atomic_write_text(meta_path, json.dumps(meta))
    features, text = languages.unsupervised()
    pairs = languages.aligned() if cfg.mode == "aligned" else None
    return train_translator(cfg, features, text, out_dir, pairs, echo)


def load_languages(run: RunStore, checkpoint_dir: Path) -> Languages:
    """The languages a translator was trained on, rebuilt from the run and checked against it."""
    meta_path = checkpoint_dir / "languages.json"
    if not meta_path.exists():
        raise UserError(f"{meta_path} is missing; retrain with `sae-translate train --run {run.dir}`")
    meta = _read_languages_json(meta_path)
    languages = build_languages(run, LanguageConfig(**meta["language"]))
    if not _same_words(meta, languages):
        raise UserError(f"the run changed since {checkpoint_dir} was trained; retrain the translator")
    best = checkpoint_dir / "best.safetensors"
    if best.exists():  # languages.json and the weights must describe the same vocabularies
        model = checkpoint_meta(best)["model"]
        if (model["vocab_a"], model["vocab_b"]) != (languages.feature_vocab_size, languages.text_vocab_size):
            raise UserError(
                f"{meta_path} does not match the translator in {checkpoint_dir}; "
                f"delete {checkpoint_dir} and retrain it with `sae-translate train --run {run.dir}`"
            )
    return languages


def _read_languages_json(path: Path) -> dict:
    try:
        meta = json.loads(path.read_text())
        if not {"language", "feature_ids", "token_ids"} <= set(meta):
            raise ValueError("keys missing")
        return meta
    except (ValueError, TypeError) as e:
        raise UserError(f"{path} is damaged ({e}); delete {path.parent} and retrain with `sae-translate train`") from e


def _same_words(meta: dict, languages: Languages) -> bool:
    """Whether languages.json's contents name the same feature and text words as `languages`."""
    return languages.feature_ids.tolist() == meta["feature_ids"] and languages.token_ids.tolist() == meta["token_ids"]


def feature_sentences(
    languages: Languages, features: np.ndarray, top_positions: np.ndarray | None, contexts: int, alone: int | None
) -> tuple[list[int], list[np.ndarray], list[int]]:
    """The sentences each feature is decoded in: (owner index, feature sentence, its position).

    With ``alone`` set, the feature alone at the centre of an otherwise empty (NONE) window of
    ``alone`` words; then up to ``contexts`` of its top train windows with the feature written at
    its position. A feature that is not a word of the feature language (too dense or too rare)
    is read from its windows as written.
    """
    ctx = languages.ctx
    owners: list[int] = []
    sentences: list[np.ndarray] = []
    where: list[int] = []
    for i, f in enumerate(features):
        word = languages.feature_word(int(f))
        if word is not None and alone:
            empty = np.zeros(alone, dtype=np.int64)  # word 0 is NONE
            empty[alone // 2] = word
            owners.append(i)
            sentences.append(empty)
            where.append(alone // 2)
        if top_positions is None or contexts <= 0:
            continue
        pos = top_positions[int(f)]
        pos = pos[pos >= 0][:contexts]
        if len(pos) == 0:
            continue
        windows = languages.feature_sentences(pos // ctx).copy()
        if word is not None:
            windows[np.arange(len(pos)), pos % ctx] = word
        owners += [i] * len(pos)
        sentences += list(windows)
        where += (pos % ctx).tolist()
    return owners, sentences, where


@torch.no_grad()
def context_distributions(
    checkpoint: str | Path,
    languages: Languages,
    features: np.ndarray,
    top_positions: np.ndarray | None,
    offsets: tuple[int, ...],
    contexts: int = 16,
    top_k: int = 64,
    device: str = "auto",
    batch_features: int = 64,
    batch_sentences: int = 256,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """What text the translator reads at and around each feature's position.

    Each feature is decoded alone at the centre of an otherwise empty feature window (NONE at every
    other position: the denoising objective trains exactly this fill-in) and inside its top train
    windows (up to ``contexts``; the 16 evidence windows of the 32 an extract stores) with the
    feature written at its position. At every offset the text distributions of its sentences are
    averaged: more windows average out more of a wrong dictionary. Returns (ids, probs) [F,
    len(offsets), top_k] over text words, best first, and the mean distribution over all features
    at each offset [len(offsets), V_text], the translator's own base rate.
    """
    model = load_translator(checkpoint, "cpu").to(resolve_device(device))
    dev = next(model.parameters()).device
    n_off, v_text = len(offsets), languages.text_vocab_size
    reach = max(abs(d) for d in offsets)
    k = min(top_k, v_text)
    ids_out = np.zeros((len(features), n_off, k), dtype=np.int64)
    probs_out = np.zeros((len(features), n_off, k), dtype=np.float32)
    marginal = np.zeros((n_off, v_text))
    off = torch.as_tensor(offsets, device=dev)
    for lo in range(0, len(features), batch_features):
        batch = features[lo : lo + batch_features]
        owners, sentences, where = feature_sentences(languages, batch, top_positions, contexts, 2 * reach + 1)
        sums = torch.zeros((len(batch), n_off, v_text), dtype=torch.float64, device=dev)
        counts = torch.zeros((len(batch), n_off), dtype=torch.float64, device=dev)
        for length in sorted({len(s) for s in sentences}):
            idx = [j for j, s in enumerate(sentences) if len(s) == length]
            for c in range(0, len(idx), batch_sentences):
                chunk = idx[c : c + batch_sentences]
                words = torch.as_tensor(np.stack([sentences[j] for j in chunk]), dtype=torch.long, device=dev)
                at = torch.as_tensor([where[j] for j in chunk], device=dev)[:, None] + off[None, :]  # [B, O]
                ok = (at >= 0) & (at < length)
                probs = model.word_probs_at(words, FEATURES, TEXT, at.clamp(0, length - 1))  # [B, O, V]
                read = probs.double() * ok[..., None]
                who = torch.as_tensor([owners[j] for j in chunk], device=dev)
                sums.index_add_(0, who, read)
                counts.index_add_(0, who, ok.double())
        mean = sums / counts.clamp_min(1)[..., None]
        marginal += mean.sum(0).cpu().numpy()
        top_p, top_i = mean.topk(k, dim=-1)
        ids_out[lo : lo + len(batch)] = top_i.cpu().numpy()
        probs_out[lo : lo + len(batch)] = top_p.float().cpu().numpy()
    return ids_out, probs_out, marginal / max(len(features), 1)


@torch.no_grad()
def shared_latents(run_dir: str | Path, n_per_language: int = 400, seed: int = 0):
    """(vectors, language, text) of sentences of both languages pooled from the shared latent, or None
    when the run has no trained translator."""
    checkpoint = translator_dir(run_dir) / "best.safetensors"
    if not checkpoint.exists():
        return None
    model = load_translator(checkpoint, "cpu")
    with RunStore.open(run_dir) as store:
        languages = load_languages(store, checkpoint.parent)
    features, text = languages.unsupervised()
    rng = np.random.default_rng(seed)
    vectors, names, shown = [], [], []
    for lang, corpus, vocab, name in (
        (FEATURES, features, languages.feature_vocab, "feature"),
        (TEXT, text, languages.text_vocab, "text"),
    ):
        rows = corpus.sentences[
            rng.choice(len(corpus.sentences), min(n_per_language, len(corpus.sentences)), replace=False)
        ]
        words = torch.as_tensor(rows, dtype=torch.long)
        lang_ids = torch.full((len(rows),), lang, dtype=torch.long)
        latent, mask, _ = model.encode(model.to_joint(words, lang_ids), lang_ids)
        vectors.append(((latent * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)).numpy())
        names += [name] * len(rows)
        shown += [" ".join(vocab[w] for w in row)[:120] for row in rows]
    return np.concatenate(vectors), names, shown
