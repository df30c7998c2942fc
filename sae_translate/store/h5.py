"""The HDF5 run store: one writer, one reader.

Layout of `activations.h5`:
    /tokens               int32   [n_seq, ctx]
    /split                uint8   [n_seq]            0 = train, 1 = held out (scoring only)
    /vocab                str     [d_vocab]          token id -> display string
    /codes/indptr         int64   [n_tokens + 1]     CSR over tokens (token = seq * ctx + pos)
    /codes/feature        int32   [nnz]
    /codes/value          float16 [nnz]
    /features/count       int64   [d_sae]            all statistics over the train split
    /features/sum, max    float32 [d_sae]
    /features/hist        int64   [d_sae, n_bins]    log-spaced histogram of firing values
    /features/quantiles   float32 [d_sae, Q]         read off the histogram
    /features/top         int64   [d_sae, n_top]     token positions of the top activations (-1 pads)
    /features/top_value   float32 [d_sae, n_top]
    /features/logit_lens_tokens int32 [d_sae, k], /features/logit_lens_values float32 [d_sae, k]

The histogram, counts, sums, maxima and top lists all merge exactly, so shards and chunks
combine into the same statistics as one pass.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from types import TracebackType

import h5py
import numpy as np

from sae_translate.errors import UserError
from sae_translate.store.atomic import atomic_write_text

FORMAT = "sae-translate/activations/1"
FILENAME = "activations.h5"
QUANTILE_LEVELS = np.array([0.1, 0.25, 0.5, 0.75, 0.9, 0.99], dtype=np.float32)
# 16 bins per decade from 1e-4 to 1e4: quantiles within ~7% of the exact value.
HIST_LO, HIST_BINS_PER_DECADE, HIST_BINS = -4.0, 16, 128
_COMPRESSION = dict(compression="gzip", compression_opts=1, shuffle=True)


@dataclass
class Codes:
    """CSR sparse codes over a run of tokens."""

    indptr: np.ndarray  # int64 [n_tokens + 1]
    feature: np.ndarray  # int32 [nnz]
    value: np.ndarray  # float32 [nnz]

    @property
    def n_tokens(self) -> int:
        return len(self.indptr) - 1

    def token_index(self) -> np.ndarray:
        """Token index (within this block) of every nonzero."""
        return np.repeat(np.arange(self.n_tokens, dtype=np.int64), np.diff(self.indptr))

    def to_dense(self, d_sae: int) -> np.ndarray:
        dense = np.zeros((self.n_tokens, d_sae), dtype=np.float32)
        dense[self.token_index(), self.feature] = self.value
        return dense

    @staticmethod
    def from_dense(dense: np.ndarray) -> Codes:
        rows, cols = np.nonzero(dense)
        indptr = np.zeros(dense.shape[0] + 1, dtype=np.int64)
        np.cumsum(np.bincount(rows, minlength=dense.shape[0]), out=indptr[1:])
        return Codes(indptr, cols.astype(np.int32), dense[rows, cols].astype(np.float32))

    @staticmethod
    def concat(parts: list[Codes]) -> Codes:
        if not parts:
            return Codes(np.zeros(1, np.int64), np.zeros(0, np.int32), np.zeros(0, np.float32))
        offsets = np.cumsum([0] + [len(p.feature) for p in parts[:-1]])
        indptr = np.concatenate(
            [parts[0].indptr[:1]] + [p.indptr[1:] - p.indptr[0] + o for p, o in zip(parts, offsets)]
        )
        return Codes(
            indptr.astype(np.int64),
            np.concatenate([p.feature for p in parts]).astype(np.int32),
            np.concatenate([p.value for p in parts]).astype(np.float32),
        )


def heldout_split(n_seq: int, fraction: float, seed: int, offset: int = 0) -> np.ndarray:
    """Held-out flag per sequence, a pure function of (global index, seed): shards agree."""
    idx = np.arange(offset, offset + n_seq, dtype=np.uint64)
    mixed = (idx + np.uint64(seed) * np.uint64(0x9E3779B97F4A7C15)) * np.uint64(0xBF58476D1CE4E5B9)
    mixed ^= mixed >> np.uint64(31)
    u = (mixed >> np.uint64(11)).astype(np.float64) / float(1 << 53)
    return (u < fraction).astype(np.uint8)


@dataclass
class FeatureStats:
    """Mergeable per-feature statistics of firing values."""

    count: np.ndarray
    sum: np.ndarray
    max: np.ndarray
    hist: np.ndarray
    n_tokens: int = 0  # tokens seen (firing or not)
    quantile_levels: np.ndarray = field(default_factory=lambda: QUANTILE_LEVELS.copy())

    @staticmethod
    def zeros(d_sae: int) -> FeatureStats:
        return FeatureStats(
            np.zeros(d_sae, np.int64),
            np.zeros(d_sae, np.float64),
            np.zeros(d_sae, np.float32),
            np.zeros((d_sae, HIST_BINS), np.int64),
        )

    def update(self, feature: np.ndarray, value: np.ndarray, n_tokens: int) -> None:
        d_sae = len(self.count)
        self.n_tokens += n_tokens
        if len(feature) == 0:
            return
        self.count += np.bincount(feature, minlength=d_sae)
        # Summed per block first, then added: the float64 totals depend on that grouping.
        self.sum += np.bincount(feature, weights=value, minlength=d_sae)
        np.maximum.at(self.max, feature, value)
        # In place: a [d_sae, n_bins] temporary per block costs more than the nonzeros themselves.
        flat = feature.astype(np.int64) * HIST_BINS + _hist_bin(value)
        np.add.at(self.hist.reshape(-1), flat, 1)

    def merge(self, other: FeatureStats) -> None:
        self.count += other.count
        self.sum += other.sum
        np.maximum(self.max, other.max, out=self.max)
        self.hist += other.hist
        self.n_tokens += other.n_tokens

    @property
    def mean(self) -> np.ndarray:
        """Mean activation over the tokens where the feature fires."""
        return (self.sum / np.maximum(self.count, 1)).astype(np.float32)

    @property
    def frequency(self) -> np.ndarray:
        return (self.count / max(self.n_tokens, 1)).astype(np.float32)

    @property
    def quantiles(self) -> np.ndarray:
        """Quantiles of firing values, from the histogram (bin centres, clipped to the max)."""
        cum = np.cumsum(self.hist, axis=1)
        total = cum[:, -1:]
        out = np.zeros((len(self.count), len(self.quantile_levels)), np.float32)
        centres = 10.0 ** (HIST_LO + (np.arange(HIST_BINS) + 0.5) / HIST_BINS_PER_DECADE)
        for j, q in enumerate(self.quantile_levels):
            idx = np.argmax(cum >= np.maximum(q * total, 1), axis=1)
            out[:, j] = np.where(total[:, 0] > 0, np.minimum(centres[idx], self.max), 0.0)
        return out


def _hist_bin(value: np.ndarray) -> np.ndarray:
    logv = np.log10(np.maximum(np.abs(value.astype(np.float64)), 1e-30))
    return np.clip(((logv - HIST_LO) * HIST_BINS_PER_DECADE).astype(np.int64), 0, HIST_BINS - 1)


class TopK:
    """The n largest activations of every feature with their token positions; merges exactly."""

    def __init__(self, d_sae: int, n_top: int):
        self.positions = np.full((d_sae, n_top), -1, np.int64)
        self.values = np.full((d_sae, n_top), -np.inf, np.float32)

    def update(self, feature: np.ndarray, value: np.ndarray, position: np.ndarray) -> None:
        n_top = self.values.shape[1]
        # A nonzero below its feature's current n_top-th value can never enter the list (nor can
        # NaN): once the lists fill, this drops almost every nonzero before any sorting.
        maybe = value >= self.values[feature, -1]
        feature, value, position = feature[maybe], value[maybe], position[maybe]
        if len(feature) == 0:
            return
        # Rank each candidate within its feature (descending value, then position), keep the first
        # n_top, and merge them into the lists of the features they touch (not all d_sae of them).
        order = _rank_order(feature, value, position)
        f_sorted = feature[order]
        rank = np.arange(len(order)) - np.searchsorted(f_sorted, f_sorted, side="left")
        first = rank == 0
        rows = f_sorted[first]
        slot = np.cumsum(first) - 1
        keep = rank < n_top
        width = int(rank[keep].max()) + 1  # candidates per feature, padded to the most any has
        cand_v = np.full((len(rows), width), -np.inf, np.float32)
        cand_p = np.full((len(rows), width), -1, np.int64)
        cand_v[slot[keep], rank[keep]] = value[order][keep]
        cand_p[slot[keep], rank[keep]] = position[order][keep]
        self.values[rows], self.positions[rows] = _merge_rows(self.values[rows], self.positions[rows], cand_v, cand_p)

    def merge(self, other: TopK) -> None:
        self._merge(other.values, other.positions)

    def _merge(self, values: np.ndarray, positions: np.ndarray) -> None:
        self.values, self.positions = _merge_rows(self.values, self.positions, values, positions)

    def finished(self) -> tuple[np.ndarray, np.ndarray]:
        values = np.where(np.isfinite(self.values), self.values, 0.0).astype(np.float32)
        return self.positions, values


def _merge_rows(
    values: np.ndarray, positions: np.ndarray, other_v: np.ndarray, other_p: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Row by row, the n_top largest of two top lists. Ties are broken by position (padding, -1,
    last) so the result does not depend on merge order."""
    n_top = values.shape[1]
    all_v = np.concatenate([values, other_v], axis=1)
    all_p = np.concatenate([positions, other_p], axis=1)
    tie = np.where(all_p < 0, np.iinfo(np.int64).max, all_p)
    order = np.lexsort((tie, -all_v), axis=1)[:, :n_top]
    return np.take_along_axis(all_v, order, axis=1), np.take_along_axis(all_p, order, axis=1)


def _rank_order(feature: np.ndarray, value: np.ndarray, position: np.ndarray) -> np.ndarray:
    """The order of lexsort((position, -value, feature)) for non-NaN values: by feature, descending
    value, then position. Positions arrive in order (nonzeros in token order), so one stable sort
    of a combined (feature, descending value) key does it, at a third of the cost of lexsort."""
    if len(position) > 1 and np.any(position[1:] < position[:-1]):
        return np.lexsort((position, -value, feature))
    bits = (value.astype(np.float32) + np.float32(0.0)).view(np.int32).astype(np.int64)  # -0.0 == 0.0
    ordered = np.where(bits < 0, bits ^ 0x7FFFFFFF, bits)  # int order == float order
    key = feature.astype(np.int64) * (1 << 32) + ((1 << 31) - 1 - ordered)
    return np.argsort(key, kind="stable")


class RunWriter:
    """Streams sequences and their codes into `<path>.tmp`, then renames it into place."""

    def __init__(
        self,
        path: Path,
        *,
        ctx: int,
        d_sae: int,
        vocab: list[str],
        attrs: dict,
        n_top: int = 32,
        value_dtype: str = "float16",
    ):
        self.path = Path(path)
        self.tmp = self.path.with_name(self.path.name + ".tmp")
        self.ctx, self.d_sae = ctx, d_sae
        self.stats = FeatureStats.zeros(d_sae)
        self.top = TopK(d_sae, n_top)
        self.n_seq = 0
        self.nnz = 0
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # 2.5 MiB of chunk cache per dataset: a partial chunk stays cached (compressed once, when full).
            self.file = h5py.File(self.tmp, "w", rdcc_nbytes=5 << 19)
        except OSError as e:
            raise UserError(f"cannot write {self.tmp}: {e.strerror or e}; choose a writable --out") from e
        f = self.file
        f.attrs["format"] = FORMAT
        for key, value in attrs.items():
            f.attrs[key] = json.dumps(value) if isinstance(value, (dict, list)) else value
        f.attrs["ctx"], f.attrs["d_sae"] = ctx, d_sae
        f.create_dataset("vocab", data=np.array(vocab, dtype=object), dtype=h5py.string_dtype())
        f.create_dataset("tokens", (0, ctx), maxshape=(None, ctx), dtype=np.int32, chunks=(256, ctx), **_COMPRESSION)
        f.create_dataset("split", (0,), maxshape=(None,), dtype=np.uint8, chunks=(4096,))
        f.create_dataset("seq_index", (0,), maxshape=(None,), dtype=np.int64, chunks=(4096,))
        g = f.create_group("codes")
        g.create_dataset("indptr", data=np.zeros(1, np.int64), maxshape=(None,), chunks=(65536,), **_COMPRESSION)
        g.create_dataset("feature", (0,), maxshape=(None,), dtype=np.int32, chunks=(262144,), **_COMPRESSION)
        g.create_dataset("value", (0,), maxshape=(None,), dtype=value_dtype, chunks=(262144,), **_COMPRESSION)
        # Held open: closing a dataset flushes its cache, so reopening it per append would compress
        # (and read back) its last, partial chunk every time.
        self.datasets = {
            name: f[name] for name in ("tokens", "split", "seq_index", "codes/indptr", "codes/feature", "codes/value")
        }

    def append(self, tokens: np.ndarray, split: np.ndarray, codes: Codes, seq_ids: np.ndarray | None = None) -> None:
        """Add whole sequences: tokens [n, ctx], their split flags, and CSR codes over n * ctx tokens.

        `seq_ids` are the sequences' global indices (a shard holds every world_size-th chunk);
        by default they follow on from the sequences already written.
        """
        n = len(tokens)
        assert codes.n_tokens == n * self.ctx, "codes must cover every token of the sequences"
        if seq_ids is None:
            seq_ids = np.arange(self.n_seq, self.n_seq + n, dtype=np.int64)
        ds = self.datasets
        _extend(ds["tokens"], tokens.astype(np.int32))
        _extend(ds["split"], split.astype(np.uint8))
        _extend(ds["seq_index"], np.asarray(seq_ids, dtype=np.int64))
        _extend(ds["codes/indptr"], (codes.indptr[1:] - codes.indptr[0] + self.nnz).astype(np.int64))
        _extend(ds["codes/feature"], codes.feature.astype(np.int32))
        _extend(ds["codes/value"], codes.value)
        # Statistics and top examples over the train split only: held-out data stays unseen.
        token_seq = np.repeat(np.arange(n), self.ctx)
        nz_token = codes.token_index()
        train_nz = split[token_seq[nz_token]] == 0
        position = np.asarray(seq_ids, dtype=np.int64)[token_seq[nz_token]] * self.ctx + nz_token % self.ctx
        value = codes.value.astype(np.float32)
        self.stats.update(codes.feature[train_nz], value[train_nz], int((split == 0).sum()) * self.ctx)
        self.top.update(codes.feature[train_nz], value[train_nz], position[train_nz])
        self.n_seq += n
        self.nnz += len(codes.feature)

    def close(self, logit_lens: tuple[np.ndarray, np.ndarray | None] | None = None) -> Path:
        f = self.file
        write_feature_tables(f, self.stats, self.top, logit_lens)
        f.attrs["n_seq"], f.attrs["n_tokens"], f.attrs["nnz"] = self.n_seq, self.n_seq * self.ctx, self.nnz
        f.attrs["complete"] = True
        f.flush()
        f.close()
        os.replace(self.tmp, self.path)  # the finished file appears atomically
        return self.path

    def abort(self) -> None:
        try:
            self.file.close()
        finally:
            self.tmp.unlink(missing_ok=True)


def write_feature_tables(
    f: h5py.File, stats: FeatureStats, top: TopK, logit_lens: tuple[np.ndarray, np.ndarray | None] | None
) -> None:
    g = f.require_group("features")
    for name in list(g):
        del g[name]
    g.create_dataset("count", data=stats.count)
    g.create_dataset("sum", data=stats.sum.astype(np.float32))
    g.create_dataset("max", data=stats.max)
    g.create_dataset("hist", data=stats.hist, **_COMPRESSION)
    g.create_dataset("quantiles", data=stats.quantiles)
    g["quantiles"].attrs["levels"] = stats.quantile_levels
    g.attrs["n_train_tokens"] = stats.n_tokens
    positions, values = top.finished()
    g.create_dataset("top", data=positions, **_COMPRESSION)
    g.create_dataset("top_value", data=values, **_COMPRESSION)
    if logit_lens is not None:
        g.create_dataset("logit_lens_tokens", data=logit_lens[0].astype(np.int32))
        if logit_lens[1] is not None:
            g.create_dataset("logit_lens_values", data=logit_lens[1].astype(np.float32))


def _extend(ds: h5py.Dataset, data: np.ndarray) -> None:
    start = ds.shape[0]
    ds.resize(start + len(data), axis=0)
    ds[start:] = data


def write_run(
    path: Path,
    *,
    tokens: np.ndarray,
    codes: Codes,
    split: np.ndarray,
    vocab: list[str],
    attrs: dict,
    logit_lens_tokens: np.ndarray | None = None,
    logit_lens_values: np.ndarray | None = None,
    d_sae: int | None = None,
    n_top: int = 32,
) -> RunStore:
    """Write a whole run from memory (tests, benchmarks, synthetic runs)."""
    path = Path(path)
    if path.suffix != ".h5":
        path = path / FILENAME
    d_sae = d_sae or int(attrs.get("d_sae") or (codes.feature.max() + 1))
    writer = RunWriter(path, ctx=tokens.shape[1], d_sae=d_sae, vocab=vocab, attrs=attrs, n_top=n_top)
    step = 1024
    for s in range(0, len(tokens), step):
        block = slice(s, s + step)
        n = len(tokens[block])
        lo, hi = s * tokens.shape[1], (s + n) * tokens.shape[1]
        a, b = codes.indptr[lo], codes.indptr[hi]
        writer.append(
            tokens[block], split[block], Codes(codes.indptr[lo : hi + 1] - a, codes.feature[a:b], codes.value[a:b])
        )
    lens = None if logit_lens_tokens is None else (logit_lens_tokens, logit_lens_values)
    return RunStore.open(writer.close(lens))


MANIFEST = "manifest.json"


def shard_name(rank: int, world_size: int) -> str:
    return f"shard-{rank:05d}-of-{world_size:05d}.h5"


def write_manifest(run_dir: Path, shards: list[str], attrs: dict) -> None:
    """The completion marker of a sharded run: written last, atomically."""
    atomic_write_text(run_dir / MANIFEST, json.dumps({"format": FORMAT, "shards": shards, "attrs": attrs}, indent=1))


def _open_shard(path: Path) -> h5py.File:
    if not path.exists():
        if (path.parent / ".partial").is_dir():  # extract's resumable chunks: running, or killed
            raise UserError(
                f"the extract into {path.parent} has not finished; wait for it, or rerun the same "
                "extract command to resume it"
            )
        raise UserError(f"no run at {path}; run `sae-translate extract ... --out {path.parent}` first")
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise UserError(f"{path} is not a readable HDF5 file ({e}); delete it and rerun extract") from e
    if f.attrs.get("format") != FORMAT:
        f.close()
        raise UserError(f"{path} is not an sae-translate run (no format={FORMAT!r} attribute)")
    if not f.attrs.get("complete", False):
        f.close()
        raise UserError(f"{path} is incomplete; rerun the same extract command to finish it")
    return f


def _raised_in_h5py(tb: TracebackType | None) -> bool:
    """Whether the innermost frame of a traceback is h5py's (a read of the file failed, not some
    other file's write inside the same ``with``)."""
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return tb is not None and "h5py" in Path(tb.tb_frame.f_code.co_filename).parts


class RunStore:
    """Read side of a finished run: one activations.h5, or the shards a manifest lists, read as one."""

    def __init__(self, path: Path, files: list[h5py.File]):
        self.path = path
        self.dir = path.parent
        self.files = files
        self.file = files[0]  # attributes, vocab and logit lens are identical in every shard
        n = sum(int(f.attrs["n_seq"]) for f in files)
        self._shard_of = np.zeros(n, np.int32)
        self._local_of = np.zeros(n, np.int64)
        for i, f in enumerate(files):
            ids = f["seq_index"][:]
            self._shard_of[ids] = i
            self._local_of[ids] = np.arange(len(ids))

    @staticmethod
    def open(path: str | Path) -> RunStore:
        path = Path(path)
        if path.is_dir() and (path / MANIFEST).exists():
            try:
                manifest = json.loads((path / MANIFEST).read_text())
                shards = [path / name for name in manifest["shards"]]
            except (OSError, ValueError, KeyError) as e:
                raise UserError(f"{path / MANIFEST} is unreadable ({e}); rerun the same extract command") from e
            files = []
            try:
                for shard in shards:
                    files.append(_open_shard(shard))
            except UserError:
                for f in files:
                    f.close()
                raise
            return RunStore(path / MANIFEST, files)
        if path.is_dir() or (not path.exists() and path.suffix != ".h5"):  # a run directory, extracted or not
            path = path / FILENAME
        return RunStore(path, [_open_shard(path)])

    def close(self) -> None:
        for f in self.files:
            f.close()

    def __enter__(self) -> RunStore:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close()
        if isinstance(exc, OSError) and _raised_in_h5py(tb):  # a chunk that fails to decompress, say
            raise UserError(f"{self.path} is damaged ({exc}); delete it and rerun extract") from exc

    @cached_property
    def attrs(self) -> dict:
        out = {}
        for key, value in self.file.attrs.items():
            out[key] = value.item() if isinstance(value, np.generic) else value
        out["n_seq"] = len(self._shard_of)
        out["n_tokens"] = len(self._shard_of) * int(out["ctx"])
        out["nnz"] = sum(int(f.attrs["nnz"]) for f in self.files)
        out["n_shards"] = len(self.files)
        return out

    @property
    def n_seq(self) -> int:
        return int(self.attrs["n_seq"])

    @property
    def ctx(self) -> int:
        return int(self.attrs["ctx"])

    @property
    def d_sae(self) -> int:
        return int(self.attrs["d_sae"])

    @property
    def n_tokens(self) -> int:
        return int(self.attrs["n_tokens"])

    @cached_property
    def config(self) -> dict:
        return json.loads(self.attrs.get("config", "{}"))

    @cached_property
    def vocab(self) -> list[str]:
        return [s.decode() if isinstance(s, bytes) else s for s in self.file["vocab"][:]]

    def _by_shard(self, seqs: np.ndarray) -> Iterator[tuple[h5py.File, np.ndarray, np.ndarray]]:
        """(file, positions in seqs, local indices) for each shard holding some of seqs."""
        shard = self._shard_of[seqs]
        for i, f in enumerate(self.files):
            where = np.flatnonzero(shard == i)
            if len(where):
                yield f, where, self._local_of[seqs[where]]

    def _seqs(self, seqs) -> np.ndarray:
        if isinstance(seqs, slice):
            return np.arange(self.n_seq)[seqs]
        return np.sort(np.asarray(seqs, dtype=np.int64))

    def tokens(self, seqs) -> np.ndarray:
        seqs = self._seqs(seqs)
        out = np.zeros((len(seqs), self.ctx), np.int32)
        for f, where, local in self._by_shard(seqs):
            order = np.argsort(local, kind="stable")  # h5py reads increasing indices
            out[where[order]] = f["tokens"][local[order]]
        return out

    @cached_property
    def split(self) -> np.ndarray:
        out = np.zeros(self.n_seq, np.uint8)
        for f in self.files:
            out[f["seq_index"][:]] = f["split"][:]
        return out

    @cached_property
    def train_seqs(self) -> np.ndarray:
        return np.flatnonzero(self.split == 0).astype(np.int64)

    @cached_property
    def heldout_seqs(self) -> np.ndarray:
        return np.flatnonzero(self.split == 1).astype(np.int64)

    def iter_codes(self, seqs, batch_seqs: int = 256) -> Iterator[tuple[np.ndarray, Codes]]:
        """Codes of the given sequences (sorted), batch by batch; each shard read in contiguous spans."""
        seqs = self._seqs(seqs)
        for start in range(0, len(seqs), batch_seqs):
            batch = seqs[start : start + batch_seqs]
            per_seq: list[Codes | None] = [None] * len(batch)
            for f, where, local in self._by_shard(batch):
                for w, codes in zip(where, _read_local_codes(f, local, self.ctx)):
                    per_seq[w] = codes
            yield batch, Codes.concat([c for c in per_seq if c is not None])  # every row is in a shard

    def codes(self, seqs) -> Codes:
        return Codes.concat([c for _, c in self.iter_codes(self._seqs(seqs), batch_seqs=1024)])

    def dense(self, seqs) -> np.ndarray:
        """float32 [n, ctx, d_sae]: small runs and tests only."""
        seqs = self._seqs(seqs)
        return self.codes(seqs).to_dense(self.d_sae).reshape(len(seqs), self.ctx, self.d_sae)

    @cached_property
    def stats(self) -> FeatureStats:
        total = None
        for f in self.files:
            g = f["features"]
            part = FeatureStats(
                count=g["count"][:],
                sum=g["sum"][:].astype(np.float64),
                max=g["max"][:],
                hist=g["hist"][:],
                n_tokens=int(g.attrs["n_train_tokens"]),
                quantile_levels=g["quantiles"].attrs["levels"][:],
            )
            if total is None:
                total = part
            else:
                total.merge(part)
        assert total is not None  # a run has at least one shard
        return total

    @cached_property
    def _top(self) -> tuple[np.ndarray, np.ndarray]:
        if len(self.files) == 1:
            return self.file["features/top"][:], self.file["features/top_value"][:]
        first = self.file["features/top"]
        top = TopK(self.d_sae, first.shape[1])
        for f in self.files:
            values = f["features/top_value"][:]
            positions = f["features/top"][:]
            top._merge(np.where(positions >= 0, values, -np.inf).astype(np.float32), positions)
        return top.finished()

    @property
    def top_positions(self) -> np.ndarray:
        return self._top[0]

    @property
    def top_values(self) -> np.ndarray:
        return self._top[1]

    @cached_property
    def logit_lens_tokens(self) -> np.ndarray | None:
        g = self.file["features"]
        return g["logit_lens_tokens"][:] if "logit_lens_tokens" in g else None

    @cached_property
    def logit_lens_values(self) -> np.ndarray | None:
        g = self.file["features"]
        return g["logit_lens_values"][:] if "logit_lens_values" in g else None

    @property
    def alive(self) -> np.ndarray:
        return np.flatnonzero(self.stats.count > 0)


def _read_local_codes(f: h5py.File, local: np.ndarray, ctx: int) -> list[Codes]:
    """Codes of each local sequence (in the given order), reading one contiguous span."""
    lo, hi = int(local.min()), int(local.max()) + 1
    indptr = f["codes/indptr"][lo * ctx : hi * ctx + 1]
    a, b = int(indptr[0]), int(indptr[-1])
    feature, value = f["codes/feature"][a:b], f["codes/value"][a:b].astype(np.float32)
    out = []
    for s in local:
        p = indptr[(s - lo) * ctx : (s - lo + 1) * ctx + 1] - a
        out.append(Codes(p - p[0], feature[p[0] : p[-1]], value[p[0] : p[-1]]))
    return out
