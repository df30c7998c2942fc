"""extract: corpus -> model hook activations -> SAE codes -> activations.h5.

Work is cut into chunks of `chunk_seqs` sequences. A writer thread takes each finished chunk while
the next one is computed (bounded queue: compute never waits on disk, memory stays bounded): it
saves the chunk atomically to `<out>/.partial/chunk-NNNNNN.npz` and appends it to
`activations.h5.tmp`, which is renamed into place once every chunk is in. A rerun of the same
command skips finished chunks (the writer reads them back), so a killed run resumes. Chunk
boundaries depend only on sequence indices, so a resumed run and an uninterrupted one produce the
same file.
"""

from __future__ import annotations

import errno
import functools
import json
import queue
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path

import numpy as np
import torch

from sae_translate import __version__
from sae_translate.distributed import Ranks
from sae_translate.errors import UserError
from sae_translate.extract.config import ExtractConfig
from sae_translate.extract.corpus import (
    iter_documents,
    local_files,
    pack_windows,
    prefetch,
)
from sae_translate.extract.models import hook_layer, hook_width
from sae_translate.progress import progress
from sae_translate.store.atomic import atomic_write, atomic_write_text, check_writable
from sae_translate.store.h5 import (
    FILENAME,
    MANIFEST,
    Codes,
    RunStore,
    RunWriter,
    heldout_split,
    shard_name,
    write_manifest,
)


@dataclass
class ExtractResult:
    path: Path
    n_seq: int
    n_tokens: int
    seconds: float
    resumed_chunks: int = 0
    reused: bool = False
    extra: dict = field(default_factory=dict)


def extract(cfg: ExtractConfig) -> ExtractResult:
    """Extract a run. Under torchrun each rank encodes every world_size-th chunk into its own shard."""
    from sae_translate.extract.models import load_model
    from sae_translate.extract.saes import (
        check_sae_fits_model,
        load_sae,
        model_kwargs_for,
    )

    t0 = time.time()
    _check_ranges(cfg)
    ranks = Ranks.from_env()
    out = Path(cfg.out)
    partial = out / ".partial"
    check_writable(out)
    created = not out.exists()  # removed again if this invocation fails before writing anything into it
    reused = _existing_run(out, cfg, ranks)
    if reused is not None:
        return ExtractResult(reused.path, reused.n_seq, reused.n_tokens, time.time() - t0, reused=True)
    # Every check that can fail on bad input runs before anything is written.
    n_seq_max = cfg.tokens // cfg.ctx
    if n_seq_max < 1:
        raise UserError(f"--tokens {cfg.tokens} is less than one window of --ctx {cfg.ctx}")
    local_files(cfg.dataset)
    sae = load_sae(cfg.sae, device=ranks.device(cfg.device))
    model = load_model(cfg.model, device=str(sae.device), dtype=cfg.dtype, processing=model_kwargs_for(sae))
    hook = check_sae_fits_model(sae, model, cfg.hook)
    _check_width(model, sae, hook)
    if cfg.top_k_codes and cfg.top_k_codes > sae.cfg.d_sae:
        raise UserError(f"--top-k-codes {cfg.top_k_codes} exceeds the SAE's {sae.cfg.d_sae} features")
    if cfg.ctx > model.cfg.n_ctx:
        raise UserError(f"context size {cfg.ctx} exceeds the model's {model.cfg.n_ctx}; lower --ctx")
    if model.tokenizer is None:
        raise UserError(f"model {cfg.model!r} has no tokenizer; save one with the checkpoint")
    _remove_old_run(out, ranks)  # one made with other settings (--force) or unreadable: only now, after the checks
    if ranks.rank == 0:
        _prepare_partial(partial, cfg)
    ranks.barrier()

    # Every rank reads the same token stream and encodes only its own chunks, so the
    # sequences (and the held-out split) are exactly those of a single-process run.
    windows = prefetch(
        pack_windows(
            iter_documents(cfg.dataset, text_column=cfg.text_column, split=cfg.dataset_split, name=cfg.dataset_name),
            model.tokenizer,
            cfg.ctx,
        ),
        depth=2 * cfg.chunk_seqs,
    )
    path = out / (FILENAME if ranks.world_size == 1 else shard_name(ranks.rank, ranks.world_size))
    attrs = _run_attrs(cfg, model, sae, hook)
    writer = _ChunkWriter(
        partial,
        cfg,
        open_run=functools.partial(_open_run, path, cfg, model, attrs),
        lens=functools.partial(logit_lens_blocks, model, sae, cfg.logit_lens_k),
    )
    bar = progress(
        total=n_seq_max * cfg.ctx,
        unit="tok",
        unit_scale=True,
        desc="extract",
        disable=not cfg.progress or ranks.rank != 0,
    )
    n_seq, resumed = 0, 0
    try:
        for chunk_idx in range((n_seq_max + cfg.chunk_seqs - 1) // cfg.chunk_seqs):
            want = min(cfg.chunk_seqs, n_seq_max - chunk_idx * cfg.chunk_seqs)
            batch = list(islice(windows, want))
            if not batch:
                break
            n_seq += len(batch)
            if chunk_idx % ranks.world_size == ranks.rank:
                tokens = np.stack(batch)
                if writer.has(chunk_idx, len(tokens)):
                    resumed += 1
                    writer.put(chunk_idx, tokens, None)
                else:
                    writer.put(chunk_idx, tokens, encode_chunk(model, sae, hook, tokens, cfg))
            bar.update(len(batch) * cfg.ctx)
            if len(batch) < want:
                break
        if n_seq == 0:
            raise UserError(f"dataset {cfg.dataset!r} gave no window of {cfg.ctx} tokens; lower --ctx or add text")
        writer.finish()
    except BaseException:
        writer.abort()
        if n_seq == 0 or (ranks.world_size == 1 and not any(partial.glob("chunk-*.npz"))):
            shutil.rmtree(partial, ignore_errors=True)  # nothing worth resuming
            if created and ranks.rank == 0:
                _remove_if_empty(out)
        raise
    finally:
        bar.close()

    if ranks.world_size == 1:
        shutil.rmtree(partial, ignore_errors=True)
        with RunStore.open(out) as run:
            return ExtractResult(run.path, run.n_seq, run.n_tokens, time.time() - t0, resumed_chunks=resumed)
    ranks.barrier()
    if ranks.rank == 0:
        write_manifest(out, [shard_name(r, ranks.world_size) for r in range(ranks.world_size)], attrs)
        shutil.rmtree(partial, ignore_errors=True)
    ranks.barrier()
    with RunStore.open(out) as run:
        return ExtractResult(run.path, run.n_seq, run.n_tokens, time.time() - t0, resumed_chunks=resumed)


@torch.no_grad()
def encode_chunk(model, sae, hook: str, tokens: np.ndarray, cfg: ExtractConfig) -> Codes:
    """SAE codes of every token of a chunk, as CSR on the CPU."""
    layer = hook_layer(hook)
    stop = layer + 1 if layer is not None else None
    parts = []
    for s in range(0, len(tokens), cfg.batch_size):
        batch = torch.as_tensor(tokens[s : s + cfg.batch_size], dtype=torch.long, device=model.cfg.device)
        _, cache = model.run_with_cache(batch, names_filter=[hook], stop_at_layer=stop)
        acts = cache[hook].to(sae.dtype)
        feats = sae.encode(acts).flatten(0, -2)  # [tokens, d_sae]
        if cfg.top_k_codes:
            top = torch.topk(feats, cfg.top_k_codes, dim=-1)
            feats = torch.zeros_like(feats).scatter_(-1, top.indices, top.values)
        rows, cols = feats.nonzero(as_tuple=True)
        values = feats[rows, cols]
        indptr = torch.zeros(feats.shape[0] + 1, dtype=torch.long, device=feats.device)
        indptr[1:] = torch.cumsum(torch.bincount(rows, minlength=feats.shape[0]), 0)
        parts.append(Codes(indptr.cpu().numpy(), cols.int().cpu().numpy(), values.float().cpu().numpy()))
    return Codes.concat(parts)


@torch.no_grad()
def logit_lens_blocks(model, sae, k: int, block: int = 1024) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Top-k tokens (and logits) of each feature's decoder direction through the unembedding,
    `block` features at a time, computed on the model's device."""
    W_U = model.W_U.to(sae.W_dec.dtype)
    for s in range(0, sae.W_dec.shape[0], block):
        logits = sae.W_dec[s : s + block].to(W_U.device) @ W_U
        top = torch.topk(logits, min(k, logits.shape[-1]), dim=-1)
        yield top.indices.int().cpu().numpy(), top.values.float().cpu().numpy()


def logit_lens(model, sae, k: int) -> tuple[np.ndarray, np.ndarray]:
    tokens, values = zip(*logit_lens_blocks(model, sae, k))
    return np.concatenate(tokens), np.concatenate(values)


def token_strings(tokenizer, d_vocab: int) -> list[str]:
    """Display string of every token id (decoded, so byte-level BPE shows real text)."""
    out = []
    for i in range(d_vocab):
        try:
            out.append(tokenizer.decode([i]) if i < len(tokenizer) else f"<{i}>")
        except (IndexError, ValueError, TypeError):
            out.append(f"<{i}>")
    return out


def _run_attrs(cfg: ExtractConfig, model, sae, hook: str) -> dict:
    return {
        "model": cfg.model,
        "hook": hook,
        "sae": cfg.sae,
        "dataset": cfg.dataset,
        "d_model": model.cfg.d_model,
        "d_sae": sae.cfg.d_sae,
        "d_vocab": model.cfg.d_vocab,
        "seed": cfg.seed,
        "heldout": cfg.heldout,
        "version": __version__,
        "config": cfg.identity(),
        "digest": cfg.digest(),
        "world": cfg.world,
        "top_k_codes": cfg.top_k_codes or 0,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }


def _open_run(path: Path, cfg: ExtractConfig, model, attrs: dict) -> RunWriter:
    return RunWriter(
        path,
        ctx=cfg.ctx,
        d_sae=int(attrs["d_sae"]),
        vocab=token_strings(model.tokenizer, model.cfg.d_vocab),
        attrs=attrs,
        n_top=cfg.n_top,
        value_dtype=cfg.value_dtype,
    )


class _ChunkWriter:
    """The run file's writer, on a background thread that works while the next chunk is computed.

    It opens the run file and computes the logit lens first (the model's forward passes do not
    wait for either), then takes the chunks in order: each is saved to `.partial` (for resuming)
    unless it came from there, and appended to the run file.
    """

    def __init__(
        self,
        partial: Path,
        cfg: ExtractConfig,
        open_run: Callable[[], RunWriter],
        lens: Callable[[], Iterator[tuple[np.ndarray, np.ndarray]]],
        depth: int = 4,
    ):
        self.partial = partial
        self.cfg = cfg
        self.value_dtype = np.dtype(cfg.value_dtype)
        self.queue: queue.Queue = queue.Queue(maxsize=depth)
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self.run: RunWriter | None = None
        self.lens: tuple[np.ndarray, np.ndarray] | None = None
        self.thread = threading.Thread(target=self._work, args=(open_run, lens), daemon=True)
        self.thread.start()

    def path(self, idx: int) -> Path:
        return self.partial / f"chunk-{idx:06d}.npz"

    def has(self, idx: int, n_seq: int) -> bool:
        path = self.path(idx)
        if not path.exists():
            return False
        try:
            with np.load(path) as z:
                return len(z["tokens"]) == n_seq
        except (OSError, ValueError, KeyError):
            path.unlink(missing_ok=True)  # unreadable chunk: redo it
            return False

    def put(self, idx: int, tokens: np.ndarray, codes: Codes | None) -> None:
        """Queue a chunk; codes None: it is already saved in `.partial`."""
        if self.error is not None:
            raise _disk_error(self.error, self.partial)
        self.queue.put((idx, tokens, codes))

    def finish(self) -> Path:
        """Wait for every queued chunk, then complete the run file."""
        self.queue.put(None)
        self.thread.join()
        if self.error is not None:
            raise _disk_error(self.error, self.partial)
        assert self.run is not None and self.lens is not None
        try:
            return self.run.close(self.lens)
        except OSError as e:
            raise _disk_error(e, self.run.path) from e

    def abort(self) -> None:
        """Stop the thread and remove the unfinished run file (finished chunks stay for a rerun)."""
        self.stop.set()
        self.queue.put(None)
        self.thread.join()
        if self.run is not None:
            self.run.abort()

    def _work(self, open_run: Callable[[], RunWriter], lens: Callable[[], Iterator]) -> None:
        try:
            self.run = open_run()
            blocks = []
            for block in lens():
                if self.stop.is_set():
                    break
                blocks.append(block)
            if blocks:
                self.lens = (np.concatenate([t for t, _ in blocks]), np.concatenate([v for _, v in blocks]))
            while (item := self.queue.get()) is not None:
                if not self.stop.is_set():
                    self._append(*item)
        except BaseException as e:  # reported on the main thread
            self.error = e
            while self.queue.get() is not None:  # keep the producer from blocking
                pass

    def _append(self, idx: int, tokens: np.ndarray, codes: Codes | None) -> None:
        if codes is None:
            with np.load(self.path(idx)) as z:
                codes = Codes(z["indptr"], z["feature"], z["value"])
        else:
            # Stored values are rounded to the storage dtype first: statistics are of what is stored.
            codes = Codes(codes.indptr, codes.feature, codes.value.astype(self.value_dtype))
            save = functools.partial(
                np.savez, tokens=tokens, indptr=codes.indptr, feature=codes.feature, value=codes.value
            )
            atomic_write(self.path(idx), save)
        first = idx * self.cfg.chunk_seqs
        split = heldout_split(len(tokens), self.cfg.heldout, self.cfg.seed, offset=first)
        assert self.run is not None
        self.run.append(tokens, split, codes, seq_ids=np.arange(first, first + len(tokens)))


def _disk_error(e: BaseException, where: Path) -> BaseException:
    if isinstance(e, OSError) and e.errno == errno.ENOSPC:
        return UserError(f"disk full while writing {where}; free space and rerun the same command to resume")
    if isinstance(e, OSError):
        return UserError(f"cannot write {where}: {e.strerror or e}")
    return e


def _existing_run(out: Path, cfg: ExtractConfig, ranks: Ranks) -> RunStore | None:
    """The finished run to reuse, or None when it should be (re)built (the old one is removed by
    _remove_old_run once the new settings have passed their checks)."""
    if not ((out / FILENAME).exists() or (out / MANIFEST).exists()):
        return None
    try:
        run = RunStore.open(out)
    except UserError:
        run = None  # unreadable or unfinished: rebuild
    if run is not None and run.attrs.get("digest") == cfg.digest():
        return run
    if run is not None:
        run.close()
        if not cfg.force:
            raise UserError(
                f"{out} holds a run made with other settings; pass --force to replace it or choose another --out"
            )
    return None


def _remove_old_run(out: Path, ranks: Ranks) -> None:
    """Remove a finished run (single file or shards) that is about to be rebuilt."""
    ranks.barrier()  # every rank has looked before rank 0 removes anything
    if ranks.rank == 0:
        for old in [out / FILENAME, out / MANIFEST, *out.glob("shard-*.h5")]:
            old.unlink(missing_ok=True)
    ranks.barrier()


def _check_ranges(cfg: ExtractConfig) -> None:
    """Options outside their range fail before anything is loaded or written."""
    if cfg.ctx < 1:
        raise UserError(f"--ctx must be 1 or more (got {cfg.ctx})")
    if not 0 <= cfg.heldout < 1:
        raise UserError(f"--heldout must be in [0, 1) (got {cfg.heldout})")
    for option, value in (("--batch-size", cfg.batch_size), ("--chunk-seqs", cfg.chunk_seqs), ("--n-top", cfg.n_top)):
        if value < 1:
            raise UserError(f"{option} must be 1 or more (got {value})")
    if cfg.logit_lens_k < 0 or (cfg.top_k_codes is not None and cfg.top_k_codes < 0):
        raise UserError("--logit-lens-k and --top-k-codes must not be negative")
    if cfg.value_dtype not in VALUE_DTYPES:  # code values are fractions: an integer type would floor them
        raise UserError(f"unknown --value-dtype {cfg.value_dtype!r}; choose one of {', '.join(VALUE_DTYPES)}")


VALUE_DTYPES = ("float16", "float32")


def _remove_if_empty(directory: Path) -> None:
    try:
        directory.rmdir()  # only succeeds on an empty directory
    except OSError:
        pass


def _prepare_partial(partial: Path, cfg: ExtractConfig) -> None:
    """Keep finished chunks only if they were made with the same settings."""
    stamp = partial / "config.json"
    if partial.exists():
        try:
            same = json.loads(stamp.read_text()).get("digest") == cfg.digest()
        except (OSError, ValueError):
            same = False
        if not same:
            shutil.rmtree(partial)
    partial.mkdir(parents=True, exist_ok=True)
    if not stamp.exists():
        atomic_write_text(stamp, json.dumps({"digest": cfg.digest(), "config": cfg.identity()}, indent=1))


@torch.no_grad()
def _check_width(model, sae, hook: str) -> None:
    """One tiny forward pass: the hook's real width must be the SAE's input width."""
    width = hook_width(model, hook)
    if width != sae.cfg.d_in:
        raise UserError(
            f"SAE input width {sae.cfg.d_in} does not match {hook} width {width}; "
            "pick the SAE trained on this model and hook"
        )
