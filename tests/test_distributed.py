"""torchrun on CPU (gloo): a sharded extract equals the single-process run; DDP translator training
keeps the ranks in sync and learns as well as one process."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from sae_translate.store.h5 import RunStore

pytestmark = pytest.mark.slow  # trains and extracts under torchrun


def _extract(world, out, *launcher: str) -> None:
    args = [
        "extract",
        "--model",
        str(world.model_dir),
        "--sae",
        str(world.sae_dir),
        "--dataset",
        str(world.corpus_files[0]),
        "--out",
        str(out),
        "--tokens",
        "8192",
        "--ctx",
        "32",
        "--chunk-seqs",
        "16",
        "--device",
        "cpu",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    result = subprocess.run(
        [*launcher, "-m", "sae_translate", *args], capture_output=True, text=True, env=env, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]


def test_two_rank_extract_equals_single_process(tiny_world, tmp_path):
    _extract(tiny_world, tmp_path / "single", sys.executable)
    _extract(
        tiny_world,
        tmp_path / "sharded",
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_port",
        "29533",
    )
    assert (tmp_path / "sharded" / "manifest.json").exists()
    assert len(list((tmp_path / "sharded").glob("shard-*.h5"))) == 2
    with RunStore.open(tmp_path / "single") as a, RunStore.open(tmp_path / "sharded") as b:
        assert b.attrs["n_shards"] == 2 and a.n_seq == b.n_seq
        seqs = np.arange(a.n_seq)
        assert np.array_equal(a.split, b.split)
        assert np.array_equal(a.tokens(seqs), b.tokens(seqs))
        ca, cb = a.codes(seqs), b.codes(seqs)
        assert np.array_equal(ca.indptr, cb.indptr) and np.array_equal(ca.feature, cb.feature)
        assert np.array_equal(ca.value, cb.value)
        for name in ("count", "max", "hist"):
            assert np.array_equal(getattr(a.stats, name), getattr(b.stats, name)), name
        np.testing.assert_allclose(a.stats.sum, b.stats.sum, rtol=1e-6)
        np.testing.assert_array_equal(a.stats.quantiles, b.stats.quantiles)
        assert np.array_equal(a.top_positions, b.top_positions)
        assert np.array_equal(a.top_values, b.top_values)
        held = a.heldout_seqs[:3]
        assert np.array_equal(a.codes(held).feature, b.codes(held).feature)


def _train(out, *launcher: str) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    script = os.path.join(os.path.dirname(__file__), "ddp_translator.py")
    result = subprocess.run([*launcher, script, str(out)], capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]


def test_two_rank_translator_training_stays_in_sync_and_matches_single_process(tmp_path):
    from safetensors.torch import load_file

    _train(tmp_path / "single", sys.executable)
    _train(
        tmp_path / "ddp",
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_port",
        "29534",
    )
    for mode in ("aligned", "unsupervised"):
        # DistributedDataParallel: both ranks end with the same weights (model and discriminator)
        r0 = load_file(str(tmp_path / "ddp" / mode / "rank-0.safetensors"))
        r1 = load_file(str(tmp_path / "ddp" / mode / "rank-1.safetensors"))
        assert r0.keys() == r1.keys()
        for name in r0:
            assert torch.equal(r0[name], r1[name]), (mode, name)
        # ... which differ from the single process's (other batches), yet learn as well
        single = load_file(str(tmp_path / "single" / mode / "rank-0.safetensors"))
        assert any(not torch.equal(single[n], r0[n]) for n in r0)
    acc_single = json.loads((tmp_path / "single" / "aligned" / "result.json").read_text())["accuracy"]
    acc_ddp = json.loads((tmp_path / "ddp" / "aligned" / "result.json").read_text())["accuracy"]
    assert acc_single > 0.8 and abs(acc_single - acc_ddp) < 0.05, (acc_single, acc_ddp)
