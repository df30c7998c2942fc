"""Session fixtures shared by the test modules."""

from __future__ import annotations

from pathlib import Path

import pytest

from sae_translate.world.build import World, WorldBuildConfig, build_world

# tests on a built toy world are slow wherever they are (the world alone takes a minute)
SLOW_FIXTURES = {"tiny_world", "tiny_run"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that builds or uses the toy world `slow`, so `pytest -m "not slow"` skips them."""
    for item in items:
        if SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


def tiny_world_config(out: Path, **overrides) -> WorldBuildConfig:
    """The default concept world at test size: a 2-layer d_model-32 model and a 128-feature SAE,
    built in well under a minute on two cores."""
    settings = dict(
        out=out,
        n_tokens=40_000,
        d_model=32,
        n_layers=2,
        n_heads=2,
        ctx=32,
        lm_steps=150,
        lm_batch_size=32,
        d_sae=128,
        sae_k=4,
        sae_training_tokens=40_960,
        sae_batch_size_tokens=1024,
        progress=False,
    )
    settings.update(overrides)
    return WorldBuildConfig(**settings)


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory) -> World:
    """One tiny toy world for the whole session (model, tokenizer, SAE, corpus)."""
    return build_world(tiny_world_config(tmp_path_factory.mktemp("tiny-world") / "world"))


@pytest.fixture(scope="session")
def tiny_run(tiny_world, tmp_path_factory):
    """The tiny world extracted: 16k tokens of its corpus through its model and SAE."""
    from sae_translate.extract.extract import ExtractConfig, extract
    from sae_translate.store.h5 import RunStore

    out = tmp_path_factory.mktemp("tiny-run") / "run"
    extract(
        ExtractConfig(
            model=str(tiny_world.model_dir),
            sae=str(tiny_world.sae_dir),
            dataset=str(tiny_world.corpus_files[0]),
            out=str(out),
            tokens=16384,
            ctx=32,
            device="cpu",
            world=str(tiny_world.dir),
        )
    )
    with RunStore.open(out) as run:
        yield run
