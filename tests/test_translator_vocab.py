"""Large vocabularies: sampled softmax, sliced decoding, CSLS by blocks, the statistics score without
a vocab x vocab matrix, and the sizes `train` picks per device."""

import json
import math
from dataclasses import asdict, replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sae_translate.bench.hmm import HMMConfig, make_data
from sae_translate.translator.anchor import csls, csls_nearest
from sae_translate.translator.config import DEVICE_DEFAULTS, TranslatorConfig, with_device_defaults
from sae_translate.translator.losses import NoiseConfig, add_noise, denoising_loss
from sae_translate.translator.model import ModelConfig, Translator
from sae_translate.translator.softmax import SampledSoftmax
from sae_translate.translator.train import Corpus, Trainer, _bigram_kl

torch.set_num_threads(1)


def zipf_sentences(n: int, length: int, vocab: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    p = 1 / np.arange(1, vocab + 1)
    return rng.choice(vocab, size=(n, length), p=p / p.sum())


def model_with_prior(vocab_a: int, vocab_b: int, length: int = 8) -> Translator:
    torch.manual_seed(0)
    model = Translator(ModelConfig(vocab_a=vocab_a, vocab_b=vocab_b, max_len=length, dim=16, heads=2, depth=1))
    model.set_prior(
        torch.bincount(torch.as_tensor(zipf_sentences(50, length, vocab_a, 1)).flatten(), minlength=vocab_a),
        torch.bincount(torch.as_tensor(zipf_sentences(50, length, vocab_b, 2)).flatten(), minlength=vocab_b),
    )
    return model


def mixed_batch(model: Translator, n: int = 6, length: int = 8, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    lang = torch.tensor([0, 1] * (n // 2))
    words = torch.stack([torch.randint(model.vocab_sizes[int(lng)], (length,), generator=g) for lng in lang])
    return model.to_joint(words, lang), lang


def full_cross_entropy(model: Translator, tokens, lang, tgt_lang, target) -> torch.Tensor:
    logits, *_ = model(tokens, lang, tgt_lang)
    return F.cross_entropy(logits.flatten(0, 1), target.flatten())


def hidden_states(model: Translator, tokens, lang, tgt_lang) -> torch.Tensor:
    latent, mask, _ = model.encode(tokens, lang)
    return model.decode_hidden(latent, mask, tgt_lang)


def test_sampled_softmax_over_every_word_is_the_full_cross_entropy():
    model = model_with_prior(30, 50)
    tokens, lang = mixed_batch(model)
    target, tgt_lang = mixed_batch(model, seed=1)
    tokens, lang = tokens.flip(0), lang.flip(0)  # every row translates into the other language
    exact = SampledSoftmax(model, above=1, negatives=50)  # as many negatives as words: the whole vocabulary
    assert not exact.sampled(0) and not exact.sampled(1)
    loss = exact.loss(hidden_states(model, tokens, lang, tgt_lang), tgt_lang, target)
    assert torch.allclose(loss, full_cross_entropy(model, tokens, lang, tgt_lang, target), atol=1e-5)


def test_sampled_softmax_estimates_the_full_cross_entropy_and_trains_the_whole_model():
    model = model_with_prior(300, 500)
    tokens, lang = mixed_batch(model)
    full = full_cross_entropy(model, tokens, lang, lang, tokens).item()
    sampled = SampledSoftmax(model, above=100, negatives=64)
    assert sampled.sampled(0) and sampled.sampled(1)
    hidden = hidden_states(model, tokens, lang, lang)
    g = torch.Generator().manual_seed(0)
    draws = [sampled.loss(hidden, lang, tokens, g).item() for _ in range(200)]
    # log of an unbiased estimate of the partition sum: close to the exact loss, below it on average (Jensen)
    assert abs(np.mean(draws) - full) < 0.05 * full
    assert np.mean(draws) < full + 0.01
    model.zero_grad()
    sampled.loss(hidden, lang, tokens, g).backward()
    assert model.encoder.token_emb.emb.weight.grad.abs().sum() > 0
    assert all(p.grad is not None for p in model.decoder.attn_layers.parameters())
    used = model.output_weight.grad.abs().sum(1) > 0
    assert 0 < used.sum() < len(used)  # only the targets and the sampled words are scored


def test_small_vocabularies_train_exactly_as_with_the_full_softmax(tmp_path):
    model = model_with_prior(30, 50)
    tokens, lang = mixed_batch(model)
    noise = NoiseConfig()
    loss, _ = denoising_loss(
        model, tokens, lang, noise, torch.Generator().manual_seed(3), SampledSoftmax(model, 4096, 1024)
    )
    noised = add_noise(tokens, noise, torch.Generator().manual_seed(3))
    assert torch.equal(loss, full_cross_entropy(model, noised, lang, lang, tokens))

    data = make_data(HMMConfig(states=3, vocab_a=4, vocab_b=5, sharpness=6, length=8, seed=0), n_train=200, n_test=10)
    a, b = Corpus(data.train_a, 4), Corpus(data.train_b, 5)
    tiny = dict(dim=16, heads=2, depth=1, decoder_depth=1, batch_size=8, progress=False, steps=5)
    logs = []
    for threshold in (4096, 0):
        trainer = Trainer(
            TranslatorConfig(sampled_softmax=threshold, dictionary_steps=2, **tiny), a, b, tmp_path / str(threshold)
        )
        logs.append([trainer.train_step() for _ in range(4)])
    assert logs[0] == logs[1]


def test_a_large_vocabulary_trains_on_the_sampled_softmax_and_decodes_on_its_own_words(tmp_path):
    a = Corpus(zipf_sentences(200, 8, 50, 0), 50)
    b = Corpus(zipf_sentences(200, 8, 5000, 1), 5000)
    cfg = TranslatorConfig(
        dim=16, heads=2, depth=1, decoder_depth=1, batch_size=8, steps=30, progress=False, anchor=False
    )
    trainer = Trainer(cfg, a, b, tmp_path)
    assert trainer.sampled.active and trainer.sampled.sampled(1) and not trainer.sampled.sampled(0)
    first = trainer.train_step()
    for _ in range(20):
        last = trainer.train_step()
    assert math.isfinite(last["loss"]) and last["denoise"] < first["denoise"]

    model = trainer.model.eval()
    tokens, lang = mixed_batch(model, n=4)
    logits, *_ = model(tokens, lang, 1 - lang)  # joint logits, the other language masked
    assert torch.equal(model.translate(tokens, lang, 1 - lang), logits.argmax(-1))
    words = model.to_words(tokens[:1], lang[:1])  # a row of language 0
    lo = model.offsets[1]
    expected = logits[:1, :, lo : lo + 5000].log_softmax(-1)
    assert torch.allclose(model.word_log_probs(words, 0, 1), expected, atol=1e-5)
    # the distributions at a few positions only (what translator labels read) are those positions'
    at = torch.tensor([[3, 0, 7, 3]])
    assert torch.allclose(model.word_probs_at(words, 0, 1, at), expected.exp()[0, at[0]][None], atol=1e-6)


def test_csls_by_blocks_finds_the_dense_nearest_neighbours():
    g = torch.Generator().manual_seed(0)
    xa, xb = torch.randn(37, 5, generator=g, dtype=torch.float64), torch.randn(23, 5, generator=g, dtype=torch.float64)
    dense = csls(xa, xb)
    for block in (1, 23 * 4, 10**6):  # one row at a time, several rows, all at once
        nearest_a, nearest_b = csls_nearest(xa, xb, block=block)
        assert torch.equal(nearest_a, dense.argmax(1))
        assert torch.equal(nearest_b, dense.argmax(0))


def test_statistics_score_without_a_vocabulary_squared_matrix_equals_the_dense_kl():
    vocab = 12
    real = torch.as_tensor(zipf_sentences(40, 9, vocab, 0))
    translated = torch.as_tensor(zipf_sentences(30, 9, vocab, 1))

    def dense(s: torch.Tensor) -> torch.Tensor:
        pairs = s[:, :-1].reshape(-1) * vocab + s[:, 1:].reshape(-1)
        counts = torch.bincount(pairs, minlength=vocab * vocab).double() + 0.5
        return counts / counts.sum()

    p, q = dense(real), dense(translated)
    assert _bigram_kl(real, translated, vocab) == pytest.approx(float((p * (p / q).log()).sum()), rel=1e-10)
    assert _bigram_kl(real, real, vocab) == pytest.approx(0.0, abs=1e-12)


def test_train_takes_the_devices_sizes_for_the_options_left_unset():
    cpu = with_device_defaults(TranslatorConfig(), "cpu", unset={"dim", "depth", "decoder_depth", "batch_size", "crop"})
    assert (cpu.dim, cpu.depth, cpu.decoder_depth, cpu.batch_size, cpu.crop) == (64, 1, 1, 32, 16)
    cuda = with_device_defaults(
        TranslatorConfig(), "cuda", unset={"dim", "depth", "decoder_depth", "batch_size", "crop"}
    )
    assert (cuda.dim, cuda.depth, cuda.decoder_depth, cuda.batch_size, cuda.crop) == (128, 2, 2, 256, 0)
    chosen = with_device_defaults(TranslatorConfig(dim=96, crop=32), "cpu", unset={"depth", "batch_size"})
    assert (chosen.dim, chosen.crop, chosen.depth, chosen.batch_size) == (96, 32, 1, 32)  # set options stay
    assert set(DEVICE_DEFAULTS) == {"cpu", "cuda"}


def test_training_says_its_settings_and_expected_time_once_the_first_steps_are_timed(tmp_path):
    a = Corpus(zipf_sentences(100, 8, 50, 0), 50)
    b = Corpus(zipf_sentences(100, 8, 5000, 1), 5000)
    cfg = TranslatorConfig(dim=16, heads=2, depth=1, decoder_depth=1, batch_size=4, crop=4, steps=8, progress=False)
    lines: list[str] = []
    Trainer(replace(cfg, anchor=False), a, b, tmp_path).fit(lines.append)
    assert len(lines) == 1
    assert lines[0].startswith("training on cpu: dim 16, 1+1 layers, batch 4, crop 4; vocabularies 50 and 5,000 words")
    assert "sampled softmax over 1,024 of the 5,000 words" in lines[0] and "4 steps expected to take" in lines[0]


def test_train_resumes_with_the_sizes_it_started_with_not_the_devices(tmp_path):
    from sae_translate.bench.synthetic import make_synthetic_run
    from sae_translate.translator.run import train_on_run
    from sae_translate.translator.train import checkpoint_meta

    syn = make_synthetic_run(tmp_path / "run", n_seq=60, ctx=16, d_sae=12, seed=3)
    syn.run.close()
    sizes = {"dim", "depth", "decoder_depth", "batch_size", "crop"}
    small = dict(heads=2, anchor=False, progress=False, eval_every=2, select_sentences=8, device="cpu")
    cfg = TranslatorConfig(steps=2, dim=16, depth=1, decoder_depth=1, batch_size=4, crop=8, **small)
    train_on_run(syn.run.dir, cfg, out=tmp_path / "out")
    # rerun with every size left unset: it continues the checkpoint (dim 16), not a CPU-default model
    path = train_on_run(syn.run.dir, TranslatorConfig(steps=4, **small), out=tmp_path / "out", unset=sizes)
    config = checkpoint_meta(path.parent / "last.safetensors")["config"]
    assert (config["dim"], config["batch_size"], config["crop"], config["steps"]) == (16, 4, 8, 4)


def test_train_on_other_languages_refuses_to_resume_and_keeps_the_translator_usable(tmp_path):
    from sae_translate.bench.synthetic import make_synthetic_run
    from sae_translate.errors import UserError
    from sae_translate.store.h5 import RunStore
    from sae_translate.translator.languages import LanguageConfig, build_languages
    from sae_translate.translator.run import load_languages, train_on_run

    syn = make_synthetic_run(tmp_path / "run", n_seq=60, ctx=16, d_sae=12, seed=3)
    syn.run.close()
    out = tmp_path / "out"
    small = dict(heads=2, anchor=False, progress=False, eval_every=2, select_sentences=8, device="cpu")
    cfg = TranslatorConfig(steps=2, dim=16, depth=1, decoder_depth=1, batch_size=4, crop=8, **small)
    train_on_run(syn.run.dir, cfg, out=out)
    written = (out / "languages.json").read_text()
    fewer = LanguageConfig(dense_threshold=0.05)  # drops most of the run's 12 features from the feature language
    with pytest.raises(UserError, match="trained on other languages"):
        train_on_run(syn.run.dir, replace(cfg, steps=4), fewer, out=out)
    assert (out / "languages.json").read_text() == written  # the checkpoint's languages are kept
    with RunStore.open(syn.run.dir) as run:
        assert load_languages(run, out).feature_vocab_size == 13
        # a languages.json that no longer fits the weights (as a failed resume used to leave it) is an
        # error, not labels of the wrong features
        other = build_languages(run, fewer)
        ids = {"feature_ids": other.feature_ids.tolist(), "token_ids": other.token_ids.tolist()}
        (out / "languages.json").write_text(json.dumps({"language": asdict(fewer), **ids}))
        with pytest.raises(UserError, match="does not match the translator"):
            load_languages(run, out)
        (out / "languages.json").write_text(written[:40])  # cut short
        with pytest.raises(UserError, match="languages.json is damaged"):
            load_languages(run, out)
