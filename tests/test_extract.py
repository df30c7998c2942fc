"""extract on the tiny toy world: codes are exact, runs resume after a kill, bad input is one line."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from sae_translate.errors import UserError
from sae_translate.extract.extract import ExtractConfig, extract
from sae_translate.extract.models import load_model
from sae_translate.extract.saes import load_sae, model_kwargs_for
from sae_translate.store.h5 import RunStore
from tests.hub_cache import build_hub_cache, offline_env


def _cfg(world, out: Path, **kw) -> ExtractConfig:
    base = dict(
        model=str(world.model_dir),
        sae=str(world.sae_dir),
        dataset=str(world.corpus_files[0]),
        out=str(out),
        tokens=6000,
        ctx=32,
        chunk_seqs=16,
        batch_size=8,
        progress=False,
        world=str(world.dir),
    )
    base.update(kw)
    return ExtractConfig(**base)


def _cli(*args: str, env: dict | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "sae_translate", *args], capture_output=True, text=True, env=full_env, timeout=timeout
    )


@pytest.fixture(scope="module")
def world_run(tiny_world, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    extract(_cfg(tiny_world, out))
    return RunStore.open(out)


def test_layout_and_attributes(world_run, tiny_world):
    f = world_run.file
    for name in (
        "tokens",
        "codes/indptr",
        "codes/feature",
        "codes/value",
        "split",
        "vocab",
        "features/count",
        "features/max",
        "features/quantiles",
        "features/top",
        "features/logit_lens_tokens",
    ):
        assert name in f, name
    assert world_run.attrs["hook"] == tiny_world.hook
    assert world_run.attrs["d_sae"] == f["features/count"].shape[0]
    assert f["codes/indptr"].shape[0] == world_run.n_tokens + 1
    assert 0 < len(world_run.heldout_seqs) < world_run.n_seq
    assert not (world_run.dir / ".partial").exists()


def test_stored_codes_decode_to_the_saes_reconstruction(world_run, tiny_world):
    """Decoding stored codes through the SAE matches the SAE's own reconstruction of the activations."""
    sae = load_sae(str(tiny_world.sae_dir), device="cpu")
    model = load_model(str(tiny_world.model_dir), device="cpu", processing=model_kwargs_for(sae))
    seqs = np.concatenate([world_run.train_seqs[:4], world_run.heldout_seqs[:2]])
    tokens = torch.as_tensor(world_run.tokens(np.sort(seqs)), dtype=torch.long)
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens, names_filter=[tiny_world.hook])
        acts = cache[tiny_world.hook]
        expected = sae.decode(sae.encode(acts)).flatten(0, 1)
        stored = torch.as_tensor(world_run.codes(np.sort(seqs)).to_dense(world_run.d_sae))
        decoded = sae.decode(stored)
    scale = expected.norm(dim=-1, keepdim=True)
    assert ((decoded - expected).norm(dim=-1, keepdim=True) / scale).max() < 2e-3  # fp16 storage of codes


def test_statistics_match_a_direct_count(world_run):
    train = world_run.train_seqs
    dense = world_run.codes(train).to_dense(world_run.d_sae)
    assert np.array_equal(world_run.stats.count, (dense > 0).sum(0))
    np.testing.assert_allclose(world_run.stats.max, dense.max(0), rtol=1e-6)
    f = int(np.argmax(world_run.stats.count))
    top_pos = world_run.top_positions[f]
    seq, pos = top_pos // world_run.ctx, top_pos % world_run.ctx
    assert np.isin(seq, train).all()
    row = {s: i for i, s in enumerate(train)}
    vals = np.array([dense[row[s] * world_run.ctx + p, f] for s, p in zip(seq, pos)])
    np.testing.assert_allclose(vals, world_run.top_values[f], rtol=1e-6)
    assert np.all(np.diff(world_run.top_values[f]) <= 0)


def _reference_run(world, cfg: ExtractConfig) -> dict[str, np.ndarray]:
    """Every array extract writes, computed the plain way: dense SAE codes batch by batch, then
    numpy over them (statistics per chunk of `chunk_seqs` sequences, as the float64 sums depend on
    that grouping)."""
    from sae_translate.store.h5 import HIST_BINS, HIST_BINS_PER_DECADE, HIST_LO, QUANTILE_LEVELS, heldout_split

    sae = load_sae(cfg.sae, device="cpu")
    model = load_model(cfg.model, device="cpu", processing=model_kwargs_for(sae))
    layer = int(world.hook.split(".")[1])
    n_seq = cfg.tokens // cfg.ctx
    ids: list[int] = []  # every line a document, each followed by EOS, cut into windows
    for line in Path(cfg.dataset).read_text(encoding="utf-8").splitlines():
        if line.strip() and len(ids) < n_seq * cfg.ctx:
            ids += model.tokenizer(line, add_special_tokens=False)["input_ids"] + [model.tokenizer.eos_token_id]
    tokens = np.array(ids[: n_seq * cfg.ctx], dtype=np.int32).reshape(n_seq, cfg.ctx)
    with torch.no_grad():
        dense = []
        for s in range(0, len(tokens), cfg.batch_size):
            batch = torch.as_tensor(tokens[s : s + cfg.batch_size], dtype=torch.long)
            _, cache = model.run_with_cache(batch, names_filter=[world.hook], stop_at_layer=layer + 1)
            dense.append(sae.encode(cache[world.hook]).flatten(0, 1).numpy())
        logits = (sae.W_dec @ model.W_U).numpy()
    exact = np.concatenate(dense)  # [n_tokens, d_sae]
    value = exact.astype(np.float16).astype(np.float32)  # as stored
    d_sae, ctx = exact.shape[1], cfg.ctx
    split = heldout_split(n_seq, cfg.heldout, cfg.seed)
    train = np.repeat(split == 0, ctx)
    fires = (exact != 0) & train[:, None]

    total = np.zeros(d_sae)
    for s in range(0, n_seq * ctx, cfg.chunk_seqs * ctx):
        block = value[s : s + cfg.chunk_seqs * ctx] * fires[s : s + cfg.chunk_seqs * ctx]
        total += block.astype(np.float64).sum(0)
    count = fires.sum(0)
    hist = np.zeros((d_sae, HIST_BINS), np.int64)
    top = np.full((d_sae, cfg.n_top), -1, np.int64)
    top_value = np.zeros((d_sae, cfg.n_top), np.float32)
    quantiles = np.zeros((d_sae, len(QUANTILE_LEVELS)), np.float32)
    centres = 10.0 ** (HIST_LO + (np.arange(HIST_BINS) + 0.5) / HIST_BINS_PER_DECADE)
    for f in range(d_sae):
        pos = np.flatnonzero(fires[:, f])
        v = value[pos, f]
        decades = np.log10(np.maximum(np.abs(v.astype(np.float64)), 1e-30)) - HIST_LO
        hist[f] = np.bincount(
            np.clip((decades * HIST_BINS_PER_DECADE).astype(int), 0, HIST_BINS - 1), minlength=HIST_BINS
        )
        best = sorted(zip(-v, pos))[: cfg.n_top]  # largest first, then earliest position
        top[f, : len(best)] = [p for _, p in best]
        top_value[f, : len(best)] = [-nv for nv, _ in best]
        if len(v):
            cum = np.cumsum(hist[f])
            for j, q in enumerate(QUANTILE_LEVELS):
                quantiles[f, j] = min(centres[np.argmax(cum >= max(q * np.int64(len(v)), 1))], v.max())
    rows, cols = np.nonzero(exact)
    lens = torch.topk(torch.as_tensor(logits), cfg.logit_lens_k, dim=-1)
    return {
        "tokens": tokens,
        "split": split,
        "seq_index": np.arange(n_seq),
        "codes/indptr": np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=n_seq * ctx))]),
        "codes/feature": cols,
        "codes/value": exact[rows, cols].astype(np.float16),
        "features/count": count,
        "features/sum": total.astype(np.float32),
        "features/max": np.where(fires, value, 0).max(0),
        "features/hist": hist,
        "features/quantiles": quantiles,
        "features/top": top,
        "features/top_value": top_value,
        "features/logit_lens_tokens": lens.indices.numpy(),
        "features/logit_lens_values": lens.values.numpy(),
    }


def test_every_written_array_equals_a_plain_computation(world_run, tiny_world):
    """Bit for bit: the codes, split, statistics, top examples and logit lens in the file are what a
    direct dense computation gives, so a faster extract cannot change what it writes."""
    expected = _reference_run(tiny_world, _cfg(tiny_world, world_run.dir))
    f = world_run.file
    written = []
    f.visititems(lambda name, obj: written.append(name) if isinstance(obj, h5py.Dataset) and name != "vocab" else None)
    assert sorted(written) == sorted(expected)
    for name, want in expected.items():
        got = f[name][:]
        assert got.shape == want.shape, name
        assert np.array_equal(got, want.astype(got.dtype)), name


def test_packed_windows_hold_the_ids_a_tokenizer_call_gives():
    """The direct backend path and the plain tokenizer call pack the same windows, and a tokenizer
    set up differently (truncation on) goes through the plain call."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from sae_translate.extract.corpus import _batch_encoder, pack_windows

    words = [f"w{i}" for i in range(50)]
    backend = Tokenizer(models.WordLevel(unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    backend.train_from_iterator([" ".join(words)], trainers.WordLevelTrainer(special_tokens=["<eos>", "<unk>"]))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<eos>", unk_token="<unk>")
    rng = np.random.default_rng(0)
    docs = [" ".join(rng.choice(words + ["unknown", "<eos>"], size=rng.integers(1, 40))) for _ in range(300)]
    plain = tokenizer(docs, add_special_tokens=False)["input_ids"]
    assert _batch_encoder(tokenizer)(docs) == plain
    flat = np.array([i for ids in plain for i in ids + [tokenizer.eos_token_id]], dtype=np.int32)
    windows = np.stack(list(pack_windows(iter(docs), tokenizer, 16, batch_docs=7)))
    assert np.array_equal(windows, flat[: len(windows) * 16].reshape(-1, 16))
    assert len(flat) - len(windows) * 16 < 16

    backend.enable_truncation(max_length=5)
    truncating = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<eos>", unk_token="<unk>")
    assert truncating.backend_tokenizer.truncation is not None
    assert _batch_encoder(truncating)(docs) == truncating(docs, add_special_tokens=False)["input_ids"]


def _same_run(a: RunStore, b: RunStore) -> None:
    for name in (
        "tokens",
        "split",
        "codes/indptr",
        "codes/feature",
        "codes/value",
        "features/count",
        "features/max",
        "features/hist",
        "features/top",
        "features/top_value",
        "features/logit_lens_tokens",
    ):
        assert np.array_equal(a.file[name][:], b.file[name][:]), name


def test_killed_extract_resumes_to_the_same_result(tiny_world, tmp_path):
    args = [
        "extract",
        "--model",
        str(tiny_world.model_dir),
        "--sae",
        str(tiny_world.sae_dir),
        "--dataset",
        str(tiny_world.corpus_files[0]),
        "--tokens",
        "40000",
        "--ctx",
        "32",
        "--chunk-seqs",
        "8",
        "--batch-size",
        "8",
        "--device",
        "cpu",
    ]
    killed = tmp_path / "killed"
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "sae_translate", *args, "--out", str(killed)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    deadline = time.time() + 240
    while len(list((killed / ".partial").glob("chunk-*.npz"))) < 3:
        assert proc.poll() is None, "extract ended before it could be killed"
        assert time.time() < deadline
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (killed / "activations.h5").exists()
    n_before = len(list((killed / ".partial").glob("chunk-*.npz")))
    assert 3 <= n_before < 40000 // 32 // 8
    with pytest.raises(UserError, match="has not finished; wait for it, or rerun the same extract command"):
        RunStore.open(killed)  # what label, train and report say about it

    resumed = _cli(*args, "--out", str(killed))
    assert resumed.returncode == 0, resumed.stderr
    kept = re.search(r"\((\d+) chunks kept from the interrupted run\)", resumed.stdout)
    assert kept is not None and 3 <= int(kept.group(1)) <= n_before, resumed.stdout
    straight = _cli(*args, "--out", str(tmp_path / "straight"))
    assert straight.returncode == 0, straight.stderr
    assert "kept from the interrupted run" not in straight.stdout
    with RunStore.open(killed) as a, RunStore.open(tmp_path / "straight") as b:
        _same_run(a, b)


@pytest.mark.parametrize(
    "override, message",
    [
        ({"model": "no-such-model"}, "unknown model"),
        ({"sae": "no-such-release/blocks.0.hook_resid_post"}, "unknown SAE release"),
        ({"sae": "{tmp}/no-such-sae"}, "no SAE directory at"),
        ({"dataset": "does/not/exist.txt"}, "not found"),
        ({"hook": "blocks.0.hook_resid_pre"}, "does not match"),
        ({"ctx": "64"}, "context size 64 exceeds the model's 32; lower --ctx"),
        ({"ctx": "0"}, "--ctx must be 1 or more (got 0)"),
        ({"heldout": "1.5"}, "--heldout must be in [0, 1) (got 1.5)"),
        ({"heldout": "-0.1"}, "--heldout must be in [0, 1)"),
        ({"batch-size": "0"}, "--batch-size must be 1 or more (got 0)"),
        ({"chunk-seqs": "0"}, "--chunk-seqs must be 1 or more (got 0)"),
        ({"n-top": "0"}, "--n-top must be 1 or more (got 0)"),
        ({"value-dtype": "int8"}, "unknown --value-dtype 'int8'; choose one of float16, float32"),
        ({"top-k-codes": "100000"}, "--top-k-codes 100000 exceeds the SAE's 128 features"),
        ({"dataset": "{tmp}/empty.txt"}, "gave no window of 32 tokens"),
        ({"dataset": "{tmp}/rows.jsonl"}, "dataset rows have no 'text' column (columns: body)"),
    ],
)
def test_bad_input_is_one_line_and_leaves_nothing(tiny_world, tmp_path, override, message):
    out = tmp_path / "out"
    cfg = _cfg(tiny_world, out)
    (tmp_path / "empty.txt").write_text("")
    (tmp_path / "rows.jsonl").write_text('{"body": "a line of text"}\n')
    args = [
        "extract",
        "--model",
        cfg.model,
        "--sae",
        cfg.sae,
        "--dataset",
        cfg.dataset,
        "--out",
        str(out),
        "--tokens",
        "2000",
        "--ctx",
        "32",
    ]
    for key, value in override.items():
        value = value.replace("{tmp}", str(tmp_path))
        flag = f"--{key}"
        if flag in args:
            args[args.index(flag) + 1] = value
        else:
            args += [flag, value]
    result = _cli(*args)
    assert result.returncode == 1
    lines = [line for line in result.stderr.strip().splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert "Traceback" not in result.stderr
    assert not out.exists()


def test_force_with_bad_input_keeps_the_run_it_would_replace(world_run, tiny_world, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "activations.h5").write_bytes(world_run.path.read_bytes())
    before = (out / "activations.h5").read_bytes()
    for bad in ({"dataset": str(tmp_path / "missing.txt")}, {"model": "no-such-model"}, {"ctx": 64}):
        with pytest.raises(UserError):
            extract(_cfg(tiny_world, out, force=True, **bad))
        assert (out / "activations.h5").read_bytes() == before, bad


def test_sae_width_must_match_the_hook(tiny_world, tmp_path):
    from sae_lens import StandardSAE, StandardSAEConfig

    sae_cfg = StandardSAEConfig(d_in=7, d_sae=16, dtype="float32", device="cpu")
    sae_cfg.metadata.hook_name = tiny_world.hook
    StandardSAE(sae_cfg).save_model(str(tmp_path / "narrow"))
    with pytest.raises(UserError, match="width"):
        extract(_cfg(tiny_world, tmp_path / "out", sae=str(tmp_path / "narrow")))
    assert not (tmp_path / "out").exists()


def test_corrupt_or_foreign_h5_is_refused(tmp_path):
    (tmp_path / "garbage.h5").write_bytes(b"not hdf5 at all")
    with pytest.raises(UserError, match="not a readable HDF5"):
        RunStore.open(tmp_path / "garbage.h5")
    import h5py

    with h5py.File(tmp_path / "foreign.h5", "w") as f:
        f["x"] = np.arange(3)
    with pytest.raises(UserError, match="not an sae-translate run"):
        RunStore.open(tmp_path / "foreign.h5")


def test_hub_names_resolve_through_the_real_loaders(tiny_world, tmp_path):
    """Model name, sae-lens registry release and sparsify repo load through their hub code, from a local cache."""
    cache = tmp_path / "hub"
    specs = build_hub_cache(cache, tiny_world.model_dir, tiny_world.sae_dir, tiny_world.hook)
    for sae_spec in (specs["registry_sae"], specs["sparsify_sae"]):
        out = tmp_path / sae_spec.replace("/", "_").replace(":", "_")
        result = _cli(
            "extract",
            "--model",
            specs["model"],
            "--sae",
            sae_spec,
            "--dataset",
            str(tiny_world.corpus_files[0]),
            "--out",
            str(out),
            "--tokens",
            "1024",
            "--ctx",
            "32",
            "--device",
            "cpu",
            env=offline_env(cache),
        )
        assert result.returncode == 0, result.stderr[-2000:]
        with RunStore.open(out) as run:
            assert run.attrs["model"] == "pythia-70m-deduped"
            assert run.n_tokens == 1024
            assert run.stats.count.sum() > 0
