"""train_sae: sae-lens's trainer on a local checkpoint and a local text corpus."""

from __future__ import annotations

import json

import pytest
import torch

from sae_translate.errors import UserError
from sae_translate.extract.sae_training import TrainSaeConfig, train_sae


def _cfg(world, out, **kw) -> TrainSaeConfig:
    base = dict(
        model=str(world.model_dir),
        hook="blocks.0.hook_resid_post",
        dataset=str(world.corpus_files[0]),
        out=out,
        d_sae=64,
        k=4,
        training_tokens=30_720,
        context_size=32,
        batch_size_tokens=1024,
        lr=3e-3,
        buffer_tokens=4096,
        n_batches_for_norm_estimate=4,
        eval_batches=2,
        device="cpu",
    )
    base.update(kw)
    return TrainSaeConfig(**base)


@pytest.mark.parametrize("architecture", ["topk", "standard"])
def test_trains_an_sae_that_sae_lens_loads_and_that_reconstructs(tiny_world, tmp_path, architecture):
    from sae_lens import SAE

    from sae_translate.extract.models import PROCESSING_DEFAULTS, load_model
    from sae_translate.extract.saes import model_kwargs_for

    out = tmp_path / "sae"
    assert train_sae(_cfg(tiny_world, out, architecture=architecture, l1_coefficient=1.0)) == out
    sae = SAE.load_from_disk(str(out), device="cpu")
    assert sae.cfg.d_sae == 64 and sae.cfg.metadata.hook_name == "blocks.0.hook_resid_post"
    metrics = json.loads((out / "eval.json").read_text())
    assert metrics["d_sae"] == 64 and 0 < metrics["alive_features"] <= 64
    if architecture == "topk":
        assert metrics["l0"] == pytest.approx(4.0)
    # the SAE records the model processing it was trained under, and reconstructs that model's
    # hook better than predicting the mean activation
    assert model_kwargs_for(sae) == PROCESSING_DEFAULTS
    model = load_model(str(tiny_world.model_dir), device="cpu", processing=model_kwargs_for(sae))
    text = tiny_world.corpus_files[0].read_text().splitlines()[-1]
    tokens = model.to_tokens(text, prepend_bos=False)[:, :32]
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens, names_filter=["blocks.0.hook_resid_post"])
        acts = cache["blocks.0.hook_resid_post"][0]
        recon = sae.decode(sae.encode(acts))
    error = (recon - acts).pow(2).sum()
    baseline = (acts - acts.mean(0)).pow(2).sum()
    assert error < 0.5 * baseline
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_retraining_replaces_the_previous_sae(tiny_world, tmp_path):
    out = tmp_path / "sae"
    train_sae(_cfg(tiny_world, out, d_sae=32))
    train_sae(_cfg(tiny_world, out, d_sae=48))
    assert json.loads((out / "cfg.json").read_text())["d_sae"] == 48
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sae"]


@pytest.mark.parametrize(
    "override, message",
    [
        ({"hook": "blocks.9.hook_resid_post"}, "no hook"),
        ({"architecture": "gated-ish"}, "unknown SAE architecture"),
        ({"training_tokens": 100}, "at least one batch"),
        ({"context_size": 4096}, "exceeds the model"),
        ({"dataset": "/nonexistent/corpus.txt"}, "not found"),
        ({"model": "/nonexistent/model-dir"}, "model"),
    ],
)
def test_bad_input_is_a_user_error_and_writes_nothing(tiny_world, tmp_path, override, message):
    out = tmp_path / "sae"
    with pytest.raises(UserError, match=message):
        train_sae(_cfg(tiny_world, out, **override))
    assert list(tmp_path.iterdir()) == []
