"""Closed word classes from the real Penn Treebank lexicon (Debian's liblingua-en-tagger-perl)."""

from __future__ import annotations

import numpy as np
import pytest

from sae_translate.errors import UserError
from sae_translate.label.describe import rule_evaluator
from sae_translate.label.describer import choose
from sae_translate.label.rules import Context, Rule, Selector
from sae_translate.label.word_classes import (
    PREFIX,
    WordClasses,
    class_name,
    lexicon_path,
    read_lexicon,
)

VOCAB = (
    "the a every his her their my could would might must can she he they and but or in of if "
    "apple run . , to Ġcould Ġhis"
).split()
ID = {w: i for i, w in enumerate(VOCAB)}


@pytest.fixture(scope="module")
def classes() -> WordClasses:
    return WordClasses(VOCAB)


def members(classes: WordClasses, name: str) -> set[str]:
    return {VOCAB[i] for i in classes.ids(PREFIX + name)}


def test_each_class_holds_exactly_its_function_words(classes):
    assert members(classes, "md") == {"could", "would", "might", "must", "can", "Ġcould"}
    assert members(classes, "prps") == {"his", "her", "their", "my", "Ġhis"}
    assert members(classes, "prp") == {"she", "he", "they"}  # "her": possessive in 75% of its uses
    assert members(classes, "det") == {"the", "a", "every"}
    assert members(classes, "cc") == {"and", "but", "or"}
    assert members(classes, "in") == {"in", "of", "if"}  # the Treebank tags subordinators IN too
    for name in ("md", "prps", "prp", "det", "cc", "in", "wh"):
        assert not members(classes, name) & {"apple", "run", ".", ",", "to"}


def test_a_class_is_proposed_for_two_or_more_of_its_words_with_most_of_the_weight(classes):
    modal = {ID["could"]: 1.0, ID["would"]: 0.8, ID["apple"]: 0.3}
    assert classes.propose(modal)[0] == PREFIX + "md"
    assert classes.propose({ID["could"]: 1.0, ID["apple"]: 0.5}) == []  # one word: a token set
    assert classes.propose({ID["could"]: 0.1, ID["would"]: 0.1, ID["apple"]: 5.0}) == []  # too little weight
    assert classes.propose({}) == []


def test_a_word_class_rule_selects_its_members_and_reads_as_a_noun():
    evaluator, categories = rule_evaluator(VOCAB)
    modal = Selector(synset=PREFIX + "md", name=class_name(PREFIX + "md"), examples=("could", "would"))
    tokens = np.array([[ID[w] for w in "she could run and he must run".split()]])
    picked = evaluator.select(Rule(target=modal), evaluator.view(tokens))[0]
    assert [VOCAB[t] for t, m in zip(tokens[0], picked) if m] == ["could", "must"]
    after = evaluator.select(Rule(context=Context("after", of=modal)), evaluator.view(tokens))[0]
    assert [VOCAB[t] for t, m in zip(tokens[0], after) if m] == ["run", "run"]
    assert Rule(target=modal).text() == "modal verb (could, would)"
    after_text = 'the word right after a modal verb such as "could" or "would"'
    assert Rule(context=Context("after", of=modal)).text() == after_text
    assert Rule.from_json(Rule(target=modal).to_json()) == Rule(target=modal)
    assert PREFIX + "md" in {s.synset for s in categories.propose({ID["could"]: 1.0, ID["might"]: 1.0})}


def test_within_the_tie_three_words_of_a_class_are_simpler_than_the_class():
    modal = Rule(target=Selector(synset=PREFIX + "md", name="modal verb"))
    words = Rule(target=Selector(tokens=("could", "would", "might")))
    assert choose({modal: 0.62, words: 0.60}, tie=0.05)[0][0] == words
    assert choose({modal: 0.70, words: 0.60}, tie=0.05)[0][0] == modal  # it wins by detecting better


def test_a_missing_or_empty_lexicon_is_a_user_error_with_the_install_hint(tmp_path):
    with pytest.raises(UserError, match="liblingua-en-tagger-perl"):
        read_lexicon(tmp_path / "words.yml")
    (tmp_path / "words.yml").write_text("--- #YAML:1.0\n")
    with pytest.raises(UserError, match="holds no tagged words"):
        read_lexicon(tmp_path / "words.yml")
    with pytest.raises(UserError, match="unknown word class"):
        class_name(PREFIX + "nn")
    assert read_lexicon(lexicon_path())["could"]["md"] > 0
