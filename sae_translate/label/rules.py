"""Rules: what a label states, in a form a simulator can run over text.

A label is text plus the rule it states. A rule has a *target* (what the token is) and a
*context* (where it stands); either may be absent, not both:

- token set: the token is one of the listed words ("apple, pear");
- category: the token is a word under a WordNet synset ("fruit") or in a closed word class
  ("modal verb", ``word_classes.py``);
- context: the token stands right after / right before X (X a token set or a category), inside
  an open delimiter pair, first in a sentence, or last before a sentence end;
- in context: a target in a context ("a number inside parentheses").

The text is rendered from the rule, so what a reader sees is what the scorers run. Rules are
stored as JSON beside the text (``Rule.to_json``), e.g.
``{"kind": "context", "context": {"after": {"category": "number.n.02", "name": "number"}}}``.

``RuleEvaluator`` runs rules over token ids. Contexts are read off whole sequences
(``TokenView``), so a window cut out of a sequence still knows what came before it.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sae_translate.label.examples import token_text
from sae_translate.label.word_classes import is_word_class

SENTENCE_END = (".", "!", "?")
# Delimiter pairs a context rule may name, with the words a reader uses for them.
DELIMITERS: dict[tuple[str, str], str] = {
    ("(", ")"): "parentheses",
    ("[", "]"): "square brackets",
    ("{", "}"): "curly braces",
    ("“", "”"): "quotes",
    ('"', '"'): "quotes",
    ("«", "»"): "quotes",
    ("‘", "’"): "single quotes",
}
STRUCTURAL = ("sentence_start", "sentence_end")
# WordNet categories shown under a noun that is not one of their lemmas. WordNet files the number
# words ("five", "twenty") mostly as satellites of the adjective cluster cardinal.a.02, whose only
# lemma reads as the bird or the churchman; their noun senses sit under number.n.02 but carry few
# SemCor tags, so the adjective cluster is the category that covers them. digit.n.01's most tagged
# lemma, "figure", reads as a shape or a person.
NOUN_NAMES = {"cardinal.a.02": "number", "digit.n.01": "digit"}
# A closed word class ("modal verb") claims every one of its few, well-known members: within the
# fidelity tie a set of up to three of its words (complexity 1 + 0.5 per extra word) is the simpler
# statement, and the class wins only where it detects the feature better (measured: "his" ->
# "possessive pronoun" by the tie alone detected held-out firings worse, 0.90 -> 0.75)
WORD_CLASS_COMPLEXITY = 2.5
_BOUNDARY = re.compile(r"^(<\|[^|]*\|>|</?s>|<eos>|<bos>)$", re.IGNORECASE)
_VOWEL_SOUND = re.compile(r"^[aeio]|^u(?!ni|se|su|ro)", re.IGNORECASE)


# Unicode's names of marks, where a reader says otherwise
_MARK_NAMES = {"hyphen-minus": "hyphen", "solidus": "slash", "reverse solidus": "backslash"}


def mark_name(token: str) -> str:
    """A punctuation mark or symbol by the name a reader uses ("(" -> "opening parenthesis", "."
    -> "full stop", "”" -> "closing quotation mark"); "" for anything else. A token set of marks
    is shown with their names: a label "(" standing alone says little to a reader or a text
    embedding (inside a context, 'right before "("', the mark reads as itself)."""
    kind = unicodedata.category(token) if len(token) == 1 else ""
    if kind[:1] not in ("P", "S"):
        return ""
    name = unicodedata.name(token, "").lower()
    name = _MARK_NAMES.get(name, name)
    if kind in ("Ps", "Pi", "Pe", "Pf"):  # one end of a pair: say which
        side = "opening" if kind in ("Ps", "Pi") else "closing"
        name = re.sub(r"^(left|right)(-pointing)? ", f"{side} ", name).replace(" double ", " ")
    return name


def quoted(token: str) -> str:
    """'"apple"'; the double quote mark itself in single quotes."""
    return f"'{token}'" if token == '"' else f'"{token}"'


def _shown(token: str) -> str:
    """A token of a token set standing alone: the word, or a mark's name and the mark."""
    name = mark_name(token)
    return f"{name} {quoted(token)}" if name else token


def _or_list(words: Sequence[str]) -> str:
    """'"two"', '"two" or "three"', '"two", "three" or "four"'."""
    quoted_words = [quoted(w) for w in words]
    return quoted_words[0] if len(quoted_words) == 1 else f"{', '.join(quoted_words[:-1])} or {quoted_words[-1]}"


def normalise(token: str) -> str:
    """The text a rule names a token by: stripped of surrounding space, lower-cased."""
    return token_text(token).lower()


@dataclass(frozen=True)
class Selector:
    """What a token is: one of ``tokens``, or a word under WordNet synset ``synset``."""

    tokens: tuple[str, ...] = ()  # normalised token texts
    synset: str = ""  # e.g. "food.n.02"
    name: str = ""  # the category's display name, e.g. "food"
    # a category's members the feature's evidence shows most, for the reader: text only, the rule
    # is the whole category (so two selectors of one synset are the same rule)
    examples: tuple[str, ...] = field(default=(), compare=False)

    def __post_init__(self) -> None:
        if bool(self.tokens) == bool(self.synset):
            raise ValueError("a selector names either tokens or a category")

    @property
    def is_category(self) -> bool:
        return bool(self.synset)

    @property
    def complexity(self) -> float:
        if is_word_class(self.synset):
            return WORD_CLASS_COMPLEXITY
        return 1.0 if self.is_category else 1.0 + 0.5 * (len(self.tokens) - 1)

    @property
    def part_of_speech(self) -> str:
        """The category's WordNet part of speech: "noun", "verb" or "adjective" ("" for tokens and
        word classes, whose names read as nouns: 'a modal verb such as "could"')."""
        if self.synset in NOUN_NAMES:
            return "noun"
        pos = self.synset.split(".")[-2] if self.synset.count(".") >= 2 else ""
        return {"n": "noun", "v": "verb", "a": "adjective", "s": "adjective", "r": "adverb"}.get(pos, "")

    def text(self) -> str:
        """Standing alone: "fruit", "fruit (apple, pear)", "travel", "apple, pear" or 'full stop
        ".", question mark "?"'."""
        if not self.is_category:
            return ", ".join(map(_shown, self.tokens))
        return f"{self.name} ({', '.join(self.examples)})" if self.examples else self.name

    def noun_phrase(self) -> str:
        """Inside a sentence: "a fruit", 'a fruit such as "apple" or "pear"', 'a "travel" verb
        such as "flew"' or '"two", "three" or "four"'."""
        if self.is_category:
            pos = self.part_of_speech
            such_as = f" such as {_or_list(self.examples)}" if self.examples else ""
            article = "an" if _VOWEL_SOUND.match(self.name) else "a"
            if pos not in ("noun", ""):
                # a verb category is no noun ("right after a see" reads wrong), and its name is
                # no part of speech (without it "young" would read 'a young such as "little"')
                return f'{article} "{self.name}" {pos}{such_as}'
            return f"{article} {self.name}{such_as}"
        return _or_list(self.tokens)

    def to_dict(self) -> dict[str, Any]:
        if not self.is_category:
            return {"tokens": list(self.tokens)}
        d: dict[str, Any] = {"category": self.synset, "name": self.name}
        if self.examples:
            d["examples"] = list(self.examples)
        return d

    @staticmethod
    def from_dict(d: dict[str, Any]) -> Selector:
        if "category" in d:
            name = str(d.get("name") or d["category"].split(".")[0])
            return Selector(synset=str(d["category"]), name=name, examples=tuple(map(str, d.get("examples", ()))))
        return Selector(tokens=tuple(str(t) for t in d["tokens"]))


@dataclass(frozen=True)
class Context:
    """Where a token stands: ``after`` / ``before`` a selector, ``inside`` a delimiter pair, or
    ``sentence_start`` / ``sentence_end``."""

    kind: str
    of: Selector | None = None  # the neighbour, for after / before
    delimiters: tuple[str, str] = ("", "")  # open and close, for inside

    def __post_init__(self) -> None:
        if self.kind not in ("after", "before", "inside", *STRUCTURAL):
            raise ValueError(f"unknown context {self.kind!r}")
        if (self.kind in ("after", "before")) != (self.of is not None):
            raise ValueError("after / before contexts need a neighbour, the others none")
        if (self.kind == "inside") != all(self.delimiters):
            raise ValueError("an inside context needs its open and close delimiters")

    @property
    def complexity(self) -> float:
        return 1.0 + (self.of.complexity if self.of is not None else 0.0)

    def phrase(self) -> str:
        """After a noun: "right after a number", "inside parentheses", "at the start of a sentence"."""
        if self.kind in ("after", "before"):
            assert self.of is not None
            return f"right {self.kind} {self.of.noun_phrase()}"
        if self.kind == "inside":
            return f"inside {delimiter_name(*self.delimiters)}"
        return "at the start of a sentence" if self.kind == "sentence_start" else "at the end of a sentence"

    def text(self) -> str:
        """Standing alone: "the word right after a number", "the first word of a sentence"."""
        if self.kind in ("after", "before"):
            return f"the word {self.phrase()}"
        if self.kind == "inside":
            return f"a word {self.phrase()}"
        return "the first word of a sentence" if self.kind == "sentence_start" else "the last word of a sentence"

    def to_dict(self) -> dict[str, Any]:
        if self.kind in ("after", "before"):
            assert self.of is not None
            return {self.kind: self.of.to_dict()}
        if self.kind == "inside":
            return {"inside": list(self.delimiters)}
        return {self.kind: True}

    @staticmethod
    def from_dict(d: dict[str, Any]) -> Context:
        ((kind, value),) = d.items()
        if kind in ("after", "before"):
            return Context(kind, of=Selector.from_dict(value))
        if kind == "inside":
            return Context("inside", delimiters=(str(value[0]), str(value[1])))
        return Context(kind)


def delimiter_name(open_: str, close: str) -> str:
    return DELIMITERS.get((open_, close), f"{open_} … {close}")


@dataclass(frozen=True)
class Rule:
    target: Selector | None = None
    context: Context | None = None
    # a context rule's words the evidence shows most at the firing position, for the reader: text
    # only, the rule selects every word in the context
    examples: tuple[str, ...] = field(default=(), compare=False)
    # a category that most of the feature's firings in the context belong to, with those examples
    # as its members (text only: 'the word right after "from", mostly a city such as "leeds"')
    mostly: Selector | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if self.target is None and self.context is None:
            raise ValueError("a rule needs a target, a context or both")

    @property
    def kind(self) -> str:
        if self.context is None:
            assert self.target is not None
            return "category" if self.target.is_category else "token_set"
        return "context" if self.target is None else "in_context"

    @property
    def complexity(self) -> float:
        return sum(p.complexity for p in (self.target, self.context) if p is not None)

    def text(self) -> str:
        if self.context is None:
            assert self.target is not None
            return self.target.text()
        if self.target is None:
            if self.mostly is not None:
                return f"{self.context.text()}, mostly {self.mostly.noun_phrase()}"
            for_example = f", e.g. {_or_list(self.examples)}" if self.examples else ""
            return self.context.text() + for_example
        return f"{self.target.noun_phrase()} {self.context.phrase()}"

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"kind": self.kind}
        if self.target is not None:
            d["target"] = self.target.to_dict()
        if self.context is not None:
            d["context"] = self.context.to_dict()
        if self.examples:
            d["examples"] = list(self.examples)
        if self.mostly is not None:
            d["mostly"] = self.mostly.to_dict()
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False, sort_keys=True)

    @staticmethod
    def from_json(text: str) -> Rule:
        d = json.loads(text)
        target = Selector.from_dict(d["target"]) if "target" in d else None
        context = Context.from_dict(d["context"]) if "context" in d else None
        mostly = Selector.from_dict(d["mostly"]) if "mostly" in d else None
        return Rule(target, context, tuple(map(str, d.get("examples", ()))), mostly)

    @staticmethod
    def tokens(tokens: Sequence[str]) -> Rule:
        return Rule(Selector(tokens=tuple(dict.fromkeys(normalise(t) for t in tokens))))


# ---------------------------------------------------------------- running rules over token ids

# A category's extension over the vocabulary: synset name -> sorted token ids.
CategoryIds = Callable[[str], np.ndarray]


@dataclass
class TokenView:
    """Token ids of whole sequences with what context rules need at every position."""

    tokens: np.ndarray  # int [N, L], -1 = padding
    prev: np.ndarray  # the token before (-1 at a sequence start)
    next: np.ndarray  # the token after (-1 at a sequence end)
    flags: dict[Any, np.ndarray]  # "sentence_start", "sentence_end", ("inside", open, close) -> bool [N, L]


class RuleEvaluator:
    """Runs rules over the token ids of one vocabulary."""

    def __init__(self, vocab: Sequence[str], category_ids: CategoryIds | None = None):
        self.vocab = list(vocab)
        self.text = [normalise(t) for t in self.vocab]
        self._ids_of_text: dict[str, list[int]] = {}
        for i, t in enumerate(self.text):
            self._ids_of_text.setdefault(t, []).append(i)
        self.category_ids = category_ids
        self.sentence_end = self.token_ids(SENTENCE_END)
        self.closing_punctuation = self.token_ids((*SENTENCE_END, ",", ";", ":", "—", "-"))
        self.boundary = np.array([i for i, t in enumerate(self.vocab) if _BOUNDARY.match(t.strip())], dtype=np.int64)
        # punctuation, boundaries and the like are not words: no context rule selects them
        self.is_word = np.array(
            [any(c.isalnum() for c in t) and not _BOUNDARY.match(v.strip()) for t, v in zip(self.text, self.vocab)]
            + [False]
        )
        self.delimiters = [pair for pair in DELIMITERS if all(p in self._ids_of_text for p in pair)]
        self._selector_cache: dict[Selector, np.ndarray] = {}

    def token_ids(self, texts: Sequence[str]) -> np.ndarray:
        """Sorted ids of the tokens whose normalised text is one of ``texts``."""
        ids = sorted({i for t in texts for i in self._ids_of_text.get(t, ())})
        return np.array(ids, dtype=np.int64)

    def selector_ids(self, selector: Selector) -> np.ndarray:
        """Sorted token ids a selector names."""
        ids = self._selector_cache.get(selector)
        if ids is None:
            if selector.is_category:
                if self.category_ids is None:
                    raise ValueError("category rules need WordNet (category_ids)")
                ids = np.asarray(self.category_ids(selector.synset), dtype=np.int64)
            else:
                ids = self.token_ids(selector.tokens)
            if len(self._selector_cache) < 65536:
                self._selector_cache[selector] = ids
        return ids

    def view(self, tokens: np.ndarray) -> TokenView:
        """Context flags of whole sequences [N, L]."""
        tokens = np.asarray(tokens, dtype=np.int64)
        prev = np.full_like(tokens, -1)
        nxt = np.full_like(tokens, -1)
        prev[:, 1:] = tokens[:, :-1]
        nxt[:, :-1] = tokens[:, 1:]
        word = self.is_word[np.where(tokens >= 0, tokens, len(self.vocab))]
        starts = np.union1d(self.sentence_end, self.boundary)
        flags: dict[Any, np.ndarray] = {
            # position 0 of a window cut from running text is not known to start a sentence
            "sentence_start": word & isin(prev, starts),
            "sentence_end": word & isin(nxt, self.sentence_end),
        }
        for open_, close in self.delimiters:
            flags[("inside", open_, close)] = word & self._inside(tokens, open_, close)
        return TokenView(tokens, prev, nxt, flags)

    def _inside(self, tokens: np.ndarray, open_: str, close: str) -> np.ndarray:
        """Positions strictly between an opening and its closing delimiter. A sequence that shows
        a close before any open started inside a span; a boundary token ends any span. A mark that
        both opens and closes (a straight quote) closes after punctuation, as English places
        punctuation inside quotes, and opens otherwise."""
        o, c = self.token_ids([open_]), self.token_ids([close])
        is_open, is_close = isin(tokens, o), isin(tokens, c)
        if open_ == close:
            prev = np.full_like(tokens, -1)
            prev[:, 1:] = tokens[:, :-1]
            after_punct = isin(prev, self.closing_punctuation)
            is_open, is_close = is_open & ~after_punct, is_close & after_punct
        is_boundary = isin(tokens, self.boundary)
        n, length = tokens.shape
        out = np.zeros((n, length), dtype=bool)
        first_close = np.where(is_close.any(1), is_close.argmax(1), length)
        first_open = np.where((is_open | is_boundary).any(1), (is_open | is_boundary).argmax(1), length)
        depth = (first_close < first_open).astype(np.int64)
        for j in range(length):
            depth = np.where(is_boundary[:, j], 0, depth)
            depth = np.maximum(depth - is_close[:, j], 0)
            out[:, j] = (depth > 0) & ~is_open[:, j]
            depth = np.minimum(depth + is_open[:, j], 1 if open_ == close else length)
        return out

    @staticmethod
    def cells(view: TokenView, rows: np.ndarray, cols: np.ndarray) -> TokenView:
        """The view at some positions only (any shape): rules then run on those alone."""
        return TokenView(
            view.tokens[rows, cols],
            view.prev[rows, cols],
            view.next[rows, cols],
            {k: v[rows, cols] for k, v in view.flags.items()},
        )

    def context_flag(self, context: Context, view: TokenView) -> np.ndarray:
        if context.kind in ("after", "before"):
            assert context.of is not None
            neighbour = view.prev if context.kind == "after" else view.next
            word = self.is_word[np.where(view.tokens >= 0, view.tokens, len(self.vocab))]
            return word & isin(neighbour, self.selector_ids(context.of))
        key: Any = context.kind if context.kind in STRUCTURAL else ("inside", *context.delimiters)
        flag = view.flags.get(key)
        if flag is None:  # a delimiter this vocabulary does not have: the rule selects nothing
            return np.zeros(np.shape(view.tokens), dtype=bool)
        return flag

    def select(
        self, rule: Rule, view: TokenView, rows: np.ndarray | None = None, cols: np.ndarray | None = None
    ) -> np.ndarray:
        """Which tokens the rule selects: at ``view[rows, cols]`` when given, else everywhere."""
        if rows is not None and cols is not None:
            view = self.cells(view, rows, cols)
        out = view.tokens >= 0
        if rule.target is not None:
            out = out & isin(view.tokens, self.selector_ids(rule.target))
        if rule.context is not None:
            out = out & self.context_flag(rule.context, view)
        return out


def isin(values: np.ndarray, sorted_ids: np.ndarray) -> np.ndarray:
    """Elementwise membership in a sorted id array (faster than np.isin for small id sets)."""
    if len(sorted_ids) == 0:
        return np.zeros(np.shape(values), dtype=bool)
    pos = np.minimum(np.searchsorted(sorted_ids, values), len(sorted_ids) - 1)
    return sorted_ids[pos] == values
