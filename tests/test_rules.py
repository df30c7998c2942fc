"""Rules select exactly the tokens they state, render as plain English and survive JSON."""

from __future__ import annotations

import os
import sys
from dataclasses import replace
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from sae_translate.label.describe import rule_evaluator
from sae_translate.label.describer import (
    Describer,
    DescriberConfig,
    Evidence,
    RuleFit,
    TrainSample,
    choose,
    tie_margin,
)
from sae_translate.label.rules import Context, Rule, RuleEvaluator, Selector, mark_name

VOCAB = [
    "<|endoftext|>",
    "the",
    "cat",
    "dog",
    "two",
    "three",
    "(",
    ")",
    "“",
    "”",
    ".",
    "saw",
    "red",
    "apple",
    "pear",
    "banana",
    "plum",
    "horse",
    "!",
]
ID = {w: i for i, w in enumerate(VOCAB)}


def bare_sample(evaluator: RuleEvaluator) -> Any:
    """A train sample with no text: the describer's word handling without corpus counts (its
    neighbours imply no word, no word shares another's distribution, its contexts hold none)."""
    return SimpleNamespace(
        evaluator=evaluator,
        implied_by_neighbours=lambda evidence, n: (np.zeros(0, np.int64), np.zeros(0)),
        similar_words=lambda words, k: [(np.zeros(0, np.int64), np.zeros(0)) for _ in words],
        context_counts=lambda context: np.zeros(len(evaluator.vocab)),
    )


def ids(text: str) -> np.ndarray:
    return np.array([[ID[w] for w in text.split()]])


def picked(rule: Rule, text: str, evaluator: RuleEvaluator | None = None) -> list[str]:
    evaluator = evaluator or RuleEvaluator(VOCAB)
    tokens = ids(text)
    mask = evaluator.select(rule, evaluator.view(tokens))[0]
    return [f"{i}:{VOCAB[t]}" for i, (t, m) in enumerate(zip(tokens[0], mask)) if m]


def test_token_set_selects_its_tokens_anywhere():
    rule = Rule.tokens(["cat", " Dog"])  # normalised: stripped, lower-cased
    assert rule.target == Selector(tokens=("cat", "dog"))
    assert picked(rule, "the cat saw the dog . cat") == ["1:cat", "4:dog", "6:cat"]


def test_after_and_before_a_token_set():
    after_two = Rule(context=Context("after", of=Selector(tokens=("two", "three"))))
    assert picked(after_two, "saw two cat . three dog two (") == ["2:cat", "5:dog"]  # "(" is no word
    before_dot = Rule(context=Context("before", of=Selector(tokens=("the",))))
    assert picked(before_dot, "saw the cat saw the dog") == ["0:saw", "3:saw"]


def test_inside_a_delimiter_pair_including_a_span_cut_at_the_window_start():
    inside = Rule(context=Context("inside", delimiters=("(", ")")))
    assert picked(inside, "the ( red cat ) saw the dog") == ["2:red", "3:cat"]
    assert picked(inside, "red cat ) saw ( dog") == ["0:red", "1:cat", "5:dog"]  # unclosed span runs on
    quotes = Rule(context=Context("inside", delimiters=("“", "”")))
    assert picked(quotes, "saw “ the cat ” dog <|endoftext|> “ red") == ["2:the", "3:cat", "8:red"]


def test_straight_quotes_close_after_punctuation():
    vocab = VOCAB + ['"', ","]
    ev = RuleEvaluator(vocab)
    q, comma = len(VOCAB), len(VOCAB) + 1
    inside = Rule(context=Context("inside", delimiters=('"', '"')))
    # red cat , " the dog . " saw " plum ! "  -- cut inside a quote: the first mark closes
    tokens = np.array(
        [[ID["red"], ID["cat"], comma, q, ID["the"], ID["dog"], ID["."], q, ID["saw"], q, ID["plum"], ID["!"], q]]
    )
    mask = ev.select(inside, ev.view(tokens))[0]
    assert np.flatnonzero(mask).tolist() == [0, 1, 10]


def test_a_document_boundary_closes_any_span():
    inside = Rule(context=Context("inside", delimiters=("(", ")")))
    assert picked(inside, "( red <|endoftext|> cat )") == ["1:red"]


def test_sentence_start_and_end():
    start = Rule(context=Context("sentence_start"))
    end = Rule(context=Context("sentence_end"))
    text = "the cat saw . the dog ! red <|endoftext|> plum ."
    assert picked(start, text) == ["4:the", "7:red", "9:plum"]  # position 0 is not known to start one
    assert picked(end, text) == ["2:saw", "5:dog", "9:plum"]


def test_target_in_context():
    rule = Rule(target=Selector(tokens=("cat", "dog")), context=Context("inside", delimiters=("(", ")")))
    assert picked(rule, "cat ( red cat dog ) dog") == ["3:cat", "4:dog"]


def test_category_selects_the_words_under_its_synset():
    evaluator, categories = rule_evaluator(VOCAB)
    weights = {ID[w]: 1.0 for w in ("apple", "pear", "banana", "plum")}
    best = categories.propose(weights, 1)[0]
    rule = Rule(target=best)
    chosen = picked(rule, "the apple saw red pear . banana dog plum horse", evaluator)
    assert chosen == ["1:apple", "4:pear", "6:banana", "8:plum"]
    after = Rule(context=Context("after", of=best))
    assert picked(after, "apple dog pear . cat", evaluator) == ["1:dog"]


@pytest.mark.parametrize(
    "rule, text",
    [
        (Rule.tokens(["apple", "pear"]), "apple, pear"),
        # marks standing alone go by their names, in a context they read as themselves
        (Rule.tokens([".", "?"]), 'full stop ".", question mark "?"'),
        (Rule.tokens(["(", "bad", "”"]), 'opening parenthesis "(", bad, closing quotation mark "”"'),
        (Rule(context=Context("before", of=Selector(tokens=(")",)))), 'the word right before ")"'),
        (Rule.tokens(['"']), "quotation mark '\"'"),
        (Rule(context=Context("after", of=Selector(tokens=('"', "so")))), 'the word right after \'"\' or "so"'),
        (Rule(Selector(synset="fruit.n.01", name="fruit")), "fruit"),
        (Rule(Selector(synset="fruit.n.01", name="fruit", examples=("apple", "pear"))), "fruit (apple, pear)"),
        (
            Rule(context=Context("after", of=Selector(synset="number.n.02", name="number"))),
            "the word right after a number",
        ),
        (Rule(context=Context("before", of=Selector(tokens=("the",)))), 'the word right before "the"'),
        (
            Rule(context=Context("after", of=Selector(tokens=("two", "three", "four")))),
            'the word right after "two", "three" or "four"',
        ),
        (Rule(context=Context("inside", delimiters=("(", ")"))), "a word inside parentheses"),
        (Rule(context=Context("inside", delimiters=("“", "”"))), "a word inside quotes"),
        (Rule(context=Context("sentence_start")), "the first word of a sentence"),
        (Rule(context=Context("sentence_end")), "the last word of a sentence"),
        (
            Rule(Selector(synset="animal.n.01", name="animal"), Context("inside", delimiters=("(", ")"))),
            "an animal inside parentheses",
        ),
        (Rule(Selector(synset="travel.v.01", name="travel")), "travel"),
        (
            Rule(
                Selector(synset="young.a.01", name="young"),
                Context("after", of=Selector(synset="see.v.01", name="see")),
            ),
            'a "young" adjective right after a "see" verb',
        ),
        (
            Rule(context=Context("before", of=Selector(synset="young.a.01", name="young", examples=("little",)))),
            'the word right before a "young" adjective such as "little"',
        ),
        (  # the number words' adjective cluster goes by a noun
            Rule(context=Context("before", of=Selector(synset="cardinal.a.02", name="number", examples=("two",)))),
            'the word right before a number such as "two"',
        ),
        (
            Rule(context=Context("after", of=Selector(synset="number.n.02", name="number", examples=("two", "six")))),
            'the word right after a number such as "two" or "six"',
        ),
    ],
)
def test_rendering_and_json_round_trip(rule, text):
    assert rule.text() == text
    assert Rule.from_json(rule.to_json()) == rule


def test_a_context_label_shows_example_words_and_stays_the_same_rule():
    after = Context("after", of=Selector(tokens=("at", "in")))
    shown = Rule(context=after, examples=("the", "first"))
    assert shown.text() == 'the word right after "at" or "in", e.g. "the" or "first"'
    assert shown == Rule(context=after)  # examples are text only
    back = Rule.from_json(shown.to_json())
    assert back.examples == ("the", "first") and back.text() == shown.text()


def test_a_category_label_shows_the_members_its_evidence_weighs_most():
    """The examples beside a category are its members in the evidence's order at the firing
    position, never a non-member or the category's own name; the rule stays the category."""
    evaluator, categories = rule_evaluator(VOCAB)
    fruit = categories.propose({ID[w]: 1.0 for w in ("apple", "pear", "banana", "plum")}, 1)[0]
    describer = Describer(bare_sample(evaluator), categories, DescriberConfig(n_examples=2))
    evidence = evidence_at({0: ["plum", "dog", "apple", "pear"]})
    shown = describer.with_examples(Rule(target=fruit), evidence)
    assert shown == Rule(target=fruit) and shown.target is not None
    assert shown.target.examples == ("plum", "apple")
    assert shown.text() == f"{fruit.name} (plum, apple)"
    assert Rule.from_json(shown.to_json()).text() == shown.text()
    # a context's neighbour category shows the members the evidence weighs where it looks
    after = describer.with_examples(Rule(context=Context("after", of=fruit)), evidence_at({-1: ["pear", "cat"]}))
    assert after.text() == f'the word right after a {fruit.name} such as "pear"'
    # a target in a context shows its own members, not its neighbour's
    in_context = Rule(fruit, Context("after", of=Selector(synset=fruit.synset, name=fruit.name)))
    shown = describer.with_examples(in_context, evidence)
    assert shown.text() == f'a {fruit.name} such as "plum" or "apple" right after a {fruit.name}'


def test_a_context_label_names_the_category_most_of_its_firings_are_in():
    """'the word right after "the", mostly a fruit such as ...': the category of the words the
    evidence puts in the context's place, named only where more than half of the feature's firings
    that the rule selects are in it. The rule stays the context alone."""
    evaluator, categories = rule_evaluator(VOCAB)
    sample = bare_sample(evaluator)
    sample.context_counts = lambda context: np.ones(len(evaluator.vocab))  # the context holds every word
    describer = Describer(sample, categories, DescriberConfig())
    evidence = evidence_at({0: ["apple", "pear", "plum", "dog"]})
    after_the = Rule(context=Context("after", of=Selector(tokens=("the",))))

    def firings(text: str):  # the feature's firing cells: every token of the text
        return evaluator.view(ids(text))

    shown = describer.with_examples(after_the, evidence, firings("the apple the pear the plum the dog"))
    assert shown == after_the and shown.mostly is not None
    fruit = shown.mostly
    assert {"apple", "pear", "plum"} <= {evaluator.text[i] for i in evaluator.selector_ids(fruit).tolist()}
    assert shown.text() == f'the word right after "the", mostly a {fruit.name} such as "apple", "pear" or "plum"'
    back = Rule.from_json(shown.to_json())
    assert back.mostly == fruit and back.text() == shown.text()
    # one firing in four on a fruit: no category is named, the examples are shown as before
    shown = describer.with_examples(after_the, evidence, firings("the apple the two the three the red"))
    assert shown.mostly is None and shown.text().startswith('the word right after "the", e.g. ')


def test_a_context_label_whose_words_are_mostly_one_category_states_it_where_it_fits_as_well():
    """'the word right after "the", mostly a fruit' becomes 'a fruit such as ... right after "the"'
    where that rule's fidelity is within the tie of the best, and stays where it is not, where no
    category is named, or with the option off; so does a context most of whose firings are on one
    of its example words ('"saw" right after "the"')."""
    evaluator, categories = rule_evaluator(VOCAB)
    sample = bare_sample(evaluator)
    sample.context_counts = lambda context: np.ones(len(evaluator.vocab))
    fidelity = {"context": 0.80, "in_context": 0.79}  # each kind's train fidelity, as TrainSample.fit gives it
    sample.fit = lambda feature, rule, cells=None: RuleFit(fidelity[rule.kind], lift=3.0, recall=1.0)
    describer = Describer(sample, categories, DescriberConfig())
    evidence = evidence_at({0: ["apple", "pear", "plum", "dog"]})
    after_the = Rule(context=Context("after", of=Selector(tokens=("the",))))
    cells = evaluator.view(ids("the apple the pear the plum the dog"))
    shown = describer.with_examples(after_the, evidence, cells)
    assert shown.mostly is not None

    rule, fit = describer.stated(0, shown, 0.80, 0.78, cells)
    assert rule == Rule(target=shown.mostly, context=after_the.context) and fit == 0.79
    assert rule.text() == f'a {shown.mostly.name} such as "apple", "pear" or "plum" right after "the"'
    assert Describer(sample, categories, DescriberConfig(mostly_stated=False)).stated(0, shown, 0.80, 0.78, cells) == (
        shown,
        0.80,
    )
    fidelity["in_context"] = 0.70  # below the tie: the more general context rule stays
    assert describer.stated(0, shown, 0.80, 0.78, cells) == (shown, 0.80)
    fidelity["in_context"] = 0.79
    mixed = evaluator.view(ids("the apple the two the three the red"))
    plain = describer.with_examples(after_the, evidence, mixed)
    assert plain.mostly is None and describer.stated(0, plain, 0.80, 0.78, mixed) == (plain, 0.80)
    # one word holding most of the firings in the context is stated the same way
    examples = replace(after_the, examples=("cat", "saw"))
    rule, _ = describer.stated(0, examples, 0.80, 0.78, evaluator.view(ids("the saw the saw the saw the cat")))
    assert rule == Rule(Selector(tokens=("saw",)), after_the.context) and rule.text() == '"saw" right after "the"'
    assert (
        describer.stated(0, examples, 0.80, 0.78, evaluator.view(ids("the saw the cat the dog the red")))[0] == examples
    )


def test_evidence_mixing_two_classes_proposes_a_category_of_each():
    """Evidence heavy on fruit and light on animals: the best category covers the fruit; the
    residual round proposes one for the animals it leaves out, which the first round, ranking
    the categories of all the words together, does not."""
    evaluator, categories = rule_evaluator(VOCAB)
    weights = {"apple": 3.0, "pear": 3.0, "banana": 3.0, "plum": 3.0, "dog": 1.0, "horse": 1.0, "cat": 1.0}
    ids, w = np.array([ID[k] for k in weights]), np.array(list(weights.values()))
    describer = Describer(bare_sample(evaluator), categories, DescriberConfig(n_categories=1))

    def covers(sel: Selector, words: tuple[str, ...]) -> bool:
        return set(words) <= {evaluator.text[i] for i in evaluator.selector_ids(sel).tolist()}

    fruit, animals = ("apple", "pear", "banana", "plum"), ("dog", "horse", "cat")
    first = describer.category_proposals(ids, w, residual=0)
    assert len(first) == 1 and covers(first[0], fruit) and not covers(first[0], animals)
    both = describer.category_proposals(ids, w, residual=1)
    assert both[0] == first[0] and len(both) == 2
    assert covers(both[1], animals) and not covers(both[1], fruit)


def test_rule_kinds():
    assert Rule.tokens(["a"]).kind == "token_set"
    assert Rule(Selector(synset="fruit.n.01", name="fruit")).kind == "category"
    assert Rule(context=Context("sentence_start")).kind == "context"
    assert Rule(Selector(tokens=("a",)), Context("sentence_start")).kind == "in_context"
    with pytest.raises(ValueError):
        Rule()
    with pytest.raises(ValueError):
        Context("after")


def test_choose_prefers_the_simpler_rule_within_the_tie():
    simple = Rule.tokens(["the"])
    longer = Rule(Selector(tokens=("the",)), Context("after", of=Selector(tokens=("saw", "took"))))
    assert choose({simple: 0.60, longer: 0.62}, tie=0.05)[0][0] == simple
    assert choose({simple: 0.50, longer: 0.62}, tie=0.05)[0][0] == longer


def test_a_rare_feature_gets_its_most_faithful_rule_not_the_simplest():
    """Every rule of a rare feature has a small F1; the margin within which the simpler rule wins
    is capped at a share of the best, so a rule at a tiny fraction of the best fidelity never wins
    for being simple. At ordinary fidelities it is the one-standard-error rule."""
    cfg = DescriberConfig()
    simplest = Rule(context=Context("sentence_end"))
    faithful = Rule(context=Context("before", of=Selector(tokens=("after",))))
    assert simplest.complexity < faithful.complexity
    assert choose({simplest: 0.0001, faithful: 0.008}, tie_margin(0.008, 5, cfg))[0][0] == faithful
    assert tie_margin(0.6, 64, cfg) == pytest.approx(np.sqrt(0.6 * 0.4 / 64))
    assert choose({simplest: 0.57, faithful: 0.62}, tie_margin(0.62, 64, cfg))[0][0] == simplest


def test_evidence_is_contrast_to_the_base_rate():
    base = np.array([0.5, 0.3, 0.1, 0.1])
    ev = Evidence.from_distributions([np.arange(4)], [np.array([0.5, 0.1, 0.3, 0.1])], [base])
    # "0" is as frequent as its base rate: no evidence; "2" is three times its base rate
    assert ev.ids[0].tolist() == [2]


def evidence_at(marks: dict[int, list[str]]) -> Evidence:
    """Evidence naming ``marks[offset]`` at those offsets and nothing elsewhere."""
    offsets = range(-3, 4)
    ids = [np.array([ID[w] for w in marks.get(d, [])], dtype=np.int64) for d in offsets]
    return Evidence(ids, [np.ones(len(i)) for i in ids], [np.full(len(i), 3.0) for i in ids])


@pytest.mark.parametrize(
    "marks, proposed",
    [
        ({0: ["cat"]}, set()),
        ({0: ["cat"], -2: ["("]}, {"inside ( )"}),
        ({0: ["cat"], 3: [")"]}, {"inside ( )"}),
        ({0: ["cat"], -1: ["“"], 1: ["."]}, {"inside “ ”", "sentence_end"}),
        ({0: ["cat"], -1: ["."]}, {"sentence_start"}),
        ({0: ["cat"], -2: ["."], 2: ["!"]}, set()),  # a sentence mark further away says nothing
        ({0: ["cat"], -1: ["<|endoftext|>"]}, {"sentence_start"}),
    ],
)
def test_structural_contexts_are_proposed_where_the_evidence_shows_their_marks(marks, proposed):
    """A structural context is a candidate only where its marks stand out around the firing
    position, so a feature whose evidence proposes nothing faithful does not fall back to the
    corpus's most common structure."""
    describer = Describer(bare_sample(RuleEvaluator(VOCAB)), None, DescriberConfig())
    found = {
        f"inside {' '.join(c.delimiters)}" if c.kind == "inside" else c.kind
        for c in describer.supported_structure(evidence_at(marks))
    }
    assert found == proposed
    rules = describer.candidates(evidence_at(marks))
    assert {r.context.kind for r in rules if r.context is not None and r.context.kind not in ("after", "before")} == {
        p.split()[0] for p in proposed
    }


def test_a_mark_near_its_base_rate_proposes_no_structure():
    describer = Describer(bare_sample(RuleEvaluator(VOCAB)), None, DescriberConfig(min_lift=2.0))
    weak = evidence_at({0: ["cat"], 1: ["."]})
    weak.lift[4][:] = 1.5  # "." right after, but only 1.5 times as often as anywhere
    assert describer.supported_structure(weak) == []
    weak.lift[4][:] = 2.5
    assert [c.kind for c in describer.supported_structure(weak)] == ["sentence_end"]


def test_describer_finds_a_context_rule_from_corpus_evidence(tiny_run):
    """On the tiny world's run, some feature is best described by a context rule, and a
    feature that fires on one token gets that token."""
    from sae_translate.label.describer import TrainSample

    run = tiny_run
    evaluator, categories = rule_evaluator(run.vocab)
    features = run.alive.astype(np.int64)
    cfg = DescriberConfig()
    sample = TrainSample(run, evaluator, features, cfg)
    describer = Describer(sample, categories, cfg)
    found = {f: describer.describe(f, sample.evidence(f)) for f in features.tolist()}
    kinds = {d.rule.kind for d in found.values() if d is not None}
    assert kinds & {"context", "in_context"} and kinds & {"token_set", "category"}
    assert all(0 <= d.fidelity <= 1 for d in found.values() if d is not None)
    best = max((d for d in found.values() if d is not None), key=lambda d: d.fidelity)
    assert best.fidelity > 0.5


def test_train_sample_positions_are_where_each_feature_fires(tiny_run):
    """Every sampled firing position, including the top positions added for features too rare in
    the random sample, is a token where the feature fires; the positions evidence is read from and
    those fidelity is measured on are apart (cross-fitting) wherever there are enough to split."""
    run = tiny_run
    evaluator, _ = rule_evaluator(run.vocab)
    features = run.alive.astype(np.int64)
    sample = TrainSample(run, evaluator, features, DescriberConfig(sample_tokens=2048, min_firings=8))
    assert len(sample.seqs) > sample.n_sample_rows  # some rare feature brought its top sequences
    ctx = run.ctx
    both = [sample.positions[f] for f in features.tolist()] + [sample.evidence_positions[f] for f in features.tolist()]
    rows = np.unique(np.concatenate(both) // ctx)
    fires = {int(r): run.dense(sample.seqs[[r]])[0] > 0 for r in rows.tolist()}  # [ctx, d_sae] per row
    split = 0
    for f in features.tolist():
        fidelity, evidence = sample.positions[f], sample.evidence_positions[f]
        assert len(fidelity) > 0 and len(evidence) > 0
        for flat in (fidelity, evidence):
            assert all(fires[int(p // ctx)][p % ctx, f] for p in flat.tolist()), f
        if len(fidelity) + len(evidence) >= 5:
            assert not np.intersect1d(fidelity, evidence).size, f
            split += 1
    assert split > len(features) // 2


def test_neighbour_evidence_implies_the_word_between(tiny_run):
    """Evidence of one word right before the firing position implies the words that follow it in
    the train sample, ranked by their PMI weight there (counted here from the raw tokens)."""
    run = tiny_run
    evaluator, _ = rule_evaluator(run.vocab)
    sample = TrainSample(run, evaluator, run.alive.astype(np.int64), DescriberConfig())
    tokens = sample.view.tokens[: sample.n_sample_rows]
    prev, word = tokens[:, :-1].reshape(-1), tokens[:, 1:].reshape(-1)
    ok = (prev >= 0) & evaluator.is_word[np.where(word >= 0, word, len(evaluator.vocab))]
    u = int(np.bincount(prev[ok]).argmax())  # the commonest token before a word
    after_u = np.bincount(word[ok & (prev == u)], minlength=len(evaluator.vocab)) / (ok & (prev == u)).sum()
    base = sample.unigram_rate
    weight = np.where(after_u > base, after_u * np.log(np.maximum(after_u, 1e-12) / np.maximum(base, 1e-12)), 0)
    empty = (np.zeros(0, np.int64), np.zeros(0))
    evidence = Evidence(
        ids=[np.array([u]) if d == -1 else empty[0] for d in range(-3, 4)],
        weights=[np.ones(1) if d == -1 else empty[1] for d in range(-3, 4)],
        lift=[np.ones(1) if d == -1 else empty[1] for d in range(-3, 4)],
    )
    ids, weights = sample.implied_by_neighbours(evidence, 16)
    assert ids[0] == int(weight.argmax())
    assert len(ids) == min(64, int((weight > 0).sum()))  # Evidence keeps the 64 strongest
    assert np.allclose(weights, weight[ids])
    assert (np.diff(weights) <= 1e-12).all()
    # without neighbour evidence nothing is implied
    none = Evidence([empty[0]] * 7, [empty[1]] * 7, [empty[1]] * 7)
    assert len(sample.implied_by_neighbours(none, 16)[0]) == 0
    # a context rule's examples are words its evidence puts there that the context does hold
    describer = Describer(sample, None, DescriberConfig())
    after_u = Context("after", of=Selector(tokens=(evaluator.text[u],)))
    never = int(np.flatnonzero(sample.context_counts(after_u) == 0)[0])
    at_ids = np.array([never, int(weight.argmax())])
    evidence.ids[3], evidence.weights[3], evidence.lift[3] = at_ids, np.array([5.0, 1.0]), np.ones(2)
    shown = describer.with_examples(Rule(context=after_u), evidence)
    assert shown.examples and shown.examples[0] == evaluator.text[int(weight.argmax())]
    assert evaluator.text[never] not in shown.examples


def never_fired(run, evaluator: RuleEvaluator, sample: TrainSample, f: int) -> list[int]:
    """Ids of the words feature ``f`` never fires on at its sampled firing positions."""
    fired_on = set(sample.view.tokens[sample.positions[f] // run.ctx, sample.positions[f] % run.ctx].tolist())
    return [i for i in np.flatnonzero(evaluator.is_word).tolist() if i not in fired_on]


def ranked_evidence(at: dict[int, np.ndarray]) -> Evidence:
    """Evidence naming the words ``at[offset]`` at those offsets, weighted in their order, and
    nothing elsewhere."""
    empty = np.zeros(0, np.int64)
    ids = [np.asarray(at.get(d, empty), dtype=np.int64) for d in range(-3, 4)]
    return Evidence(ids, [np.linspace(len(i), 1, len(i)) for i in ids], [np.full(len(i), 10.0) for i in ids])


def most_word_like_feature(run) -> tuple:
    """(evaluator, sample, feature, its own word id, the rule naming that word, ids of words it never
    fires on): the feature whose top evidence word alone fits its firing best."""
    evaluator, _ = rule_evaluator(run.vocab)
    features = run.alive.astype(np.int64)
    sample = TrainSample(run, evaluator, features, DescriberConfig())
    word = {f: Rule(target=Selector(tokens=(evaluator.text[int(sample.evidence(f).ids[3][0])],))) for f in features}
    f = max(features.tolist(), key=lambda f: sample.fidelity(f, word[f]))
    own = int(sample.evidence(f).ids[3][0])
    return evaluator, sample, f, own, word[f], never_fired(run, evaluator, sample, f)


def test_a_faithful_word_below_the_top_of_the_evidence_is_found_alone(tiny_run):
    """Evidence that ranks a feature's own word fifth, behind words the feature never fires on,
    still gives that word as the label: the words below the top are tried alone, and fidelity on
    train windows picks (tried only as the top 1..3 together, it would be missed)."""
    _, sample, f, own, word, never = most_word_like_feature(tiny_run)
    evidence = ranked_evidence({0: np.array(never[:4] + [own])})
    found = Describer(sample, None, DescriberConfig()).describe(f, evidence)
    assert found is not None and found.rule == word
    assert sample.fidelity(f, word) > 0.3
    top_only = Describer(sample, None, DescriberConfig(single_words=0)).describe(f, evidence)
    assert top_only is not None and top_only.rule != word


def test_the_feature_word_read_one_position_off_is_still_found(tiny_run):
    """A dictionary induced without pairs is identifiable only up to a shift (text read one
    position off has the statistics of text), so a translator can put a feature's own word beside
    the firing position and words the feature never fires on at it. The describer still labels the
    feature with its word, from either side: the neighbours' top words are tried as the firing
    word too, and fidelity on train windows picks. Without that it cannot."""
    _, sample, f, own, word, never = most_word_like_feature(tiny_run)
    assert sample.fidelity(f, word) > 0.3
    for off in (-1, 1):
        evidence = ranked_evidence({0: np.array(never[:3]), off: np.array([own])})
        found = Describer(sample, None, DescriberConfig()).describe(f, evidence)
        assert found is not None and found.rule == word, off
        unshifted = Describer(sample, None, DescriberConfig(shifted_words=0)).describe(f, evidence)
        assert unshifted is None or unshifted.rule != word, off


def test_the_feature_word_is_found_from_a_word_of_the_same_distribution(tiny_run):
    """An unsupervised translator identifies a word only up to the words that share its
    distribution. Given only such a word, one the feature never fires on, the describer still
    labels the feature with its own word: each top evidence word brings the words of most similar
    distribution in the train sample (PPMI neighbour vectors), and fidelity picks. Without that it
    cannot."""
    evaluator, sample, f, own, word, never = most_word_like_feature(tiny_run)
    near, sims = sample.similar_words(np.array([own]), 8)[0]
    assert own not in near.tolist() and np.all(np.diff(sims) <= 0) and np.all((sims > 0) & (sims <= 1 + 1e-9))
    confused = next(i for i in near.tolist() if i in never)
    evidence = ranked_evidence({0: np.array([confused])})
    found = Describer(sample, None, DescriberConfig()).describe(f, evidence)
    assert found is not None and found.rule.target is not None
    assert evaluator.text[own] in found.rule.target.tokens
    alone = Describer(sample, None, DescriberConfig(similar_words=0)).describe(f, evidence)
    assert alone is None or alone.rule.target is None or evaluator.text[own] not in alone.rule.target.tokens


def test_a_word_set_is_grown_by_fidelity_beyond_the_evidence_order(tiny_run):
    """A feature that fires on two words, with evidence ranking the second below words it never
    fires on: no candidate read off the evidence names both, and the describer still labels it
    with both, grown from the best word one word at a time while fidelity rises."""
    evaluator, _ = rule_evaluator(tiny_run.vocab)
    features = tiny_run.alive.astype(np.int64)
    sample = TrainSample(tiny_run, evaluator, features, DescriberConfig())

    def one(w: str) -> Rule:
        return Rule(target=Selector(tokens=(w,)))

    best: tuple[float, int, str, str] = (0.0, -1, "", "")
    for f in features.tolist():
        words = list(dict.fromkeys(evaluator.text[i] for i in sample.evidence(f).ids[3][:6].tolist()))
        if len(words) < 2:
            continue
        b = max(words, key=lambda w: sample.fidelity(f, one(w)))
        for w in words:
            gain = sample.fidelity(f, Rule(target=Selector(tokens=(b, w)))) - sample.fidelity(f, one(b))
            if w != b and gain > best[0]:
                best = (gain, f, b, w)
    gain, f, b, w = best
    assert gain > 0.1
    never = never_fired(tiny_run, evaluator, sample, f)[:3]
    evidence = ranked_evidence({0: np.array([evaluator.text.index(b), *never, evaluator.text.index(w)])})
    describer = Describer(sample, None, DescriberConfig(similar_words=0))
    proposed = [r.target.tokens for r in describer.candidates(evidence) if r.target is not None]
    assert not any(b in t and w in t for t in proposed)
    found = describer.describe(f, evidence)
    assert found is not None and found.rule.target is not None and {b, w} <= set(found.rule.target.tokens)
    assert found.fidelity >= sample.fidelity(f, Rule(target=Selector(tokens=(b, w)))) - 1e-9


def test_a_rule_that_selects_as_often_where_the_feature_is_silent_loses(tiny_run):
    """Lift is recall over the share of train tokens a rule selects (counted here from the view).
    Rules of lift below ``min_rule_lift`` lose to any that reaches it: with fidelity weighted all
    but entirely to recall, a bar that half the features' chosen rules miss leaves below it only
    features none of whose proposed rules reaches it."""
    run = tiny_run
    evaluator, _ = rule_evaluator(run.vocab)
    features = run.alive.astype(np.int64)
    recall_only = DescriberConfig(criterion="f_beta", fidelity_beta=50.0)
    sample = TrainSample(run, evaluator, features, recall_only)
    n = sample.n_sample_rows
    view = evaluator.view(np.asarray(sample.view.tokens[:n]))
    f = int(features[0])
    rule = Rule(target=Selector(tokens=(evaluator.text[int(sample.evidence(f).ids[3][0])],)))
    recall = float(evaluator.select(rule, sample.firing_cells(f)).mean())
    share = evaluator.select(rule, view).sum() / (n * run.ctx)
    assert sample.fit(f, rule).lift == pytest.approx(recall / share)

    def chosen_lifts(cfg: DescriberConfig) -> dict[int, float]:
        describer = Describer(sample, None, cfg)
        found = {f: describer.describe(f, sample.evidence(f)) for f in features.tolist()}
        return {f: sample.fit(f, d.rule).lift for f, d in found.items() if d is not None}

    unfiltered = chosen_lifts(replace(recall_only, min_rule_lift=0.0))
    bar = float(np.median(list(unfiltered.values())))  # a bar half the features' chosen rules miss
    filtered = chosen_lifts(replace(recall_only, min_rule_lift=bar))
    below = [f for f, lift in filtered.items() if lift < bar]
    assert len(below) < sum(lift < bar for lift in unfiltered.values())
    describer = Describer(sample, None, recall_only)
    for f in below:  # only where no proposed rule reaches the bar
        candidates = describer.candidates(sample.evidence(f))
        assert all(sample.fit(f, r).lift < bar for r in candidates)


def test_detection_fidelity_keeps_the_word_where_f_beta_trades_its_firings_for_precision(tiny_run):
    """A feature that fires on a word and more often after one neighbour: F-beta (precision-weighted
    here, as it is for any beta where the feature fires on few of the word's tokens) prefers the
    word in that context although it drops a third or more of the firings; the detection criterion,
    recall minus the chance of selecting something in a silent window, keeps the word. Its value
    is exactly TPR - FPR over 16-token windows where that is positive."""
    run = tiny_run
    evaluator, _ = rule_evaluator(run.vocab)
    features = run.alive.astype(np.int64)
    f_beta = TrainSample(run, evaluator, features, DescriberConfig(criterion="f_beta", fidelity_beta=0.5))
    detection = TrainSample(run, evaluator, features, DescriberConfig())
    found = 0
    for f in features.tolist():
        word = Selector(tokens=(evaluator.text[int(f_beta.evidence(f).ids[3][0])],))
        alone = f_beta.fit(f, Rule(target=word))
        silent_selected = max(0.0, f_beta.selected(Rule(target=word)) - alone.recall * f_beta.count[f])
        silent = silent_selected / (f_beta.n_tokens - f_beta.count[f])
        fpr = 1 - (1 - silent) ** 16
        j = detection.fit(f, Rule(target=word)).fidelity
        if alone.recall > fpr:
            assert j == pytest.approx(alone.recall - fpr)
        else:  # no better than chance: below every rule that is, ordered by F-beta
            assert 0 <= j <= 1e-3
        if alone.recall < 0.9 or fpr > 0.3:
            continue
        for x in np.flatnonzero(f_beta.neighbour["after"]).tolist():
            rule = Rule(word, Context("after", Selector(tokens=(evaluator.text[x],))))
            narrow = f_beta.fit(f, rule)
            if narrow.fidelity > alone.fidelity and narrow.recall <= 0.6 * alone.recall:
                found += 1
                assert detection.fit(f, Rule(target=word)).fidelity > detection.fit(f, rule).fidelity
    assert found > 0


def test_a_word_in_a_context_must_hold_most_of_the_words_firings(tiny_run):
    """A target in a context that beats the target alone on fidelity but holds under
    ``min_context_share`` of the feature's firings on it (the feature fires on the word in other
    contexts too) is not chosen; without that condition it is."""
    run = tiny_run
    evaluator, _ = rule_evaluator(run.vocab)
    features = run.alive.astype(np.int64)
    cfg = DescriberConfig(criterion="f_beta", fidelity_beta=0.5)  # precision-weighted: narrow rules win more often
    sample = TrainSample(run, evaluator, features, cfg)
    narrow = []  # (feature, word, neighbour) where "word right after neighbour" fits better but holds little
    for f in features.tolist():
        word = int(sample.evidence(f).ids[3][0])
        alone = sample.fit(f, Rule(target=Selector(tokens=(evaluator.text[word],))))
        for x in np.flatnonzero(sample.neighbour["after"]).tolist():
            rule = Rule(
                Selector(tokens=(evaluator.text[word],)), Context("after", Selector(tokens=(evaluator.text[x],)))
            )
            fit = sample.fit(f, rule)
            if fit.fidelity > alone.fidelity > 0 and fit.recall < cfg.min_context_share * alone.recall:
                narrow.append((f, word, x, rule))
    assert narrow
    empty = (np.zeros(0, np.int64), np.zeros(0))
    picked_unchecked = 0
    for f, word, x, rule in narrow:
        at = {0: np.array([word]), -1: np.array([x])}
        evidence = Evidence(
            ids=[at.get(d, empty[0]) for d in range(-3, 4)],
            weights=[np.ones(1) if d in at else empty[1] for d in range(-3, 4)],
            lift=[np.ones(1) if d in at else empty[1] for d in range(-3, 4)],
        )
        checked = Describer(sample, None, cfg).describe(f, evidence)
        assert checked is not None and checked.rule != rule
        unchecked = Describer(sample, None, replace(cfg, min_context_share=0.0)).describe(f, evidence)
        picked_unchecked += unchecked is not None and unchecked.rule == rule
    assert picked_unchecked > 0


def test_a_neighbour_word_that_adds_nothing_is_dropped_from_a_context_rule(tiny_run):
    """Neighbour sets are the evidence's top words in order: where a word that never stands next
    to the feature's firings ranks first, the only faithful candidate lists it beside the word
    that carries the rule, and the describer drops it (the fidelity stays within the tie)."""
    run = tiny_run
    evaluator, _ = rule_evaluator(run.vocab)
    features = run.alive.astype(np.int64)
    sample = TrainSample(run, evaluator, features, DescriberConfig())
    ctx = run.ctx

    def before(*words: str) -> Rule:
        return Rule(context=Context("before", Selector(tokens=words)))

    def after_firing(f: int) -> np.ndarray:
        pos = sample.positions[f]
        rows, cols = pos // ctx, pos % ctx
        ok = cols + 1 < ctx
        return np.unique(sample.view.tokens[rows[ok], cols[ok] + 1])

    next_words = {f: sample.evidence(f).ids[4] for f in features.tolist()}  # offset +1
    candidates = [(f, evaluator.text[int(w[0])]) for f, w in next_words.items() if len(w)]
    f, carrier = max(candidates, key=lambda c: sample.fidelity(c[0], before(c[1])))
    assert sample.fidelity(f, before(carrier)) > 0.3
    tokens = np.asarray(sample.view.tokens[: sample.n_sample_rows]).ravel()
    seen = np.bincount(tokens[tokens >= 0], minlength=len(evaluator.is_word))
    unused = [
        i
        for i in np.flatnonzero(evaluator.is_word & (seen > 0)).tolist()
        if i not in after_firing(f).tolist() and evaluator.text[i] != carrier
    ]
    junk = evaluator.text[min(unused, key=lambda i: seen[i])]  # the rarest word never after a firing
    empty = (np.zeros(0, np.int64), np.zeros(0))
    at_next = np.array([evaluator.token_ids((junk,))[0], evaluator.token_ids((carrier,))[0]])
    evidence = Evidence(
        ids=[at_next if d == 1 else empty[0] for d in range(-3, 4)],
        weights=[np.array([2.0, 1.0]) if d == 1 else empty[1] for d in range(-3, 4)],
        lift=[np.ones(2) if d == 1 else empty[1] for d in range(-3, 4)],
    )
    # no words implied between neighbours, nor the neighbours' words tried as the firing word
    describer = Describer(sample, None, DescriberConfig(neighbour_words=0, shifted_words=0))
    assert describer.candidates(evidence) == [before(junk), before(junk, carrier)]  # no rule of the carrier alone
    found = describer.describe(f, evidence)
    assert found is not None and found.rule == before(carrier)
    assert found.fidelity == pytest.approx(sample.fidelity(f, before(carrier)))
    # read one position off (the carrier two positions after the firing, junk between): the
    # neighbours of a firing word at +1 are tried as well, and the carrier's rule is found
    at_two = {1: evaluator.token_ids((junk,)), 2: evaluator.token_ids((carrier,))}
    shifted = Evidence(
        ids=[at_two.get(d, empty[0]) for d in range(-3, 4)],
        weights=[np.ones(1) if d in at_two else empty[1] for d in range(-3, 4)],
        lift=[np.ones(1) if d in at_two else empty[1] for d in range(-3, 4)],
    )
    found = Describer(sample, None, DescriberConfig()).describe(f, shifted)
    assert found is not None and found.rule == before(carrier)
    assert before(carrier) not in Describer(sample, None, DescriberConfig(shifted_words=0)).candidates(shifted)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="worker processes are forked on Linux only")
def test_describing_in_worker_processes_gives_the_descriptions_of_one_process(tiny_run):
    """The describer's features split over forked workers (WordNet categories included) come back
    in order with the same rule, fidelity and alternatives as described in this process."""
    from sae_translate.label.describe import CHUNK, WordNetCategories, describe_features

    evaluator, _ = rule_evaluator(tiny_run.vocab)
    features = tiny_run.alive.astype(np.int64)
    assert len(features) > CHUNK  # at least two chunks, so the pool runs
    sample = TrainSample(tiny_run, evaluator, features, DescriberConfig())

    def evidence(i: int) -> Evidence:
        return sample.evidence(int(features[i]))

    def described(workers: int) -> list:
        describer = Describer(sample, WordNetCategories(tiny_run.vocab), DescriberConfig())
        found = describe_features(describer, features, evidence, workers)
        return [(d.rule, d.fidelity, d.alternatives) if d else None for d in found]

    one = described(1)
    assert len(one) == len(features) and sum(d is not None for d in one) > len(features) // 2
    assert described(2) == one


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="worker processes are forked on Linux only")
def test_a_describer_worker_that_dies_is_a_user_error_not_a_hang(tiny_run):
    from sae_translate.errors import UserError
    from sae_translate.label.describe import CHUNK, describe_features

    evaluator, _ = rule_evaluator(tiny_run.vocab)
    features = tiny_run.alive.astype(np.int64)
    sample = TrainSample(tiny_run, evaluator, features, DescriberConfig())
    parent = os.getpid()

    def evidence(i: int) -> Evidence:
        if i == CHUNK and os.getpid() != parent:  # the first feature of the second chunk, in a worker
            os._exit(1)  # as the kernel's out-of-memory killer would end it
        return sample.evidence(int(features[i]))

    with pytest.raises(UserError, match="worker process died"):
        describe_features(Describer(sample, None, DescriberConfig()), features, evidence, workers=2)


def test_label_workers_default_to_the_cores_with_enough_features_each():
    from sae_translate.errors import UserError
    from sae_translate.label.describe import FEATURES_PER_WORKER, label_workers

    if sys.platform.startswith("linux"):
        cores = len(os.sched_getaffinity(0))
        assert label_workers(0, FEATURES_PER_WORKER - 1) == 1
        assert label_workers(0, 100 * FEATURES_PER_WORKER) == min(cores, 100)
        assert label_workers(3, 10) == 3
    else:
        assert label_workers(3, 10) == 1
    with pytest.raises(UserError, match="--workers"):
        label_workers(-1, 10)


@pytest.mark.parametrize(
    "token, name",
    [
        ("(", "opening parenthesis"),
        (")", "closing parenthesis"),
        ("“", "opening quotation mark"),
        ("”", "closing quotation mark"),
        (".", "full stop"),
        ("-", "hyphen"),
        ("$", "dollar sign"),
        ("a", ""),
        ("is", ""),
        ("<|endoftext|>", ""),
        ("7", ""),
    ],
)
def test_mark_names(token, name):
    assert mark_name(token) == name
