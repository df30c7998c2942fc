"""WordNet categories over a small vocabulary: real WordNet 3.0, no mocks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from sae_translate.errors import UserError
from sae_translate.label.wordnet import (
    TOO_GENERAL,
    CategoryIndex,
    category_name,
    load_wordnet,
    normalise_token,
)

# Category words, their BPE-marked twins, function words, punctuation and unrelated filler.
VOCAB = (
    "apple pear banana plum cherry dog cat horse cow red blue green yellow monday tuesday friday "
    "paris london berlin hammer knife chair table house river mountain music book idea happy "
    "quickly run walk the of and to a in is it . , ! ? 's ing 123"
).split() + ["Ġapple", "Ġdog", "Ġred", "Ġthe", "Ġ."]
ID = {tok: i for i, tok in enumerate(VOCAB)}


@pytest.fixture(scope="module")
def wn():
    return load_wordnet()


@pytest.fixture(scope="module")
def index(wn) -> CategoryIndex:
    return CategoryIndex(VOCAB, wn)


def words(index: CategoryIndex, token_ids) -> set[str]:
    return {VOCAB[i] for i in token_ids}


def top(index: CategoryIndex, *tokens: str):
    found = index.propose({ID[t]: 1.0 for t in tokens})
    assert found, f"no category for {tokens}"
    return found[0]


def test_fruit(index):
    cat = top(index, "apple", "pear", "banana", "plum")
    assert cat.synset in {"fruit.n.01", "edible_fruit.n.01"} and cat.name in {"fruit", "edible fruit"}
    assert {"apple", "Ġapple", "pear", "banana", "plum"} <= words(index, cat.token_ids)
    assert not {"dog", "red", "hammer", "Ġdog"} & words(index, cat.token_ids)
    assert cat.coverage == pytest.approx(1.0) and 0 < cat.precision <= 1 and cat.score > 0


def test_animals(index):
    cat = top(index, "dog", "cat", "horse")
    assert cat.name in {"mammal", "animal"}
    assert {"dog", "Ġdog", "cat", "horse"} <= words(index, cat.token_ids)
    assert not {"apple", "red", "paris"} & words(index, cat.token_ids)


def test_colours_not_people(index):
    cat = top(index, "red", "blue", "green")
    assert cat.synset in {"color.n.01", "hue.n.01", "chromatic_color.n.01"}
    assert {"red", "Ġred", "blue", "green", "yellow"} <= words(index, cat.token_ids)
    assert not {"dog", "paris", "monday"} & words(index, cat.token_ids)
    assert all(c.synset != "person.n.01" for c in index.propose({ID[w]: 1.0 for w in ("red", "blue", "green")}))


def test_days_of_the_week(index):
    cat = top(index, "monday", "tuesday")
    assert cat.synset in {"weekday.n.01", "day_of_the_week.n.01"}
    assert {"monday", "tuesday", "friday"} <= words(index, cat.token_ids)
    assert not {"paris", "london", "apple"} & words(index, cat.token_ids)


def test_adjectives_reach_the_nouns_they_are_derived_with(wn):
    # WordNet has no hierarchy over adjectives: "happy" reaches "feeling" through happiness,
    # "rainy" reaches "weather" through rain
    vocab = "happy sad angry lonely rainy windy cloudy table chair dog apple house the of".split()
    index = CategoryIndex(vocab, wn)
    ids = {t: i for i, t in enumerate(vocab)}
    feeling = index.propose({ids[w]: 1.0 for w in ("happy", "sad", "angry", "lonely")})[0]
    assert feeling.name == "feeling" and {vocab[i] for i in feeling.token_ids} == {"happy", "sad", "angry", "lonely"}
    weather = index.propose({ids[w]: 1.0 for w in ("rainy", "windy", "cloudy")})[0]
    assert weather.name == "weather" and {vocab[i] for i in weather.token_ids} == {"rainy", "windy", "cloudy"}


def test_numerals_are_numbers(wn):
    vocab = "2 5 6 9 12 seven ten apple pear dog cat red blue house river music book idea chair table".split()
    index = CategoryIndex(vocab, wn)
    ids = {t: i for i, t in enumerate(vocab)}
    number = index.propose({ids[w]: 1.0 for w in ("2", "6", "9", "5")})[0]
    assert number.name == "number"
    assert {"2", "5", "6", "9", "12", "seven", "ten"} <= {vocab[i] for i in number.token_ids}
    assert not {"apple", "dog", "red"} & {vocab[i] for i in number.token_ids}


def test_function_words_and_punctuation_have_no_category(index):
    assert index.propose({ID[t]: 1.0 for t in ("the", ".", "Ġthe", "Ġ.", "of", "a", "in", "is", "123")}) == []
    assert index.propose({}) == []
    assert index.propose({ID["apple"]: 0.0, ID["pear"]: -1.0}) == []


@pytest.mark.parametrize(
    "token, word",
    [
        ("Ġapple", "apple"),
        ("▁Dog", "dog"),
        (" Paris", "paris"),
        ("apple", "apple"),
        ("well-being", "well-being"),
        (".", None),
        ("Ġthe", None),
        ("##ing", None),
        ("123", "123"),  # numerals are words WordNet may name
        ("Ġ7", "7"),
        ("12345", None),
        ("1.5", None),
        ("x", None),
        ("'s", None),
    ],
)
def test_normalise_token(token, word):
    assert normalise_token(token) == word


def test_extension_is_exactly_the_vocabulary_under_the_synset(index, wn):
    """Every member has a sense under the synset; every word whose main sense is under it is a
    member, in every spelling the vocabulary has; nothing else is."""
    fruit = wn.synset("fruit.n.01")
    ext = index.extension("fruit.n.01")

    def under(sense) -> bool:
        return sense == fruit or fruit in sense.closure(lambda s: s.hypernyms() + s.instance_hypernyms())

    for tid, tok in enumerate(VOCAB):
        word = normalise_token(tok)
        senses = wn.synsets(word) if word else []
        if tid in ext:
            assert any(under(s) for s in senses), tok
        main = [s for s in senses if s.pos() == "n"][:1]
        if main and under(main[0]) and wn.synsets(word)[0] == main[0]:
            assert tid in ext, tok
    assert {ID["apple"], ID["Ġapple"]} <= ext
    for cat in index.propose({ID[w]: 1.0 for w in ("apple", "pear", "banana", "plum")}):
        assert cat.token_ids == index.extension(cat.synset)


def test_extension_lookup(index):
    assert index.extension("volcano.n.01") == frozenset()  # a real synset, no vocabulary word under it
    with pytest.raises(UserError, match="unknown WordNet synset"):
        index.extension("no_such_thing.n.07")


def test_weights_as_dict_dense_and_sparse_agree(index):
    weights = {ID["dog"]: 1.0, ID["cat"]: 0.8, ID["horse"]: 0.6, ID["the"]: 0.3}
    dense = np.zeros(len(VOCAB))
    for i, w in weights.items():
        dense[i] = w
    expected = index.propose(weights)
    assert index.propose(dense) == expected
    assert index.propose(sp.csr_matrix(dense[None, :])) == expected
    assert index.propose(sp.csr_array(dense[:, None])) == expected
    assert index.propose({k: 10 * v for k, v in weights.items()}) == expected  # only ratios matter


def test_never_the_top_of_the_hierarchy(index):
    everything = {i: 1.0 for i in range(len(VOCAB))}
    for cat in index.propose(everything, top_n=50):
        assert cat.synset not in TOO_GENERAL
        assert len(cat.token_ids) <= 0.5 * index.n_words


def test_category_name(wn):
    assert category_name(wn.synset("body_part.n.01")) == "body part"
    assert category_name(wn.synset("calendar_month.n.01")) == "month"  # the lemma people use
    assert category_name(wn.synset("color.n.01")) == "color"
    assert category_name(wn.synset("ordinal_number.n.01")) == "ordinal number"  # not its abbreviation "no."
    assert category_name(wn.synset("cardinal.a.02")) == "number"  # the number words' adjective cluster


def test_a_category_shown_by_forms_of_one_of_its_words_is_named_by_it(index):
    # find.v.05 is "find, feel": shown by "felt" it reads "feel (felt)", not "find (felt)"
    assert index.lemma_of_forms("find.v.05", ["felt"]) == "feel"
    assert index.lemma_of_forms("find.v.05", ["feel", "felt"]) == "feel"
    assert index.lemma_of_forms("state.v.01", ["said"]) == "say"  # "state, say, tell"
    assert index.lemma_of_forms("travel.v.01", ["ran", "flew"]) is None  # members, not its words
    assert index.lemma_of_forms("travel.v.01", ["went", "ran"]) is None  # "go" is one of them only
    assert index.lemma_of_forms("find.v.05", []) is None


def test_missing_wordnet_is_a_user_error_with_the_install_hint(tmp_path):
    broken = tmp_path / "nltk_data"
    (broken / "corpora" / "wordnet").mkdir(parents=True)
    (broken / "corpora" / "wordnet" / "data.noun").write_text("")
    no_debian = tmp_path / "no-debian"
    no_debian.mkdir()
    with pytest.raises(UserError, match="apt-get install wordnet-base wordnet-sense-index") as err:
        load_wordnet(nltk_paths=[broken], debian_dir=no_debian, cache_dir=tmp_path / "cache")
    assert "nltk.downloader wordnet" in str(err.value) and "\n" not in str(err.value)


@pytest.mark.skipif(not Path("/usr/share/wordnet/data.noun").is_file(), reason="Debian's wordnet-base is not installed")
def test_broken_nltk_copy_falls_back_to_debian_files(tmp_path):
    broken = tmp_path / "nltk_data"
    (broken / "corpora" / "wordnet").mkdir(parents=True)
    cache = tmp_path / "cache"
    wn = load_wordnet(nltk_paths=[broken], cache_dir=cache)
    lexnames = (cache / "corpora" / "wordnet" / "lexnames").read_text().splitlines()
    assert len(lexnames) == 45 and lexnames[0].split() == ["00", "adj.all", "3"]
    # lexnames must be in WordNet's order: each synset names its file by number
    assert wn.synset("dog.n.01").lexname() == "noun.animal"
    assert wn.synset("run.v.01").lexname() == "verb.motion"
    assert wn.synset("monday.n.01").lexname() == "noun.time"
    assert not list((cache / "corpora").glob(".wordnet.*"))  # no half-written copy left behind
