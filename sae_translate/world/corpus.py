"""English-like documents generated from a world config, with the ground-truth concepts of every
word. Words are whitespace-separated (punctuation and quote marks included), so `text.split()`
gives exactly the tokens of the world's word-level tokenizer."""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache

from sae_translate.world.config import (
    EOT,
    SAME_SLOT,
    Concept,
    Template,
    WorldConfig,
    contextual_order,
)


@dataclass(frozen=True)
class Document:
    words: tuple[str, ...]
    concepts: tuple[frozenset[str], ...]  # ground truth, one set per word

    @property
    def text(self) -> str:
        return " ".join(self.words)


def word_concepts(cfg: WorldConfig) -> dict[str, frozenset[str]]:
    """Each member word -> the lexical concepts that list it (a word may be in several)."""
    return _word_concepts(cfg)


@lru_cache(maxsize=8)
def _word_concepts(cfg: WorldConfig) -> dict[str, frozenset[str]]:
    table: dict[str, set[str]] = {}
    for concept in cfg.lexical:
        for word in concept.words:
            table.setdefault(word, set()).add(concept.name)
    return {word: frozenset(names) for word, names in table.items()}


def _refers_to(ref: str, index: int, words: Sequence[str], tags: list[set[str]], names: set[str]) -> bool:
    # A rule reference is a concept name when one exists by that name, else a literal word.
    return ref in tags[index] if ref in names else words[index] == ref


def _apply_neighbour_rules(
    cfg: WorldConfig,
    concept: Concept,
    words: Sequence[str],
    tags: list[set[str]],
) -> None:
    names = set(cfg.concept_names)
    n = len(words)
    if concept.after:
        hits = [
            i
            for i in range(1, n)
            if words[i] != EOT
            and words[i - 1] != EOT
            and any(_refers_to(r, i - 1, words, tags, names) for r in concept.after)
        ]
    elif concept.before:
        hits = [
            i
            for i in range(n - 1)
            if words[i] != EOT
            and words[i + 1] != EOT
            and any(_refers_to(r, i + 1, words, tags, names) for r in concept.before)
        ]
    else:
        return
    for i in hits:
        tags[i].add(concept.name)


def _inside_flags(words: Sequence[str], open_: str, close: str) -> list[bool]:
    """Which words lie strictly between an opening and a closing delimiter. A sequence cut in the
    middle of a span is read correctly when the span's closing mark is in view."""
    n = len(words)
    if open_ == close:
        flags, inside = [False] * n, False
        for i, word in enumerate(words):
            if word == EOT:
                inside = False
            elif word == open_:
                inside = not inside
            else:
                flags[i] = inside
        return flags
    depth = 0
    for word in words:  # started inside a span when a close comes before any open
        if word == close:
            depth = 1
            break
        if word == open_ or word == EOT:
            break
    flags = [False] * n
    for i, word in enumerate(words):
        if word == EOT:
            depth = 0
        elif word == open_:
            flags[i] = depth > 0
            depth += 1
        elif word == close:
            depth = max(depth - 1, 0)
            flags[i] = depth > 0
        else:
            flags[i] = depth > 0
    return flags


def tag_words(cfg: WorldConfig, words: Sequence[str]) -> list[frozenset[str]]:
    """Ground-truth concepts of every word of a bare word sequence (it may cut documents
    anywhere; `<|endoftext|>` separates documents). The first word is read as a document start,
    and a delimiter span cut on both sides is not seen."""
    lexicon = word_concepts(cfg)
    tags = [set(lexicon.get(w, ())) for w in words]
    ends = set(cfg.grammar.sentence_end)
    for concept in contextual_order(cfg):
        if concept.sentence_start:
            for i, word in enumerate(words):
                if word != EOT and (i == 0 or words[i - 1] in ends or words[i - 1] == EOT):
                    tags[i].add(concept.name)
        elif concept.inside:
            for i, flag in enumerate(_inside_flags(words, *concept.inside)):
                if flag:
                    tags[i].add(concept.name)
        else:
            _apply_neighbour_rules(cfg, concept, words, tags)
    return [frozenset(t) for t in tags]


class CorpusGenerator:
    """Fills the grammar's templates with concept words; deterministic for a seed."""

    def __init__(self, cfg: WorldConfig, seed: int = 0):
        self.cfg = cfg
        self.rng = random.Random(seed)
        self.templates = list(cfg.grammar.templates) + rule_templates(cfg)
        self.weights = [t.weight for t in self.templates]
        self._lexicon = word_concepts(cfg)
        self._candidates = {
            token[1:-1]: slot_candidates(cfg, token[1:-1])
            for template in self.templates
            for token in template.text.split()
            if token.startswith("{") and token != "{" + SAME_SLOT + "}"
        }

    def _fill(self, template: Template, topic: set[str]) -> list[str]:
        words: list[str] = []
        concept: Concept | None = None
        for token in template.text.split():
            if token == "{" + SAME_SLOT + "}" and concept is not None:
                unused = [w for w in concept.words if w not in words] or list(concept.words)
                words.append(self.rng.choice(unused))
            elif token.startswith("{"):
                options = self._candidates[token[1:-1]]
                preferred = [c for c in options if c.name in topic]
                if preferred and self.rng.random() < self.cfg.grammar.topic_bias:
                    options = preferred
                concept = self.rng.choice(options)
                words.append(self.rng.choice(concept.words))
            else:
                words.append(token)
        return words

    def document(self) -> Document:
        grammar = self.cfg.grammar
        lexical = [c for c in self.cfg.lexical if c.role != "none"]
        topic = {c.name for c in self.rng.sample(lexical, min(grammar.topic_concepts, len(lexical)))}
        n_sentences = self.rng.randint(*grammar.sentences_per_document)
        words: list[str] = []
        starts: list[bool] = []
        for _ in range(n_sentences):
            template = self.rng.choices(self.templates, weights=self.weights)[0]
            sentence = self._fill(template, topic)
            starts.extend([True] + [False] * (len(sentence) - 1))
            words.extend(sentence)
        return Document(tuple(words), tuple(self._record(words, starts)))

    def _record(self, words: list[str], starts: list[bool]) -> list[frozenset[str]]:
        # The generator's own account: sentence starts and delimiter spans come from the
        # templates it filled; neighbour rules read the finished tags of the adjacent word.
        tags = [set(self._lexicon.get(w, ())) for w in words]
        for concept in contextual_order(self.cfg):
            if concept.sentence_start:
                for i, start in enumerate(starts):
                    if start:
                        tags[i].add(concept.name)
            elif concept.inside:
                open_, close = concept.inside
                depth = 0
                for i, word in enumerate(words):
                    if starts[i]:
                        depth = 0  # templates close their spans, so a sentence starts outside
                    if open_ == close and word == open_:
                        depth = 1 - depth
                        continue
                    if word == open_:
                        depth += 1
                        continue
                    if word == close:
                        depth -= 1
                        continue
                    if depth > 0:
                        tags[i].add(concept.name)
            else:
                _apply_neighbour_rules(self.cfg, concept, words, tags)
        return [frozenset(t) for t in tags]

    def __iter__(self) -> Iterator[Document]:
        while True:
            yield self.document()


def slot_candidates(cfg: WorldConfig, slot: str) -> list[Concept]:
    """Lexical concepts a template slot draws from: `concept:NAME`, or a role with fallbacks."""
    if slot.startswith("concept:"):
        return [cfg.concept(slot.split(":", 1)[1])]
    for role in (slot, "noun"):
        found = [c for c in cfg.lexical if c.role == role and role != "none"]
        if found:
            return found
    return [c for c in cfg.lexical if c.role != "none"]


def rule_templates(cfg: WorldConfig) -> list[Template]:
    """Extra templates for contextual concepts the grammar would never produce, so every
    concept of any config occurs in the corpus."""
    grammar = cfg.grammar
    weight = sum(t.weight for t in grammar.templates) / len(grammar.templates)
    end = grammar.sentence_end[0]
    extra: list[Template] = []
    names = set(cfg.concept_names)
    for concept in cfg.contextual:
        refs = concept.after + concept.before
        if concept.inside:
            open_, close = concept.inside
            if not any(open_ in t.text.split() for t in grammar.templates):
                extra.append(Template(f"the {{noun}} said {open_} the {{noun}} is here {close} {end}", weight))
            continue
        for ref in refs:
            if ref in names and cfg.concept(ref).kind == "contextual":
                continue  # produced wherever the referred concept is
            if _template_can_emit(cfg, ref):
                continue
            word = f"{{concept:{ref}}}" if ref in names else ref
            extra.append(Template(f"the {{noun}} saw {word} {{noun}} {end}", weight))
    return extra


def _template_can_emit(cfg: WorldConfig, ref: str) -> bool:
    """Whether some template writes a word of `ref` (a lexical concept or a literal word)."""
    members = set(cfg.concept(ref).words) if ref in cfg.concept_names else {ref}
    for template in cfg.grammar.templates:
        for token in template.text.split():
            if token == "{" + SAME_SLOT + "}":
                continue  # repeats an earlier slot's concept
            if token.startswith("{"):
                if any(members.intersection(c.words) for c in slot_candidates(cfg, token[1:-1])):
                    return True
            elif token in members:
                return True
    return False


def generate_documents(cfg: WorldConfig, n_tokens: int, seed: int = 0) -> list[Document]:
    """Documents until their words plus one separator per document reach `n_tokens`."""
    generator = CorpusGenerator(cfg, seed)
    documents: list[Document] = []
    total = 0
    while total < n_tokens:
        doc = generator.document()
        documents.append(doc)
        total += len(doc.words) + 1
    return documents
