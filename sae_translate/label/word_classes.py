"""Closed English word classes: the function words WordNet has no categories for.

Determiners, personal and possessive pronouns, prepositions, conjunctions, modal verbs and
wh-words, from a part-of-speech lexicon of the Penn Treebank (Wall Street Journal): for each word,
how often it was tagged with each tag. It is Lingua::EN::Tagger's ``words.yml``, installed by
Debian's ``liblingua-en-tagger-perl`` (``SAE_TRANSLATE_POS_LEXICON`` points at another copy). A
vocabulary token is in every class whose tags make up at least ``min_share`` of its tagged uses
("her", possessive in 75% of its uses and personal in 25%, is a possessive pronoun). The Treebank
tags prepositions and subordinating conjunctions alike ("in", "if", "because": IN), so one class
holds both.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from sae_translate.errors import UserError

DEBIAN_LEXICON = Path("/usr/share/perl5/Lingua/EN/Tagger/words.yml")
INSTALL_HINT = (
    "install it with `sudo apt-get install liblingua-en-tagger-perl`, or set SAE_TRANSLATE_POS_LEXICON "
    "to a copy of Lingua-EN-Tagger's words.yml"
)
PREFIX = "ptb:"  # a word class's name in a rule ("ptb:md"), beside WordNet's "fruit.n.01"

# class -> (display name, the lexicon's tags). Open classes (nouns, verbs, adjectives, numbers)
# are WordNet's; "to", existential "there" and the possessive "'s" are one word each: a token set
# names them.
CLASSES: dict[str, tuple[str, tuple[str, ...]]] = {
    "det": ("determiner", ("det", "pdt")),
    "prp": ("personal pronoun", ("prp",)),
    "prps": ("possessive pronoun", ("prps",)),
    "in": ("preposition or subordinating conjunction", ("in",)),
    "cc": ("coordinating conjunction", ("cc",)),
    "md": ("modal verb", ("md",)),
    "wh": ("wh-word", ("wdt", "wp", "wps", "wrb")),
}
_LINE = re.compile(r'^"?(.+?)"?: \{ (.*) \}\s*$')
_COUNT = re.compile(r"(\w+): (\d+)")
_MARKERS = "Ġ▁Ċ "  # leading word-boundary markers of BPE / SentencePiece vocabularies


def lexicon_path() -> Path:
    return Path(os.environ.get("SAE_TRANSLATE_POS_LEXICON") or DEBIAN_LEXICON)


def read_lexicon(path: Path) -> dict[str, dict[str, int]]:
    """Lower-cased word -> {tag: count}, the cases of a word summed."""
    try:
        text = path.read_text(encoding="latin-1")
    except OSError as e:
        raise UserError(f"part-of-speech lexicon {path}: {e.strerror}; {INSTALL_HINT}") from None
    counts: dict[str, dict[str, int]] = {}
    for line in text.splitlines():
        m = _LINE.match(line)
        if m is None:
            continue
        tags = counts.setdefault(m.group(1).lower(), {})
        for tag, n in _COUNT.findall(m.group(2)):
            tags[tag] = tags.get(tag, 0) + int(n)
    if not counts:
        raise UserError(f"part-of-speech lexicon {path} holds no tagged words; {INSTALL_HINT}")
    return counts


@functools.lru_cache(maxsize=2)
def _lexicon(path: Path) -> Mapping[str, Mapping[str, int]]:
    return read_lexicon(path)


def is_word_class(name: str) -> bool:
    return name.startswith(PREFIX)


def class_name(name: str) -> str:
    """Display name of a class ("ptb:md" -> "modal verb")."""
    key = name.removeprefix(PREFIX)
    if key not in CLASSES:
        raise UserError(f"unknown word class {name!r}; choose from {', '.join(PREFIX + c for c in CLASSES)}")
    return CLASSES[key][0]


class WordClasses:
    """Each class's members in a vocabulary, and the classes a feature's weighted words fall in."""

    def __init__(
        self,
        vocab: Sequence[str],
        lexicon: Mapping[str, Mapping[str, int]] | None = None,
        min_share: float = 1 / 3,
        min_count: int = 5,
    ):
        """min_share: share of a word's tagged uses a class needs to hold it. min_count: tagged
        uses a word needs at all (one or two tags say little)."""
        lexicon = _lexicon(lexicon_path()) if lexicon is None else lexicon
        self.member = np.zeros((len(CLASSES), len(vocab)), dtype=bool)
        for tid, token in enumerate(vocab):
            tags = lexicon.get(token.lstrip(_MARKERS).strip().lower()) or {}
            total = sum(tags.values())
            if total < min_count:
                continue
            for c, (_, class_tags) in enumerate(CLASSES.values()):
                self.member[c, tid] = sum(tags.get(t, 0) for t in class_tags) >= min_share * total
        self._ids = {key: np.flatnonzero(row) for key, row in zip(CLASSES, self.member)}

    def ids(self, name: str) -> np.ndarray:
        """Sorted token ids of a class ("ptb:md")."""
        class_name(name)  # a clear error for an unknown class
        return self._ids[name.removeprefix(PREFIX)]

    def propose(self, weights: Mapping[int, float], top_n: int = 2, min_coverage: float = 0.2) -> list[str]:
        """Classes holding at least ``min_coverage`` of the positive weight, on two or more of
        their words (one word is a token set), most weight first."""
        ids = np.fromiter((t for t, w in weights.items() if w > 0), dtype=np.int64)
        if len(ids) < 2:
            return []
        w = np.fromiter((w for w in weights.values() if w > 0), dtype=np.float64)
        held = self.member[:, ids]  # [classes, words]
        weight = held @ w
        ok = (held.sum(1) >= 2) & (weight >= min_coverage * w.sum())
        order = [c for c in np.argsort(-weight, kind="stable") if ok[c]][:top_n]
        keys = list(CLASSES)
        return [PREFIX + keys[c] for c in order]
