"""Build (or reuse) a toy world directory:

    <out>/world.json         manifest: digests, hook, paths, sizes, training stats
    <out>/world_config.json  the concept config the world was made from
    <out>/corpus/train.txt   one document per line, words separated by single spaces
    <out>/model/             GPT-NeoX checkpoint + word-level tokenizer (save_pretrained)
    <out>/sae/               sae-lens SAE on `hook` (SAE.load_from_disk), with eval.json

Everything is written into a temporary sibling directory that is renamed into place at the
end, so an interrupted build never leaves a half world behind.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sae_translate.errors import UserError
from sae_translate.extract.sae_training import replace_dir
from sae_translate.world.config import (
    WorldConfig,
    load_world_config,
    parse_world_config,
)
from sae_translate.world.corpus import generate_documents, tag_words

MANIFEST = "world.json"
CONFIG_COPY = "world_config.json"
FORMAT_VERSION = 1


@dataclass
class WorldBuildConfig:
    config: str | None = None  # concept config (TOML/JSON); None = the packaged default world
    out: Path = Path("stores/world")
    n_tokens: int = 400_000  # corpus size in tokens
    seed: int = 0
    # language model
    d_model: int = 64
    n_layers: int = 3
    n_heads: int = 4
    ctx: int = 64
    lm_steps: int = 700
    lm_batch_size: int = 32
    lm_lr: float = 3e-3
    # SAE, trained with sae-lens on the residual stream
    # The middle of the residual stream holds both the current word's concepts and context;
    # later layers mostly hold the next-word prediction.
    hook: str | None = None  # None = blocks.{n_layers // 2}.hook_resid_post
    sae_architecture: str = "topk"
    d_sae: int = 512
    sae_k: int = 4
    # Longer training splits features by the word that follows, which aligns them less with concepts.
    sae_training_tokens: int = 409_600
    sae_batch_size_tokens: int = 2048
    sae_lr: float = 1e-3
    device: str = "cpu"  # the world is tiny; a GPU would spend its time on transfers
    threads: int = 1  # torch CPU threads; small matrices gain little from more, and lose a lot when cores are busy
    force: bool = False  # rebuild even when a matching world exists
    progress: bool = True

    @property
    def hook_name(self) -> str:
        return self.hook or f"blocks.{self.n_layers // 2}.hook_resid_post"

    def identity(self, world_digest: str) -> dict[str, Any]:
        """What determines the built world (the config by content, not by path)."""
        skip = {"config", "out", "device", "threads", "force", "progress"}
        fields = {k: v for k, v in asdict(self).items() if k not in skip}
        return {"format": FORMAT_VERSION, "world": world_digest, "hook": self.hook_name, **fields}


@dataclass
class World:
    dir: Path
    config: WorldConfig
    manifest: dict[str, Any] = field(repr=False)

    @property
    def model_dir(self) -> Path:
        return self.dir / self.manifest["paths"]["model"]

    @property
    def sae_dir(self) -> Path:
        return self.dir / self.manifest["paths"]["sae"]

    @property
    def hook(self) -> str:
        return self.manifest["hook"]

    @property
    def corpus_files(self) -> list[Path]:
        return [self.dir / p for p in self.manifest["paths"]["corpus"]]

    def tag_words(self, words: Sequence[str]) -> list[frozenset[str]]:
        """Ground-truth concepts of each word of a token window (see corpus.tag_words)."""
        return tag_words(self.config, words)


def load_world(world_dir: str | Path) -> World:
    path = Path(world_dir)
    manifest_path = path / MANIFEST
    if not manifest_path.is_file():
        raise UserError(f"{path} is not a toy world (no {MANIFEST}); build one with `sae-translate demo`")
    try:
        manifest = json.loads(manifest_path.read_text())
        config = parse_world_config(json.loads((path / CONFIG_COPY).read_text()))
    except (OSError, json.JSONDecodeError, KeyError) as err:
        raise UserError(f"toy world {path} is damaged ({err}); delete it and build again") from err
    if manifest.get("format") != FORMAT_VERSION:
        raise UserError(f"toy world {path} has format {manifest.get('format')}, expected {FORMAT_VERSION}; rebuild it")
    return World(dir=path, config=config, manifest=manifest)


def build_world(cfg: WorldBuildConfig) -> World:
    """Build the world described by `cfg` into `cfg.out`, or return the one already there when
    its manifest matches."""
    world_cfg = load_world_config(cfg.config)
    identity = cfg.identity(world_cfg.digest())
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]
    out = Path(cfg.out)
    if not cfg.force and (out / MANIFEST).is_file():
        try:
            existing = load_world(out)
            if existing.manifest.get("build_digest") == digest:
                return existing
        except UserError:
            pass  # damaged or foreign: rebuild over it
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.build-", dir=out.parent))
    except OSError as err:
        raise UserError(
            f"cannot write the toy world under {out.parent}: {err.strerror}; pick a writable --out"
        ) from err
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)
    try:
        manifest = _build_into(tmp, cfg, world_cfg, identity, digest)
        # The SAE records the model it was trained on; point it at the final location.
        set_sae_model_name(tmp / "sae", str(out / "model"))
        replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        torch.set_num_threads(threads)
    world = load_world(out)
    _say(cfg, f"world ready in {out} ({manifest['timings']['total_s']:.0f}s)")
    return world


def _build_into(
    tmp: Path, cfg: WorldBuildConfig, world_cfg: WorldConfig, identity: dict[str, Any], digest: str
) -> dict[str, Any]:
    from sae_translate.world import lm

    start = time.perf_counter()
    documents = generate_documents(world_cfg, cfg.n_tokens, seed=cfg.seed)
    corpus_dir = tmp / "corpus"
    corpus_dir.mkdir()
    texts = [doc.text for doc in documents]
    (corpus_dir / "train.txt").write_text("\n".join(texts) + "\n", encoding="utf-8")
    (tmp / CONFIG_COPY).write_text(json.dumps(world_cfg.to_dict(), ensure_ascii=False, indent=1), encoding="utf-8")
    n_words = sum(len(doc.words) for doc in documents)
    corpus_s = time.perf_counter() - start
    _say(cfg, f"world corpus: {len(documents):,} documents, {n_words:,} words")

    extra = [w for concept in world_cfg.lexical for w in concept.words]
    tokenizer = lm.train_tokenizer(texts, extra_words=extra)
    trained = train_model_and_sae(tmp, corpus_dir / "train.txt", texts, tokenizer, cfg)
    timings = {"corpus_s": corpus_s, **trained["timings"], "total_s": time.perf_counter() - start}

    manifest = {
        "format": FORMAT_VERSION,
        "name": world_cfg.name,
        "build_digest": digest,
        "config_digest": world_cfg.digest(),
        "hook": cfg.hook_name,
        "paths": {"model": "model", "sae": "sae", "corpus": ["corpus/train.txt"], "config": CONFIG_COPY},
        "sizes": {
            "documents": len(documents),
            "words": n_words,
            "windows": trained["windows"],
            "vocab": len(tokenizer),
            "d_model": cfg.d_model,
            "n_layers": cfg.n_layers,
            "ctx": cfg.ctx,
            "d_sae": trained["sae"]["d_sae"],
            "concepts": len(world_cfg.concepts),
        },
        "model": trained["model"],
        "sae": trained["sae"],
        "timings": timings,
        "build": identity,
    }
    (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2))
    return manifest


def train_model_and_sae(
    out: Path, corpus_file: Path, texts: Sequence[str], tokenizer: Any, cfg: WorldBuildConfig
) -> dict[str, Any]:
    """Train the language model on `texts` into `out/model` and an SAE on its `cfg.hook_name`
    into `out/sae`, reading the corpus from `corpus_file` (the same texts, one per line) as
    `extract` will. Used by the toy world and by worlds built on real text.

    Returns the model's losses, the SAE's eval, the number of training windows and timings."""
    import torch

    from sae_translate.extract.sae_training import TrainSaeConfig, train_sae
    from sae_translate.world import lm

    t = time.perf_counter()
    eos_id = tokenizer.eos_token_id
    ids = tokenizer.backend_tokenizer.encode_batch(list(texts))
    windows = lm.pack_token_windows((e.ids for e in ids), eos_id, cfg.ctx)
    lm_cfg = lm.LanguageModelConfig(
        d_model=cfg.d_model,
        n_layers=cfg.n_layers,
        n_heads=cfg.n_heads,
        ctx=cfg.ctx,
        steps=cfg.lm_steps,
        batch_size=cfg.lm_batch_size,
        lr=cfg.lm_lr,
        seed=cfg.seed,
    )
    model = lm.build_model(lm_cfg, len(tokenizer), eos_id, tokenizer.pad_token_id)
    losses = lm.train_language_model(model, windows, lm_cfg, progress=cfg.progress)
    lm.save_checkpoint(model, tokenizer, out / "model")
    model_s = time.perf_counter() - t
    _say(
        cfg,
        f"world model: {sum(p.numel() for p in model.parameters()):,} parameters, "
        f"vocab {len(tokenizer)}, val loss {losses['val_loss']:.3f}",
    )
    del model

    t = time.perf_counter()
    torch.manual_seed(cfg.seed)
    sae_cfg = TrainSaeConfig(
        model=str(out / "model"),
        hook=cfg.hook_name,
        dataset=str(corpus_file),
        out=out / "sae",
        architecture=cfg.sae_architecture,
        d_sae=cfg.d_sae,
        k=cfg.sae_k,
        training_tokens=cfg.sae_training_tokens,
        context_size=cfg.ctx,
        batch_size_tokens=cfg.sae_batch_size_tokens,
        lr=cfg.sae_lr,
        device=cfg.device,
        seed=cfg.seed,
    )
    train_sae(sae_cfg)
    sae_eval = json.loads((out / "sae" / "eval.json").read_text())
    sae_s = time.perf_counter() - t
    _say(
        cfg,
        f"world SAE: {sae_eval['alive_features']}/{sae_eval['d_sae']} features alive, "
        f"L0 {sae_eval['l0']:.1f}, explained variance {sae_eval['explained_variance']:.3f}",
    )
    return {
        "model": losses,
        "sae": sae_eval,
        "windows": int(len(windows)),
        "timings": {"model_s": model_s, "sae_s": sae_s},
    }


def set_sae_model_name(sae_dir: Path, model_name: str) -> None:
    cfg_path = sae_dir / "cfg.json"
    sae_cfg = json.loads(cfg_path.read_text())
    sae_cfg.setdefault("metadata", {})["model_name"] = model_name
    cfg_path.write_text(json.dumps(sae_cfg))


def _say(cfg: WorldBuildConfig, message: str) -> None:
    if cfg.progress:
        print(message, file=sys.stderr, flush=True)
