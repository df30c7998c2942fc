"""Training the translator: unsupervised (monolingual corpora only) or aligned (true pairs).

    train_translator(cfg, corpus_a, corpus_b, out_dir, pairs=None) -> path of the selected checkpoint

out_dir holds last.safetensors (everything needed to resume exactly; its metadata in the header,
copied to last.json for reading), best.* (the model selected without pairs, by round-trip
reconstruction on held-out monolingual sentences) and log.jsonl (one line of losses per step,
one line per evaluation).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from sae_translate.devices import resolve_device
from sae_translate.distributed import Ranks
from sae_translate.errors import UserError
from sae_translate.progress import progress as tqdm  # plain lines when not on a terminal
from sae_translate.store.atomic import atomic_write, atomic_write_text
from sae_translate.translator.anchor import AnchorConfig, WordDictionary, induce_dictionary
from sae_translate.translator.config import LOSSES as LOSSES  # re-exported
from sae_translate.translator.config import TranslatorConfig
from sae_translate.translator.hmm_anchor import HMMAnchor, HMMFitConfig, fit_hmm_anchor
from sae_translate.translator.losses import (
    Discriminator,
    Encoded,
    adversarial_loss,
    back_translation_loss,
    denoising_loss,
    dictionary_loss,
    discriminator_loss,
    pseudo_pair_loss,
    supervised_loss,
)
from sae_translate.translator.model import ModelConfig, Translator
from sae_translate.translator.softmax import SampledSoftmax


@dataclass
class Corpus:
    """Sentences of one language: language-local word ids [n, length] in [0, vocab_size)."""

    sentences: np.ndarray
    vocab_size: int

    def __post_init__(self) -> None:
        if self.sentences.ndim != 2 or len(self.sentences) == 0:
            raise UserError("a corpus needs a non-empty [n_sentences, length] array of word ids")
        if self.sentences.min() < 0 or self.sentences.max() >= self.vocab_size:
            raise UserError(f"word ids must lie in [0, {self.vocab_size})")


@dataclass
class ParallelCorpus:
    """True pairs: row i of `a` and row i of `b` say the same thing. Only aligned mode reads it."""

    a: np.ndarray
    b: np.ndarray


def _flatten_optimizer(prefix: str, opt: torch.optim.Optimizer) -> tuple[dict[str, Tensor], list]:
    state = opt.state_dict()
    tensors = {
        f"{prefix}.{idx}.{key}": (v if torch.is_tensor(v) else torch.tensor(v)).contiguous()
        for idx, entry in state["state"].items()
        for key, v in entry.items()
    }
    return tensors, state["param_groups"]


def _unflatten_optimizer(prefix: str, tensors: dict[str, Tensor], groups: list) -> dict:
    state: dict[int, dict[str, Tensor]] = {}
    for name, value in tensors.items():
        if name.startswith(prefix + "."):
            _, idx, key = name.split(".", 2)
            state.setdefault(int(idx), {})[key] = value
    return {"state": state, "param_groups": groups}


class Objective(nn.Module):
    """Every loss of one model update in a single forward pass, so that DistributedDataParallel
    can wrap it (it all-reduces the gradients of one forward/backward pair)."""

    def __init__(self, model: Translator, cfg: TranslatorConfig, sampled: SampledSoftmax | None = None):
        super().__init__()
        self.model, self.cfg, self.sampled = model, cfg, sampled

    def forward(
        self,
        batch: tuple[Tensor, ...],
        step: int,
        disc: Discriminator,
        dictionary: WordDictionary | None,
        generator: torch.Generator,
    ) -> tuple[Tensor, dict[str, float], list[Encoded]]:
        cfg, model, sampled = self.cfg, self.model, self.sampled
        logs: dict[str, float] = {}
        encoded: list[Encoded] = []
        if cfg.mode == "aligned":
            loss, enc = supervised_loss(model, batch[0], batch[1], sampled, generator)
            logs["supervised"] = loss.item()
            return loss, logs, [enc]
        tokens, lang = batch[0], batch[1]
        anchored = batch[2] if len(batch) > 2 else None  # a sentence anchor's translations of `tokens`
        loss = tokens.new_zeros((), dtype=torch.float32)
        if cfg.denoise > 0:
            dae, enc = denoising_loss(model, tokens, lang, cfg.noise(), generator, sampled)
            loss = loss + cfg.denoise * dae
            logs["denoise"] = dae.item()
            encoded.append(enc)
        learn_dictionary = cfg.dictionary_until < 0 or step < cfg.dictionary_until
        if cfg.dictionary_weight > 0 and learn_dictionary and (dictionary is not None or anchored is not None):
            if anchored is not None:
                learned, enc = pseudo_pair_loss(model, tokens, lang, anchored, generator, sampled)
            else:
                assert dictionary is not None
                learned, enc = dictionary_loss(model, tokens, lang, dictionary, generator, sampled)
            loss = loss + cfg.dictionary_weight * learned
            logs["dictionary"] = learned.item()
            encoded.append(enc)
        if cfg.back_translation > 0 and step >= cfg.bt_start:
            # early on, back-translation sources come from the anchor (dictionary or sentence anchor)
            early = step < cfg.dictionary_steps
            use_dict = dictionary is not None and early
            bt, enc = back_translation_loss(
                model,
                tokens,
                lang,
                cfg.bt_sample,
                dictionary if use_dict else None,
                generator,
                sampled,
                anchored if early else None,
            )
            loss = loss + cfg.back_translation * bt
            logs["back_translation"] = bt.item()
            encoded.append(enc)
        if cfg.adversarial > 0 and encoded:
            adv = torch.stack([adversarial_loss(disc, e) for e in encoded]).mean()
            loss = loss + cfg.adversarial * adv
            logs["adversarial"] = adv.item()
        if cfg.kl > 0 and encoded:
            kl = torch.stack([torch.as_tensor(e.kl) for e in encoded]).mean()
            loss = loss + cfg.kl * kl
            logs["kl"] = kl.item()
        if not logs:  # a step with no loss term has nothing to learn from (and no gradient)
            raise UserError(
                f"no loss is active at step {step}: denoise {cfg.denoise}, anchor {cfg.anchor}, "
                f"back-translation from step {cfg.bt_start}; enable one of them for every step"
            )
        return loss, logs, encoded


class Trainer:
    """Owns the model, the discriminator, their optimisers and the data; one call per step."""

    def __init__(
        self,
        cfg: TranslatorConfig,
        corpus_a: Corpus,
        corpus_b: Corpus,
        out_dir: str | Path,
        pairs: ParallelCorpus | None = None,
    ):
        cfg.validate()
        self.cfg = cfg
        self.ranks = Ranks.from_env()  # under torchrun: one process per GPU (or CPU process, gloo)
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.device = torch.device(resolve_device(self.ranks.device(cfg.device)))
        self.amp = cfg.amp and self.device.type == "cuda"
        # batch_size is global: each rank draws its share, DDP averages the gradients
        self.local_batch = max(1, cfg.batch_size // self.ranks.world_size)
        torch.manual_seed(cfg.seed)  # the same initial weights on every rank
        self.gen = torch.Generator()  # batch sampling (CPU)
        self.noise_gen = torch.Generator(device=self.device)  # noise, sampled translations
        self._seed_streams(0)
        self.vocab = (corpus_a.vocab_size, corpus_b.vocab_size)

        rng = np.random.default_rng(cfg.seed)
        n_sel = cfg.select_sentences
        if cfg.mode == "unsupervised":
            # each corpus is shuffled on its own: row i of one says nothing about row i of the other
            a = corpus_a.sentences[rng.permutation(len(corpus_a.sentences))]
            b = corpus_b.sentences[rng.permutation(len(corpus_b.sentences))]
        else:
            if pairs is None:
                raise UserError("aligned mode needs the true pairs")
            if pairs.a.shape[0] != pairs.b.shape[0] or pairs.a.shape[1] != pairs.b.shape[1]:
                raise UserError("aligned pairs must have the same number of sentences and length")
            order = rng.permutation(len(pairs.a))
            a, b = pairs.a[order], pairs.b[order]
        n_sel_a, n_sel_b = min(n_sel, len(a) // 5), min(n_sel, len(b) // 5)
        self.train_a = torch.as_tensor(a[n_sel_a:], dtype=torch.long)
        self.train_b = torch.as_tensor(b[n_sel_b:], dtype=torch.long)
        self.select_a = torch.as_tensor(a[:n_sel_a], dtype=torch.long)
        self.select_b = torch.as_tensor(b[:n_sel_b], dtype=torch.long)
        if self.train_a.shape[1] != self.train_b.shape[1]:
            raise UserError("both languages need sentences of the same length (one symbol per position)")
        length = self.train_a.shape[1]

        self.model_cfg = ModelConfig(
            vocab_a=self.vocab[0],
            vocab_b=self.vocab[1],
            max_len=length,
            dim=cfg.dim,
            depth=cfg.depth,
            decoder_depth=cfg.decoder_depth,
            heads=cfg.heads,
            dropout=cfg.dropout,
            variational=cfg.variational,
            prior_correction=cfg.prior_correction,
        )
        self.model = Translator(self.model_cfg).to(self.device)
        self.model.set_prior(
            torch.bincount(self.train_a.flatten(), minlength=self.vocab[0]),
            torch.bincount(self.train_b.flatten(), minlength=self.vocab[1]),
        )
        self.disc = Discriminator(cfg.dim, cfg.disc_hidden).to(self.device)
        self.sampled = SampledSoftmax(self.model, cfg.sampled_softmax, cfg.negatives)
        self.objective: nn.Module = Objective(self.model, cfg, self.sampled if self.sampled.active else None)
        self.disc_step: nn.Module = self.disc
        if self.ranks.distributed:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.objective = DistributedDataParallel(self.objective, device_ids=ids)
            self.disc_step = DistributedDataParallel(self.disc, device_ids=ids)
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=cfg.lr, weight_decay=0.0)
        self.disc_opt = torch.optim.AdamW(self.disc.parameters(), lr=cfg.disc_lr, weight_decay=0.0)
        self.step = 0
        self.best_score, self.best_step = float("-inf"), -1  # the statistics score is negative
        self.dictionary: WordDictionary | None = None
        self.hmm_anchor: HMMAnchor | None = None
        self.anchored: tuple[Tensor, Tensor] | None = None  # the HMM anchor's translations of train_a, train_b
        self.anchor_report: dict = {}

        if (self.out_dir / "last.safetensors").exists():
            self._load_last()
        elif cfg.mode == "unsupervised" and cfg.anchor and cfg.anchor_model == "hmm":
            self.hmm_anchor = fit_hmm_anchor(
                self.train_a.numpy(),
                self.vocab[0],
                self.train_b.numpy(),
                self.vocab[1],
                HMMFitConfig(states=cfg.anchor_states, seed=cfg.seed),
            )
            self.anchor_report = self.hmm_anchor.report()
        elif cfg.mode == "unsupervised" and cfg.anchor:
            self.dictionary, report = induce_dictionary(
                self.train_a.numpy(),
                self.vocab[0],
                self.train_b.numpy(),
                self.vocab[1],
                AnchorConfig(candidates=cfg.anchor_starts),
            )
            self.anchor_report = asdict(report)

        # the language each translation is compared with by the statistics score: real sentences, or
        # with the HMM anchor (whose translations are the states' most probable words, not samples)
        # the real sentences as the anchor writes them; models learning it are decoded by argmax
        self.reference = (self.train_a, self.train_b)
        if self.hmm_anchor is not None:
            anchor, sentences = self.hmm_anchor, (self.train_a.numpy(), self.train_b.numpy())
            translated = [torch.as_tensor(anchor.translate(s, i), dtype=torch.long) for i, s in enumerate(sentences)]
            cleaned = [torch.as_tensor(anchor.clean(s, i), dtype=torch.long) for i, s in enumerate(sentences)]
            self.anchored = (translated[0], translated[1])
            self.reference = (cleaned[0], cleaned[1])

    def _seed_streams(self, step: int) -> None:
        """Seed this rank's sampling streams: different per rank, reproducible per (rank, step)."""
        seed = self.cfg.seed + 1000 * self.ranks.rank + step
        self.gen.manual_seed(seed)
        self.noise_gen.manual_seed(seed + 1)

    # data
    def _window(self, n: int) -> Tensor:
        """Column indices [n, crop] of one random window per row (all columns when not cropping)."""
        length = self.train_a.shape[1]
        if not 0 < self.cfg.crop < length:
            return torch.arange(length).expand(n, length)
        start = torch.randint(length - self.cfg.crop + 1, (n, 1), generator=self.gen)
        return start + torch.arange(self.cfg.crop)

    def _batch(self, sentences: Tensor, lang: int, anchored: Tensor | None = None) -> tuple[Tensor, ...]:
        """(joint ids, languages), and the anchor's translations of the same windows when given."""
        rows = torch.randint(len(sentences), (self.local_batch,), generator=self.gen)
        cols = self._window(len(rows))
        words = sentences[rows].gather(1, cols).to(self.device)
        langs = torch.full((len(rows),), lang, dtype=torch.long, device=self.device)
        if anchored is None:
            return self.model.to_joint(words, langs), langs
        translated = anchored[rows].gather(1, cols).to(self.device)
        return self.model.to_joint(words, langs), langs, self.model.to_joint(translated, 1 - langs)

    def _paired_batch(self) -> tuple[Tensor, Tensor]:
        rows = torch.randint(len(self.train_a), (self.local_batch,), generator=self.gen)
        cols = self._window(len(rows))  # the same window in both languages: positions correspond
        zeros, ones = torch.zeros(len(rows), dtype=torch.long), torch.ones(len(rows), dtype=torch.long)
        a = self.model.to_joint(self.train_a[rows].gather(1, cols), zeros).to(self.device)
        b = self.model.to_joint(self.train_b[rows].gather(1, cols), ones).to(self.device)
        return a, b

    def lr_at(self, step: int) -> float:
        """Linear warmup, then cosine decay to a tenth."""
        if step < self.cfg.warmup:
            return self.cfg.lr * (step + 1) / self.cfg.warmup
        progress = min(1.0, (step - self.cfg.warmup) / max(1, self.cfg.steps - self.cfg.warmup))
        return self.cfg.lr * (0.1 + 0.45 * (1 + math.cos(math.pi * progress)))

    # one step
    def model_update(self) -> tuple[dict[str, float], list[Encoded]]:
        for group in self.opt.param_groups:
            group["lr"] = self.lr_at(self.step)
        self.model.train()
        batch: tuple[Tensor, ...]
        if self.cfg.mode == "aligned":
            batch = self._paired_batch()
        else:  # both languages, each with its sentence anchor's translations when there is one
            anchored = self.anchored if self.anchored is not None else (None, None)
            side_a, side_b = self._batch(self.train_a, 0, anchored[0]), self._batch(self.train_b, 1, anchored[1])
            batch = tuple(torch.cat([x, y]) for x, y in zip(side_a, side_b))
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
            loss, logs, encoded = self.objective(batch, self.step, self.disc, self.dictionary, self.noise_gen)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()  # under torchrun, DistributedDataParallel averages the gradients here
        if self.cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
        self.opt.step()
        logs["loss"] = loss.item()
        return logs, encoded

    def discriminator_update(self, encoded: list[Encoded]) -> float:
        self.disc_opt.zero_grad(set_to_none=True)  # drops gradients the adversarial term left here
        loss = discriminator_loss(self.disc_step, Encoded.cat(encoded))  # one forward: one all-reduce
        loss.backward()
        self.disc_opt.step()
        return loss.item()

    def train_step(self) -> dict[str, float]:
        logs, encoded = self.model_update()
        if self.cfg.mode == "unsupervised" and self.cfg.adversarial > 0 and encoded:
            logs["discriminator"] = self.discriminator_update(encoded)
        self.step += 1
        logs["step"] = self.step
        return logs

    # selection without pairs
    @torch.no_grad()
    def select_score(self) -> float:
        """Unsupervised: round-trip accuracy a -> b -> a and b -> a -> b on held-out sentences.
        Aligned: mean log-likelihood of the held-out pairs' targets (both directions). Not the
        accuracy of the argmax against them: a target is one sampled expression of its meaning, so
        the argmax that matches samples most often is not the most faithful translation."""
        self.model.eval()
        a, b = self.select_a.to(self.device), self.select_b.to(self.device)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
            if self.cfg.mode == "aligned":
                lp_ab = self.model.word_log_probs(a, 0, 1).gather(-1, b[..., None]).mean()
                lp_ba = self.model.word_log_probs(b, 1, 0).gather(-1, a[..., None]).mean()
                return float((lp_ab + lp_ba) / 2)
            else:
                acc_ab = (self.model.translate_words(self.model.translate_words(a, 0, 1), 1, 0) == a).float().mean()
                acc_ba = (self.model.translate_words(self.model.translate_words(b, 1, 0), 0, 1) == b).float().mean()
        return float((acc_ab + acc_ba) / 2)

    def selection_scores(self) -> dict[str, float]:
        """Every selection score of the current model: accuracy on held-out pairs (aligned), or both
        unsupervised scores, so the log shows the one not selecting by as well."""
        if self.cfg.mode == "aligned":
            return {"pairs": self.select_score()}
        return {"round_trip": self.select_score(), "statistics": self.statistics_score()}

    @torch.no_grad()
    def statistics_score(self) -> float:
        """Unsupervised, and unlike the round trip able to tell a wrong mapping from a right one:
        sampled translations of held-out sentences should reproduce the other language's bigram
        statistics (a faithful P(b | a) sampled on real a yields text distributed like real b).
        Minus the mean KL divergence of real bigrams from translated ones, both directions; 0 is best.
        With the HMM anchor: argmax translations against real sentences as the anchor writes them."""
        self.model.eval()
        gen = torch.Generator(device=self.device).manual_seed(self.cfg.seed)
        sample = self.hmm_anchor is None
        score = 0.0
        for src, tgt, held_out, target in (
            (0, 1, self.select_a, self.reference[1]),
            (1, 0, self.select_b, self.reference[0]),
        ):
            words = held_out.to(self.device)
            lang = torch.full((len(words),), src, dtype=torch.long, device=self.device)
            joint = self.model.translate(self.model.to_joint(words, lang), lang, 1 - lang, sample=sample, generator=gen)
            translated = self.model.to_words(joint, 1 - lang).cpu()
            score -= _bigram_kl(target, translated, self.vocab[tgt])
        return score / 2

    # checkpoints
    def _meta(self) -> dict:
        return {
            "step": self.step,
            "config": asdict(self.cfg),
            "model": self.model_cfg.to_dict(),
            "best_score": self.best_score,
            "best_step": self.best_step,
            "anchor": self.anchor_report,
        }

    def save_best(self) -> Path:
        return save_checkpoint(self.out_dir / "best.safetensors", self.model.state_dict(), self._meta())

    def save_last(self) -> Path:
        tensors = {f"model.{k}": v for k, v in self.model.state_dict().items()}
        tensors |= {f"disc.{k}": v for k, v in self.disc.state_dict().items()}
        opt_tensors, opt_groups = _flatten_optimizer("opt", self.opt)
        disc_tensors, disc_groups = _flatten_optimizer("disc_opt", self.disc_opt)
        tensors |= opt_tensors | disc_tensors
        tensors["rng.generator"] = self.gen.get_state()
        tensors["rng.noise"] = self.noise_gen.get_state()
        tensors["rng.torch"] = torch.get_rng_state()
        if self.dictionary is not None:
            tensors |= self.dictionary.to_tensors()
        if self.hmm_anchor is not None:
            tensors |= self.hmm_anchor.to_tensors()
        meta = self._meta() | {"opt_groups": opt_groups, "disc_opt_groups": disc_groups}
        return save_checkpoint(self.out_dir / "last.safetensors", tensors, meta)

    def _load_last(self) -> None:
        path = self.out_dir / "last.safetensors"
        meta = checkpoint_meta(path)
        if ModelConfig(**meta["model"]).to_dict() != self.model_cfg.to_dict():
            raise UserError(
                f"{path} was trained with a different model or vocabulary; "
                "use a new output directory or delete the old checkpoint"
            )
        tensors = _read_checkpoint(path, lambda p: load_file(str(p)))
        sub = lambda prefix: {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}  # noqa: E731
        self.model.load_weights(sub("model."))
        self.disc.load_state_dict(sub("disc."))
        self.opt.load_state_dict(_unflatten_optimizer("opt", tensors, meta["opt_groups"]))
        self.disc_opt.load_state_dict(_unflatten_optimizer("disc_opt", tensors, meta["disc_opt_groups"]))
        self.gen.set_state(tensors["rng.generator"])
        self.noise_gen.set_state(tensors["rng.noise"])
        torch.set_rng_state(tensors["rng.torch"])
        if not self.ranks.main:  # the checkpoint holds rank 0's streams; the others start fresh ones
            self._seed_streams(meta["step"])
        if "dict_ids_a" in tensors:
            self.dictionary = WordDictionary.from_tensors(tensors)
        if "hmm_match" in tensors:
            report = meta.get("anchor", {})
            self.hmm_anchor = HMMAnchor.from_tensors(
                tensors, report.get("match_discrepancy", math.nan), report.get("match_runner_up", math.nan)
            )
        self.step = meta["step"]
        self.best_score, self.best_step = meta["best_score"], meta["best_step"]
        self.anchor_report = meta.get("anchor", {})
        if self.ranks.main:
            _truncate_log(self.out_dir / "log.jsonl", self.step)

    def plan(self, seconds_per_step: float) -> str:
        """One line: the settings that set a step's cost, and the time the remaining steps take."""
        cfg = self.cfg
        window = (
            f"crop {cfg.crop}"
            if 0 < cfg.crop < self.train_a.shape[1]
            else f"whole {self.train_a.shape[1]}-word windows"
        )
        sampled = [f"{v:,}" for lang, v in enumerate(self.vocab) if self.sampled.sampled(lang)]
        softmax = f"; sampled softmax over {cfg.negatives:,} of the {' and '.join(sampled)} words" if sampled else ""
        left = cfg.steps - self.step
        return (
            f"training on {self.device}: dim {cfg.dim}, {cfg.depth}+{cfg.decoder_depth} layers, "
            f"batch {cfg.batch_size}, {window}; vocabularies {self.vocab[0]:,} and {self.vocab[1]:,} words{softmax}; "
            f"{seconds_per_step:.3g} s/step: {left:,} steps expected to take {_duration(left * seconds_per_step)} "
            f"(+ an evaluation every {cfg.eval_every:,} steps)"
        )

    # the loop
    def fit(self, echo: Callable[[str], None] | None = None) -> Path:
        """Train to cfg.steps (from the last checkpoint, if any); rank 0 logs, selects and saves.
        With `echo`, rank 0 says the settings and the expected time once a few steps are timed."""
        cfg, main = self.cfg, self.ranks.main
        echo = echo if main else None
        first, started = self.step, 0.0
        # a fresh start (nothing resumed) drops the lines of a run interrupted before its first checkpoint
        log = (self.out_dir / "log.jsonl").open("a" if self.step else "w") if main else None
        bar = tqdm(
            total=cfg.steps, initial=self.step, disable=not (cfg.progress and main), desc=f"translator ({cfg.mode})"
        )
        while self.step < cfg.steps:
            if self.step == first + 1:  # the first step pays one-off costs: time the next ones
                started = time.perf_counter()
            logs = self.train_step()
            if echo is not None and self.step == first + 1 + ESTIMATE_STEPS:
                echo(self.plan((time.perf_counter() - started) / ESTIMATE_STEPS))
            bar.update(1)
            if not main:
                continue
            assert log is not None
            log.write(json.dumps(logs) + "\n")
            if self.step % 10 == 0:
                bar.set_postfix({k: f"{v:.3f}" for k, v in logs.items() if k != "step"})
            if self.step % cfg.eval_every == 0 or self.step == cfg.steps:
                scores = self.selection_scores()
                score = scores["pairs"] if cfg.mode == "aligned" else scores[cfg.selection]
                log.write(json.dumps({"step": self.step, "select": score} | scores) + "\n")
                if score > self.best_score:
                    self.best_score, self.best_step = score, self.step
                    self.save_best()
            if self.step % cfg.checkpoint_every == 0 or self.step == cfg.steps:
                log.flush()
                self.save_last()
        bar.close()
        if main:
            assert log is not None
            log.close()
            if not (self.out_dir / "best.safetensors").exists():
                self.save_best()
        self.ranks.barrier()  # every rank returns once the checkpoint is on disk
        return self.out_dir / "best.safetensors"


ESTIMATE_STEPS = 3  # timed steps the expected training time is extrapolated from


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


META_KEY = "sae_translate"  # safetensors header entry holding a checkpoint's metadata (JSON)


def save_checkpoint(path: Path, tensors: dict[str, Tensor], meta: dict) -> Path:
    """Write tensors and their metadata as one file (the metadata in the safetensors header),
    renamed into place, so a kill at any moment leaves the old checkpoint or the new one, whole.
    A readable copy of the metadata goes to path.json afterwards; loading never needs it."""
    cpu = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    atomic_write(path, lambda tmp: save_file(cpu, str(tmp), metadata={META_KEY: json.dumps(meta)}))
    atomic_write_text(path.with_suffix(".json"), json.dumps(meta, indent=1))
    return path


def _read_checkpoint(path: Path, read):
    """read(path), a damaged (cut or overwritten) checkpoint file a one-line error."""
    try:
        return read(path)
    except (SafetensorError, ValueError) as e:
        raise UserError(
            f"{path} is damaged ({str(e).splitlines()[0]}); delete {path.parent} and retrain with `sae-translate train`"
        ) from e


def _header(path: Path) -> dict:
    with safe_open(str(path), framework="pt") as f:
        return f.metadata() or {}


def checkpoint_meta(path: str | Path) -> dict:
    """A checkpoint's metadata: from its header, or from the .json beside it (older checkpoints)."""
    path = Path(path)
    header = _read_checkpoint(path, _header)
    if META_KEY in header:
        return _read_checkpoint(path, lambda _: json.loads(header[META_KEY]))
    side = path.with_suffix(".json")
    if not side.exists():
        raise UserError(f"{path} has no metadata and no {side.name}; retrain it with `sae-translate train`")
    return json.loads(side.read_text())


def _bigram_kl(real: Tensor, translated: Tensor, vocab: int, smoothing: float = 0.5) -> float:
    """KL(p || q) of the smoothed joint distributions of adjacent words (every one of the vocab^2
    bigrams gets `smoothing` added), computed on the bigrams that occur: all the others share one
    value of p and of q, so they add up in closed form (no vocab x vocab matrix)."""
    keys = [(s[:, :-1].reshape(-1) * vocab + s[:, 1:].reshape(-1)).long() for s in (real, translated)]
    seen, inverse = torch.cat(keys).unique(return_inverse=True)
    count_p = torch.bincount(inverse[: len(keys[0])], minlength=len(seen)).double()
    count_q = torch.bincount(inverse[len(keys[0]) :], minlength=len(seen)).double()
    cells = float(vocab) ** 2
    total_p, total_q = len(keys[0]) + smoothing * cells, len(keys[1]) + smoothing * cells
    p, q = (count_p + smoothing) / total_p, (count_q + smoothing) / total_q
    unseen = (cells - len(seen)) * (smoothing / total_p) * math.log(total_q / total_p)
    return float((p * (p / q).log()).sum()) + unseen


def _truncate_log(path: Path, step: int) -> None:
    """Drop log lines written after the checkpoint we resume from."""
    if not path.exists():
        return
    lines = [line for line in path.read_text().splitlines() if line and json.loads(line)["step"] <= step]
    path.write_text("".join(line + "\n" for line in lines))


def train_translator(
    cfg: TranslatorConfig,
    corpus_a: Corpus,
    corpus_b: Corpus,
    out_dir: str | Path,
    pairs: ParallelCorpus | None = None,
    echo: Callable[[str], None] | None = None,
) -> Path:
    """Train (or resume) and return the checkpoint chosen by the selection score; `echo` gets the
    settings and the expected time once the first steps are timed."""
    return Trainer(cfg, corpus_a, corpus_b, out_dir, pairs).fit(echo)


def load_translator(path: str | Path, device: str = "cpu") -> Translator:
    """A trained model from best.safetensors / last.safetensors."""
    path = Path(path)
    if path.is_dir():
        path = path / "best.safetensors"
    if not path.exists():
        raise UserError(f"no translator checkpoint at {path}; train one with `sae-translate train`")
    meta = checkpoint_meta(path)
    model = Translator(ModelConfig(**meta["model"]))
    tensors = _read_checkpoint(path, lambda p: load_file(str(p)))
    if any(k.startswith("model.") for k in tensors):
        tensors = {k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")}
    model.load_weights(tensors)
    return model.to(torch.device(resolve_device(device))).eval()
