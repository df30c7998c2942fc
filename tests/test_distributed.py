"""torchrun-sharded extract: two gloo processes on CPU give exactly the single-process run."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np

from sae_translate.store.h5 import RunStore


def _extract(world, out, *launcher: str) -> None:
    args = ["extract", "--model", str(world.model_dir), "--sae", str(world.sae_dir),
            "--dataset", str(world.corpus_files[0]), "--out", str(out), "--tokens", "8192", "--ctx", "32",
            "--chunk-seqs", "16", "--device", "cpu"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    result = subprocess.run([*launcher, "-m", "sae_translate", *args], capture_output=True, text=True, env=env,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]


def test_two_rank_extract_equals_single_process(tiny_world, tmp_path):
    _extract(tiny_world, tmp_path / "single", sys.executable)
    _extract(tiny_world, tmp_path / "sharded", sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
             "--master_port", "29533")
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
