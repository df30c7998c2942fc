"""The toy world: concept configs, the corpus and its ground truth, and a built world that the
field's libraries load."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import pytest
import torch

from sae_translate.errors import UserError
from sae_translate.world.build import build_world, load_world
from sae_translate.world.config import EOT, load_world_config
from sae_translate.world.corpus import generate_documents, tag_words
from tests.conftest import tiny_world_config

CUSTOM_TOML = """
name = "fruit-shop"

[[concepts]]
name = "fruit"
aliases = ["fruit"]
words = ["apple", "pear", "plum"]

[[concepts]]
name = "colour"
aliases = ["colour"]
words = ["red", "green"]

[[concepts]]
name = "red_things"
aliases = ["red thing"]
includes = ["colour"]
words = ["cherry"]
role = "none"

[[concepts]]
name = "after_colour"
aliases = ["coloured"]
after = "colour"

[[concepts]]
name = "before_fruit"
aliases = ["before fruit"]
before = "fruit"

[[concepts]]
name = "quoted"
aliases = ["quoted"]
inside = ["<", ">"]

[[concepts]]
name = "after_and"
aliases = ["after and"]
after = "and"

[[concepts]]
name = "first"
aliases = ["first word"]
sentence_start = true
"""


@pytest.fixture()
def custom_config(tmp_path):
    path = tmp_path / "shop.toml"
    path.write_text(CUSTOM_TOML)
    return load_world_config(path)


def test_default_config_has_many_lexical_and_contextual_concepts():
    cfg = load_world_config(None)
    assert len(cfg.concepts) >= 25
    kinds = {c.kind for c in cfg.concepts}
    assert kinds == {"lexical", "contextual"}
    rules = {c.rule.split()[0] for c in cfg.contextual}
    assert {"after", "inside", "sentence"} <= rules
    assert all(c.aliases for c in cfg.concepts)
    # superconcepts carry the words of the concepts they include
    place = cfg.concept("place")
    assert set(cfg.concept("city").words) <= set(place.words)


def test_custom_config_any_concepts_generate_and_tag(custom_config):
    cfg = custom_config
    assert cfg.name == "fruit-shop"
    assert set(cfg.concept("red_things").words) == {"cherry", "red", "green"}
    docs = generate_documents(cfg, 3000, seed=1)
    seen = set().union(*(s for d in docs for s in d.concepts))
    # rule templates make every concept occur, even ones the generic grammar never spells out
    assert {"fruit", "colour", "after_colour", "before_fruit", "quoted", "after_and", "first"} <= seen
    for doc in docs:
        assert tag_words(cfg, doc.words) == list(doc.concepts)


def test_the_second_benchmark_world_shares_no_concept_or_word_list_with_the_default():
    """benchmarks/worlds/market.toml checks that methods generalise beyond the default world: it
    parses, every one of its concepts occurs in what it generates, and its lexical concepts are
    new (no name or member list shared with the default beyond numbers and person names)."""
    path = Path(__file__).parent.parent / "benchmarks" / "worlds" / "market.toml"
    market, default = load_world_config(path), load_world_config(None)
    docs = generate_documents(market, 2000, seed=0)
    seen = set().union(*(s for d in docs for s in d.concepts))
    assert {c.name for c in market.concepts} <= seen
    shared = {c.name for c in market.lexical} & {c.name for c in default.lexical}
    assert shared <= {"number", "person_name", "food"}
    for name in shared:
        assert set(market.concept(name).words) != set(default.concept(name).words)
    for doc in docs[:200]:
        assert tag_words(market, doc.words) == list(doc.concepts)


@pytest.mark.parametrize(
    "name, lexical",
    [
        ("grammar", {"modal", "pronoun", "possessive", "prep", "conj"}),  # function words filling slots
        ("diary", {"mood", "weather", "digit", "weekday"}),  # adjectives and digits
    ],
)
def test_a_benchmark_world_generates_every_concept_it_names(name, lexical):
    """benchmarks/worlds/NAME.toml parses, every concept occurs in what it generates, and the tags
    of its documents are those of their words."""
    world = load_world_config(Path(__file__).parent.parent / "benchmarks" / "worlds" / f"{name}.toml")
    docs = generate_documents(world, 2000, seed=0)
    assert {c.name for c in world.concepts} <= set().union(*(s for d in docs for s in d.concepts))
    assert lexical <= {c.name for c in world.lexical}
    for doc in docs[:200]:
        assert tag_words(world, doc.words) == list(doc.concepts)


def test_same_slot_repeats_the_previous_slots_concept(tmp_path):
    path = tmp_path / "pairs.toml"
    path.write_text(
        "[grammar]\ntemplates = ['the {noun} and the {same} .']\n"
        "[[concepts]]\nname = 'fruit'\nwords = ['apple', 'pear', 'plum']\n"
        "[[concepts]]\nname = 'tool'\nwords = ['saw', 'axe', 'adze']\n"
    )
    cfg = load_world_config(path)
    docs = generate_documents(cfg, 2000, seed=0)
    pairs = [(d.words[i + 1], d.words[i + 4]) for d in docs for i, w in enumerate(d.words) if w == "the" and i % 6 == 0]
    assert len(pairs) > 100
    for first, second in pairs:
        assert first != second
        assert tag_words(cfg, [first]) == tag_words(cfg, [second])


def test_json_config_round_trips(tmp_path):
    cfg = load_world_config(None)
    path = tmp_path / "world.json"
    path.write_text(json.dumps(cfg.to_dict(), ensure_ascii=False))
    again = load_world_config(path)
    assert again == cfg and again.digest() == cfg.digest()


@pytest.mark.parametrize(
    "text, message",
    [
        ("concepts = [", "not valid"),
        ("name = 'x'", "non-empty `concepts`"),
        ("[[concepts]]\nname = 'a'\nkind = 'lexical'\n", "needs a non-empty `words`"),
        ("[[concepts]]\nname = 'a'\nwords = ['x']\n[[concepts]]\nname = 'a'\nwords = ['y']\n", "duplicate"),
        (
            "[[concepts]]\nname = 'a'\nwords = ['x']\n[[concepts]]\nname = 'b'\nkind = 'contextual'\n",
            "exactly one rule",
        ),
        ("[[concepts]]\nname = 'a'\nwords = ['x y']\n", "single whitespace-free word"),
        ("[[concepts]]\nname = 'a'\nwords = ['x']\ncolour = 'red'\n", "unknown keys"),
        ("[[concepts]]\nname = 'a'\nwords = ['x']\n[grammar]\ntemplates = ['the {noun} is here']\n", "must end with"),
        ("[[concepts]]\nname = 'a'\nwords = ['x']\n[grammar]\ntemplates = ['the {concept:b} .']\n", "unknown concept"),
        ("[[concepts]]\nname = 'a'\nwords = ['x']\n[grammar]\ntemplates = ['the {same} .']\n", "earlier slot"),
        (
            "[[concepts]]\nname = 'a'\nafter = 'b'\n[[concepts]]\nname = 'b'\nafter = 'a'\n"
            "[[concepts]]\nname = 'c'\nwords = ['x']\n",
            "cycle",
        ),
    ],
)
def test_bad_config_is_one_line_user_error(tmp_path, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(UserError, match=message) as err:
        load_world_config(path)
    assert "\n" not in str(err.value)


def test_missing_config_file_is_user_error(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_world_config(tmp_path / "nope.toml")


def test_generator_is_deterministic_and_one_word_per_token():
    cfg = load_world_config(None)
    a = generate_documents(cfg, 5000, seed=3)
    b = generate_documents(cfg, 5000, seed=3)
    c = generate_documents(cfg, 5000, seed=4)
    assert [d.text for d in a] == [d.text for d in b]
    assert [d.text for d in a] != [d.text for d in c]
    for doc in a:
        assert doc.text.split() == list(doc.words)
        assert len(doc.concepts) == len(doc.words)


def test_tagger_agrees_with_the_generator_on_documents_and_cut_windows():
    cfg = load_world_config(None)
    docs = generate_documents(cfg, 20_000, seed=0)
    for doc in docs:
        assert tag_words(cfg, doc.words) == list(doc.concepts)
    # a stream of documents separated by <|endoftext|>, cut into windows anywhere, as extract stores it
    words: list[str] = []
    truth: list[frozenset[str]] = []
    for doc in docs:
        words += list(doc.words) + [EOT]
        truth += list(doc.concepts) + [frozenset()]
    rng = random.Random(0)
    # only the first word of a window lacks the context a rule reads (the word before it)
    neighbour_rules = {c.name for c in cfg.contextual if c.after or c.sentence_start}
    checked = 0
    for _ in range(300):
        start = rng.randrange(0, len(words) - 40)
        window = words[start : start + 32]
        tags = tag_words(cfg, window)
        assert tags[0] - neighbour_rules == truth[start] - neighbour_rules
        for i in range(1, 31):
            assert tags[i] == truth[start + i], (window, i)
            checked += 1
    assert checked == 300 * 30


# ------------------------------------------------------------------ the built world


def test_tiny_world_layout_and_manifest(tiny_world):
    w = tiny_world
    assert (w.dir / "world.json").is_file()
    assert w.hook == "blocks.1.hook_resid_post"
    corpus = w.corpus_files[0].read_text().splitlines()
    assert len(corpus) == w.manifest["sizes"]["documents"]
    assert w.config == load_world_config(None)
    assert w.manifest["sae"]["alive_features"] > 0
    # the ground truth of a stored window is recomputed from its words
    words = corpus[0].split()
    assert w.tag_words(words) == tag_words(w.config, words)
    assert not [p for p in w.dir.parent.iterdir() if p.name.startswith(".")]  # no temporary leftovers


def test_tiny_world_loads_with_transformers_transformer_lens_and_sae_lens(tiny_world):
    from sae_lens import SAE
    from transformers import AutoTokenizer, GPTNeoXForCausalLM

    from sae_translate.extract.models import load_model
    from sae_translate.extract.saes import model_kwargs_for

    tokenizer = AutoTokenizer.from_pretrained(tiny_world.model_dir)
    text = tiny_world.corpus_files[0].read_text().splitlines()[0]
    ids = tokenizer(text)["input_ids"]
    assert len(ids) == len(text.split())  # one token per word
    assert tokenizer.unk_token_id not in ids
    assert tokenizer.decode(ids) == text
    assert tokenizer.convert_ids_to_tokens(tokenizer.eos_token_id) == EOT == tokenizer.bos_token

    sae = SAE.load_from_disk(str(tiny_world.sae_dir), device="cpu")
    hf = GPTNeoXForCausalLM.from_pretrained(tiny_world.model_dir).eval()
    tl = load_model(str(tiny_world.model_dir), device="cpu", processing=model_kwargs_for(sae))
    tokens = torch.tensor([ids[:32]])
    with torch.no_grad():
        hf_logits = hf(tokens).logits
        tl_logits = tl(tokens)
    # TransformerLens centres the unembedding, so logits agree up to a per-position constant
    centre = lambda x: x - x.mean(-1, keepdim=True)  # noqa: E731
    assert torch.allclose(centre(hf_logits), centre(tl_logits), atol=1e-4)

    assert sae.cfg.d_in == tl.cfg.d_model
    assert sae.cfg.metadata.hook_name == tiny_world.hook
    with torch.no_grad():
        _, cache = tl.run_with_cache(tokens, names_filter=[tiny_world.hook])
        codes = sae.encode(cache[tiny_world.hook])
    assert (codes > 0).sum(-1).float().mean() > 0


def test_build_reuses_a_matching_world_and_rebuilds_a_changed_one(tiny_world, tmp_path):
    out = tmp_path / "world"
    shutil.copytree(tiny_world.dir, out)
    model_file = out / "model" / "model.safetensors"
    before = model_file.stat().st_mtime_ns
    same = build_world(tiny_world_config(out))
    assert same.manifest == tiny_world.manifest
    assert model_file.stat().st_mtime_ns == before
    # a different concept config is a different world: it is rebuilt in place
    custom = tmp_path / "shop.toml"
    custom.write_text(CUSTOM_TOML)
    other = build_world(
        tiny_world_config(out, config=str(custom), n_tokens=12_000, lm_steps=20, sae_training_tokens=8192)
    )
    assert other.config.name == "fruit-shop"
    assert load_world(out).manifest["config_digest"] == other.config.digest() != tiny_world.config.digest()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shop.toml", "world"]


def test_failed_build_leaves_nothing_behind(tmp_path):
    out = tmp_path / "world"
    with pytest.raises(UserError, match="no hook"):
        build_world(tiny_world_config(out, n_tokens=12_000, lm_steps=5, hook="blocks.7.hook_resid_post"))
    assert list(tmp_path.iterdir()) == []


def test_load_world_rejects_a_directory_without_manifest(tmp_path):
    with pytest.raises(UserError, match="not a toy world"):
        load_world(tmp_path)
