import itertools
import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from sae_translate.bench.hmm import HMMConfig, make_data
from sae_translate.errors import UserError
from sae_translate.translator.anchor import align_vocabularies
from sae_translate.translator.losses import (
    Discriminator,
    NoiseConfig,
    adversarial_loss,
    back_translation_loss,
    denoising_loss,
    dictionary_loss,
    discriminator_loss,
    local_shuffle,
    word_drop,
    word_mask,
)
from sae_translate.translator.model import (
    MASK,
    N_SPECIAL,
    PAD,
    ModelConfig,
    Translator,
    beam_search,
)
from sae_translate.translator.train import (
    Corpus,
    ParallelCorpus,
    Trainer,
    TranslatorConfig,
    load_translator,
    train_translator,
)

torch.set_num_threads(1)
TINY = dict(dim=16, heads=2, depth=1, decoder_depth=1, batch_size=8, progress=False, eval_every=1000)


@pytest.fixture(scope="module")
def hmm_data():
    return make_data(HMMConfig(states=3, vocab_a=4, vocab_b=5, sharpness=6, length=8, seed=0), n_train=300, n_test=20)


def corpora(data):
    return Corpus(data.train_a, 4), Corpus(data.train_b, 5)


def tiny_model(variational=False) -> Translator:
    torch.manual_seed(0)
    return Translator(
        ModelConfig(vocab_a=4, vocab_b=5, max_len=8, dim=16, heads=2, depth=1, decoder_depth=1, variational=variational)
    )


def batch(model: Translator, n=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    lang = torch.tensor([0, 1] * (n // 2))
    words = torch.stack([torch.randint(model.vocab_sizes[int(lng)], (8,), generator=g) for lng in lang])
    return model.to_joint(words, lang), lang


def grads(module: torch.nn.Module) -> list[torch.Tensor | None]:
    return [p.grad for p in module.parameters()]


def test_noise_keeps_words_and_bounds_their_moves():
    g = torch.Generator().manual_seed(0)
    tokens = torch.arange(N_SPECIAL, N_SPECIAL + 20).repeat(50, 1)
    dropped = word_drop(tokens, 0.3, g)
    for row in dropped:
        kept = row[row != PAD]
        assert len(kept) >= 1 and torch.all(kept[1:] > kept[:-1])  # order kept
        assert torch.all(row[len(kept) :] == PAD)  # padding only at the end
    assert 0.2 < (dropped == PAD).float().mean() < 0.4
    shuffled = local_shuffle(tokens, 3, g)
    assert torch.equal(shuffled.sort(1).values, tokens)  # a permutation of each row
    moved = (shuffled - N_SPECIAL) - torch.arange(20)
    assert moved.abs().max() <= 3 and (moved != 0).any()
    masked = word_mask(tokens, 0.5, g)
    assert 0.4 < (masked == MASK).float().mean() < 0.6
    assert torch.equal(masked[masked != MASK], tokens[masked != MASK])


def test_model_decodes_every_position_into_the_target_language_only():
    model = tiny_model()
    tokens, lang = batch(model)
    logits, latent, mask, kl = model(tokens, lang, 1 - lang)
    assert logits.shape == (6, 8, N_SPECIAL + 9) and latent.shape == (6, 8, 16)
    out = model.translate(tokens, lang, 1 - lang)
    words = model.to_words(out, 1 - lang)
    for row, lng in zip(words, lang):
        assert row.min() >= 0 and row.max() < model.vocab_sizes[1 - int(lng)]
    assert torch.isinf(logits[0, :, :N_SPECIAL]).all()


def test_prior_correction_decodes_the_direct_model_minus_a_share_of_the_word_prior():
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_a=4, vocab_b=5, max_len=8, dim=16, heads=2, depth=1, decoder_depth=1)
    plain, corrected = Translator(cfg), Translator(replace(cfg, prior_correction=0.5))
    corrected.load_state_dict(plain.state_dict())
    counts_b = torch.tensor([1000, 1, 1, 1, 1])  # one frequent word of language 1
    for model in (plain, corrected):
        model.set_prior(torch.ones(4, dtype=torch.long), counts_b)
    words = torch.randint(4, (64, 8), generator=torch.Generator().manual_seed(1))
    log_probs = plain.word_log_probs(words, 0, 1)
    prior = ((counts_b + 1.0) / (counts_b + 1.0).sum()).log()
    assert torch.equal(plain.translate_words(words, 0, 1), log_probs.argmax(-1))  # sampling and plain argmax unchanged
    assert torch.equal(corrected.translate_words(words, 0, 1), (log_probs - 0.5 * prior).argmax(-1))


def test_checkpoints_written_before_the_word_prior_still_load(tmp_path):
    from sae_translate.translator.train import save_checkpoint

    model = tiny_model()
    state = {k: v for k, v in model.state_dict().items() if k != "log_prior"}
    old_config = {k: v for k, v in model.cfg.to_dict().items() if k != "prior_correction"}
    path = save_checkpoint(tmp_path / "best.safetensors", state, {"model": old_config})
    loaded = load_translator(path)
    assert torch.equal(loaded.log_prior, torch.zeros_like(loaded.log_prior))
    tokens, lang = batch(model)
    assert torch.equal(loaded.translate(tokens, lang, 1 - lang), model.translate(tokens, lang, 1 - lang))


def test_denoising_and_back_translation_train_the_whole_model(hmm_data):
    model = tiny_model()
    tokens, lang = batch(model)
    loss, enc = denoising_loss(model, tokens, lang, NoiseConfig())
    loss.backward()
    assert loss.ndim == 0 and enc.latent.shape == (6, 8, 16)
    assert all(g is not None and g.abs().sum() > 0 for g in grads(model.encoder.attn_layers))
    assert all(g is not None for g in grads(model.decoder.attn_layers))
    model.zero_grad()
    dictionary = align_vocabularies(hmm_data.train_a, 4, hmm_data.train_b, 5)
    for source in (dictionary, None):
        loss, enc = back_translation_loss(model, tokens, lang, dictionary=source)
        assert torch.isfinite(loss)
        assert torch.equal(enc.lang, 1 - lang)  # the latent was encoded from the other language
        loss.backward()
        assert model.encoder.token_emb.emb.weight.grad.abs().sum() > 0
        model.zero_grad()
    loss, enc = dictionary_loss(model, tokens, lang, dictionary)
    loss.backward()
    assert torch.equal(enc.lang, lang) and torch.isfinite(loss)
    assert model.encoder.token_emb.emb.weight.grad.abs().sum() > 0


def test_discriminator_and_adversarial_gradients_stay_on_their_side():
    model, disc = tiny_model(), Discriminator(16, 32)
    tokens, lang = batch(model)
    _, enc = denoising_loss(model, tokens, lang, NoiseConfig())
    discriminator_loss(disc, enc).backward()
    assert all(g is None for g in grads(model))
    assert all(g is not None for g in grads(disc))
    disc.zero_grad()
    adversarial_loss(disc, enc).backward()
    assert model.encoder.token_emb.emb.weight.grad.abs().sum() > 0


def test_trainer_updates_touch_only_their_own_network(hmm_data, tmp_path):
    a, b = corpora(hmm_data)
    trainer = Trainer(TranslatorConfig(steps=20, adversarial=1.0, **TINY), a, b, tmp_path)
    disc_before = [p.detach().clone() for p in trainer.disc.parameters()]
    model_before = [p.detach().clone() for p in trainer.model.parameters()]
    logs, encoded = trainer.model_update()
    assert "adversarial" in logs
    assert all(torch.equal(x, p) for x, p in zip(disc_before, trainer.disc.parameters()))
    assert not all(torch.equal(x, p) for x, p in zip(model_before, trainer.model.parameters()))
    model_after = [p.detach().clone() for p in trainer.model.parameters()]
    first = trainer.discriminator_update(encoded)
    for _ in range(30):
        last = trainer.discriminator_update(encoded)
    assert all(torch.equal(x, p) for x, p in zip(model_after, trainer.model.parameters()))
    assert last < first - 0.05  # the discriminator learns to tell the languages apart


@pytest.mark.parametrize(
    "settings, idle",
    [
        (dict(anchor=False, bt_start=3), 0),  # back-translation not yet started: nothing to learn from
        (dict(dictionary_until=2, bt_start=4), 2),  # the anchor stops before back-translation starts
        (dict(dictionary_until=3, bt_start=3), None),  # one takes over where the other stops
        (dict(anchor=False, bt_start=3, denoise=1.0), None),
        (dict(anchor=False, bt_start=9), 0),
    ],
)
def test_a_step_without_any_active_loss_is_found_before_training(hmm_data, tmp_path, settings, idle):
    a, b = corpora(hmm_data)
    cfg = TranslatorConfig(**{"steps": 5, "denoise": 0.0, "adversarial": 0.0, **TINY, **settings})
    assert cfg.first_step_without_loss() == idle
    if idle is None:
        Trainer(cfg, a, b, tmp_path).model_update()
    else:
        with pytest.raises(UserError, match=f"no loss is active at step {idle}"):
            Trainer(cfg, a, b, tmp_path)


def test_variational_bottleneck_reports_a_kl_that_trains_mu_and_logvar():
    model = tiny_model(variational=True)
    tokens, lang = batch(model)
    _, _, _, kl = model(tokens, lang, lang)
    assert kl > 0
    kl.backward()
    assert model.to_logvar.weight.grad.abs().sum() > 0 and model.to_mu.weight.grad.abs().sum() > 0
    with pytest.raises(UserError):
        TranslatorConfig(kl=0.1).validate()


def test_resume_reproduces_the_next_step_exactly(hmm_data, tmp_path):
    a, b = corpora(hmm_data)
    cfg = TranslatorConfig(steps=10, adversarial=0.5, dictionary_steps=2, **TINY)
    straight = Trainer(cfg, a, b, tmp_path / "straight")
    interrupted = Trainer(cfg, a, b, tmp_path / "resumed")
    for _ in range(4):
        straight.train_step()
        interrupted.train_step()
    interrupted.save_last()
    resumed = Trainer(cfg, a, b, tmp_path / "resumed")
    assert resumed.step == 4
    expected, got = straight.train_step(), resumed.train_step()
    assert got == expected  # the same losses, bit for bit, past the dictionary phase


def test_resume_with_the_hmm_anchor_restores_its_fit_and_reproduces_the_next_step(hmm_data, tmp_path):
    a, b = corpora(hmm_data)
    cfg = TranslatorConfig(steps=10, anchor_model="hmm", anchor_states=3, dictionary_steps=6, **TINY)
    straight = Trainer(cfg, a, b, tmp_path / "straight")
    assert straight.dictionary is None and straight.anchored is not None
    interrupted = Trainer(cfg, a, b, tmp_path / "resumed")
    for _ in range(4):
        straight.train_step()
        interrupted.train_step()
    interrupted.save_last()
    resumed = Trainer(cfg, a, b, tmp_path / "resumed")  # no refit: the anchor comes from the checkpoint
    assert resumed.step == 4
    assert all(torch.equal(x, y) for x, y in zip(resumed.anchored, straight.anchored))
    expected, got = straight.train_step(), resumed.train_step()
    assert got == expected and "dictionary" in got  # the anchor's pseudo-pairs, bit for bit


class Untouchable:
    """A pairing that fails the test on any use."""

    def __getattr__(self, name):
        raise AssertionError(f"the pairing was read ({name})")

    def __len__(self):
        raise AssertionError("the pairing was read (len)")

    def __iter__(self):
        raise AssertionError("the pairing was read (iter)")

    def __getitem__(self, key):
        raise AssertionError("the pairing was read (item)")

    def __bool__(self):
        raise AssertionError("the pairing was read (bool)")


def test_unsupervised_mode_never_reads_the_pairing(hmm_data, tmp_path):
    a, b = corpora(hmm_data)
    path = train_translator(TranslatorConfig(steps=3, **TINY), a, b, tmp_path / "u", pairs=Untouchable())
    assert path.exists()
    with pytest.raises(AssertionError, match="pairing was read"):
        train_translator(TranslatorConfig(mode="aligned", steps=3, **TINY), a, b, tmp_path / "s", pairs=Untouchable())


def test_aligned_mode_learns_a_word_permutation_and_checkpoints_load(tmp_path):
    rng = np.random.default_rng(0)
    perm = np.array([3, 0, 4, 1, 2])
    sent_a = rng.integers(0, 5, size=(400, 6))
    pairs = ParallelCorpus(sent_a, perm[sent_a])
    cfg = TranslatorConfig(mode="aligned", steps=150, lr=3e-3, checkpoint_every=50, **{**TINY, "eval_every": 50})
    path = train_translator(cfg, Corpus(sent_a, 5), Corpus(perm[sent_a], 5), tmp_path, pairs)
    model = load_translator(path)
    test = torch.as_tensor(rng.integers(0, 5, size=(50, 6)))
    assert (model.translate_words(test, 0, 1).numpy() == perm[test.numpy()]).mean() > 0.95
    log = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [e["step"] for e in log if "supervised" in e] == list(range(1, 151))
    assert sum("select" in e for e in log) == 3


def test_mismatched_checkpoint_is_a_user_error(hmm_data, tmp_path):
    a, b = corpora(hmm_data)
    train_translator(TranslatorConfig(steps=2, **TINY), a, b, tmp_path)
    with pytest.raises(UserError, match="different model"):
        Trainer(TranslatorConfig(steps=4, **{**TINY, "dim": 32}), a, b, tmp_path)


def test_a_damaged_checkpoint_is_a_user_error(hmm_data, tmp_path):
    a, b = corpora(hmm_data)
    train_translator(TranslatorConfig(steps=2, **TINY), a, b, tmp_path)
    for name in ("best.safetensors", "last.safetensors"):  # cut short, as by a copy that did not finish
        path = tmp_path / name
        path.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(UserError, match="best.safetensors is damaged"):
        load_translator(tmp_path)
    with pytest.raises(UserError, match="last.safetensors is damaged"):
        Trainer(TranslatorConfig(steps=4, **TINY), a, b, tmp_path)  # the resume reads it


def test_beam_search_returns_the_exact_best_sequences():
    g = torch.Generator().manual_seed(0)
    log_probs = torch.randn(3, 4, generator=g).log_softmax(-1)
    brute = sorted(
        (
            (float(sum(log_probs[i, s] for i, s in enumerate(seq))), list(seq))
            for seq in itertools.product(range(4), repeat=3)
        ),
        reverse=True,
    )[:5]
    got = beam_search(log_probs, 5)
    assert [seq for seq, _ in got] == [seq for _, seq in brute]
    assert np.allclose([s for _, s in got], [s for s, _ in brute], atol=1e-5)
