"""The embedder: ONNX graphs equal to sentence-transformers, length batching, the per-run cache."""

from __future__ import annotations

import numpy as np
import pytest

from sae_translate.score import embedder

TEXTS = [
    "red dog",
    "  padded text  ",
    "",
    "a much longer window of text with many words, commas and «marks» in it, long enough to need a wide batch",
    "Paris, London, city",
    "naïve café",
    "x",
] + [f"word{i} and word{i + 1}" for i in range(40)]


@pytest.fixture(scope="module")
def reference() -> np.ndarray:
    return embedder.load_encoder("cpu", "torch").encode(TEXTS)


def test_onnx_fp32_equals_sentence_transformers(reference):
    got = embedder.load_encoder("cpu", "onnx").encode(TEXTS)
    assert got.shape == (len(TEXTS), embedder.DIM) and got.dtype == np.float32
    np.testing.assert_allclose(got, reference, atol=2e-5)


def test_onnx_int8_stays_close(reference):
    got = embedder.load_encoder("cpu", "onnx-int8").encode(TEXTS)
    cos = (got * reference).sum(1)
    assert np.allclose(np.linalg.norm(got, axis=1), 1, atol=1e-4)
    assert cos.min() > 0.95 and np.median(cos) > 0.98
    # still tells texts apart: each text is nearest to its own reference embedding
    assert (np.argmax(got @ reference.T, axis=1) == np.arange(len(TEXTS))).all()


def test_names_are_embedded_exactly_whatever_they_are_batched_with(monkeypatch):
    """int8 activations are scaled per batch: a text's embedding moves with its batch mates. The
    backend name matching uses (exact_backend) gives a text the same embedding alone or batched."""
    text, mates = TEXTS[4], TEXTS[:4] + TEXTS[5:]
    int8 = embedder.load_encoder("cpu", "onnx-int8")
    moved = float(int8.encode([text])[0] @ int8.encode([text, *mates])[0])
    monkeypatch.delenv("SAE_TRANSLATE_EMBEDDER", raising=False)
    exact = embedder.load_encoder("cpu", embedder.exact_backend())
    kept = float(exact.encode([text])[0] @ exact.encode([text, *mates])[0])
    assert moved < 0.9995 < kept
    monkeypatch.setenv("SAE_TRANSLATE_EMBEDDER", "torch")
    assert embedder.exact_backend() == "torch"  # a chosen exact backend is kept


def test_length_batches_cover_every_index_within_budget():
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 300, 1000).tolist()
    batches = embedder.length_batches(lengths, 4096)
    assert sorted(i for b in batches for i in b) == list(range(1000))
    for b in batches:
        width = max(lengths[i] for i in b)
        assert len(b) == 1 or len(b) * width <= 4096
    # batches hold similar lengths: consecutive batches do not overlap in length
    spans = [(min(lengths[i] for i in b), max(lengths[i] for i in b)) for b in batches]
    assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:]))


def test_each_text_embedded_once_and_cached_on_disk(tmp_path, reference):
    cache = tmp_path / "embeddings"
    first = embedder.TextEmbedder("cpu", cache_dir=cache, backend="onnx")
    emb = first(TEXTS + TEXTS[:5])
    assert first.n_embedded == len(set(TEXTS))
    np.testing.assert_allclose(emb[: len(TEXTS)], reference, atol=2e-5)
    np.testing.assert_array_equal(emb[len(TEXTS) :], emb[:5])
    first(TEXTS[:3])
    assert first.n_embedded == len(set(TEXTS))  # nothing new
    shards = list((cache / "onnx").glob("shard-*.npz"))
    assert len(shards) == 1

    again = embedder.TextEmbedder("cpu", cache_dir=cache, backend="onnx")
    np.testing.assert_array_equal(again(TEXTS), emb[: len(TEXTS)])
    assert again.n_embedded == 0
    more = again(["a text never seen"])
    assert again.n_embedded == 1 and more.shape == (1, embedder.DIM)
    assert len(list((cache / "onnx").glob("shard-*.npz"))) == 2
    # another backend keeps its own embeddings
    other = embedder.TextEmbedder("cpu", cache_dir=cache, backend="onnx-int8")
    other(TEXTS[:2])
    assert other.n_embedded == 2


def test_a_corrupt_shard_is_re_embedded(tmp_path):
    cache = tmp_path / "embeddings"
    embedder.TextEmbedder("cpu", cache_dir=cache, backend="onnx")(["red dog"])
    (shard,) = (cache / "onnx").glob("shard-*.npz")
    shard.write_bytes(b"not a zip")
    again = embedder.TextEmbedder("cpu", cache_dir=cache, backend="onnx")
    again(["red dog"])
    assert again.n_embedded == 1


def test_unknown_backend_is_a_user_error():
    with pytest.raises(embedder.UserError, match="unknown embedder backend"):
        embedder.resolve_backend("cpu", "fast")


def test_an_unwritable_export_cache_is_a_one_line_user_error(tmp_path, monkeypatch):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker))  # the cache root cannot be created
    with pytest.raises(embedder.UserError) as err:
        embedder.exported_model(quantised=False)
    assert "\n" not in str(err.value) and "SAE_TRANSLATE_EMBEDDER=torch" in str(err.value)
