"""The toy world's concept config: named concepts (lexical word lists or contextual rules) and
the sentence grammar the corpus generator fills with them. TOML or JSON; any concept list."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import tomllib

from sae_translate.errors import UserError

ConceptKind = Literal["lexical", "contextual"]

# Special tokens of the world's tokenizer; `<|endoftext|>` separates documents.
EOT = "<|endoftext|>"
UNK = "<unk>"
PAD = "<pad>"
SPECIAL_TOKENS = (EOT, UNK, PAD)

# Named delimiter pairs a contextual `inside` rule may use instead of an explicit pair.
NAMED_DELIMITERS: dict[str, tuple[str, str]] = {
    "parentheses": ("(", ")"),
    "brackets": ("[", "]"),
}

# Templates used when a config brings none: only `{noun}` slots, so any concept list fills them.
GENERIC_TEMPLATES: tuple[str, ...] = (
    "the {noun} is near the {noun} .",
    "a {noun} and a {noun} were here .",
    "we saw the {noun} with a {noun} .",
    "there is a {noun} .",
    "the {noun} , the {noun} and the {noun} !",
    "where is the {noun} ?",
)

_SLOT = re.compile(r"\{([^{}]+)\}")
SAME_SLOT = "same"  # {same}: the concept of the previous slot again


@dataclass(frozen=True)
class Concept:
    """One named concept. Lexical: a set of member words. Contextual: exactly one rule on
    neighbouring words (`after` / `before` a concept or literal word, `inside` a delimiter pair,
    or `sentence_start`)."""

    name: str
    kind: ConceptKind
    aliases: tuple[str, ...]
    words: tuple[str, ...] = ()
    role: str = "noun"  # template slots it fills; "none" = never drawn for a slot
    includes: tuple[str, ...] = ()  # lexical concepts whose words it also covers (a superconcept)
    after: tuple[str, ...] = ()
    before: tuple[str, ...] = ()
    inside: tuple[str, str] | None = None
    sentence_start: bool = False

    @property
    def rule(self) -> str:
        """The contextual rule in words (empty for lexical concepts)."""
        if self.after:
            return "after " + " | ".join(self.after)
        if self.before:
            return "before " + " | ".join(self.before)
        if self.inside:
            return f"inside {self.inside[0]} {self.inside[1]}"
        if self.sentence_start:
            return "sentence start"
        return ""


@dataclass(frozen=True)
class Template:
    text: str
    weight: float = 1.0

    @property
    def slots(self) -> list[str]:
        return _SLOT.findall(self.text)


@dataclass(frozen=True)
class Grammar:
    """How sentences and documents are made. Slots: `{ROLE}` draws a word from a lexical
    concept with that role (falling back to role `noun`, then to any lexical concept);
    `{concept:NAME}` draws from one concept; `{same}` draws another word of the concept the
    previous slot used (lists of like things: "bread , cheese and honey")."""

    templates: tuple[Template, ...] = tuple(Template(t) for t in GENERIC_TEMPLATES)
    sentence_end: tuple[str, ...] = (".", "!", "?")
    quote: tuple[str, str] = ("“", "”")
    sentences_per_document: tuple[int, int] = (3, 8)
    topic_concepts: int = 2  # concepts each document prefers for role slots
    topic_bias: float = 0.6  # chance a role slot uses a topic concept when one fits


@dataclass(frozen=True)
class WorldConfig:
    name: str
    concepts: tuple[Concept, ...]
    grammar: Grammar = field(default_factory=Grammar)

    def concept(self, name: str) -> Concept:
        for concept in self.concepts:
            if concept.name == name:
                return concept
        raise KeyError(name)

    @property
    def concept_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.concepts)

    @property
    def lexical(self) -> tuple[Concept, ...]:
        return tuple(c for c in self.concepts if c.kind == "lexical")

    @property
    def contextual(self) -> tuple[Concept, ...]:
        return tuple(c for c in self.concepts if c.kind == "contextual")

    def to_dict(self) -> dict[str, Any]:
        """The config in the file format (what `parse_world_config` reads back to an equal config)."""
        concepts = []
        for c in self.concepts:
            item: dict[str, Any] = {"name": c.name, "kind": c.kind, "aliases": list(c.aliases)}
            if c.kind == "lexical":
                item.update(role=c.role, words=list(c.words))
                if c.includes:
                    item["includes"] = list(c.includes)
            elif c.after:
                item["after"] = list(c.after)
            elif c.before:
                item["before"] = list(c.before)
            elif c.inside:
                item["inside"] = list(c.inside)
            else:
                item["sentence_start"] = True
            concepts.append(item)
        g = self.grammar
        grammar = {
            "templates": [{"text": t.text, "weight": t.weight} for t in g.templates],
            "sentence_end": list(g.sentence_end),
            "quote": list(g.quote),
            "sentences_per_document": list(g.sentences_per_document),
            "topic_concepts": g.topic_concepts,
            "topic_bias": g.topic_bias,
        }
        return {"name": self.name, "concepts": concepts, "grammar": grammar}

    def digest(self) -> str:
        """Stable hash of the whole config: a world built from it is reused only on a match."""
        blob = json.dumps(self.to_dict(), sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


def default_config_path() -> Path:
    return Path(str(resources.files("sae_translate.world").joinpath("default.toml")))


def load_world_config(path: str | Path | None = None) -> WorldConfig:
    """Read a concept config (TOML or JSON); None reads the packaged default world."""
    source = default_config_path() if path is None else Path(path)
    if not source.is_file():
        raise UserError(f"world config {source} does not exist: pass a TOML or JSON concept file")
    text = source.read_text(encoding="utf-8")
    try:
        if source.suffix.lower() == ".json":
            raw = json.loads(text)
        else:
            raw = tomllib.loads(text)
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as err:
        raise UserError(f"world config {source} is not valid {source.suffix[1:] or 'TOML'}: {err}") from err
    if not isinstance(raw, dict):
        raise UserError(f"world config {source} must be a table with a `concepts` list")
    try:
        return parse_world_config(raw, default_name=source.stem)
    except UserError as err:
        raise UserError(f"world config {source}: {err}") from None


def parse_world_config(raw: dict[str, Any], default_name: str = "world") -> WorldConfig:
    """Validate a decoded config; every problem is a one-line UserError."""
    unknown = set(raw) - {"name", "concepts", "grammar"}
    if unknown:
        raise UserError(f"unknown top-level keys {sorted(unknown)}; use name, concepts, grammar")
    items = raw.get("concepts")
    if not isinstance(items, list) or not items:
        raise UserError("needs a non-empty `concepts` list ([[concepts]] tables in TOML)")
    grammar = _parse_grammar(raw.get("grammar", {}))
    concepts = tuple(_parse_concept(item, i, grammar) for i, item in enumerate(items))
    names = [c.name for c in concepts]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise UserError(f"duplicate concept names {duplicates}")
    if not any(c.kind == "lexical" for c in concepts):
        raise UserError("needs at least one lexical concept (a concept with `words`)")
    concepts = _resolve_includes(concepts)
    if not any(c.role != "none" for c in concepts if c.kind == "lexical"):
        raise UserError("every lexical concept has role 'none'; at least one must fill template slots")
    cfg = WorldConfig(name=str(raw.get("name", default_name)), concepts=concepts, grammar=grammar)
    _check_references(cfg)
    return cfg


def _resolve_includes(concepts: tuple[Concept, ...]) -> tuple[Concept, ...]:
    """Superconcepts get the words of the concepts they include (recursively), once each."""
    by_name = {c.name: c for c in concepts}
    resolved: dict[str, tuple[str, ...]] = {}

    def words_of(name: str, path: list[str]) -> tuple[str, ...]:
        if name in resolved:
            return resolved[name]
        if name in path:
            raise UserError(f"concepts include each other in a cycle: {' -> '.join(path + [name])}")
        concept = by_name[name]
        words = list(concept.words)
        for included in concept.includes:
            if included not in by_name or by_name[included].kind != "lexical":
                raise UserError(f"concept {name!r} includes {included!r}, which is not a lexical concept")
            words.extend(words_of(included, path + [name]))
        resolved[name] = tuple(dict.fromkeys(words))
        return resolved[name]

    return tuple(replace(c, words=words_of(c.name, [])) if c.kind == "lexical" and c.includes else c for c in concepts)


def _words(value: Any, what: str) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise UserError(f"{what} must be a string or a list of strings")
    out = tuple(v.strip() for v in value)
    for word in out:
        if not word or any(ch.isspace() for ch in word):
            raise UserError(f"{what}: {word!r} is not a single whitespace-free word")
        if word in SPECIAL_TOKENS:
            raise UserError(f"{what}: {word!r} is a reserved special token")
    return out


def _parse_concept(item: Any, index: int, grammar: Grammar) -> Concept:
    if not isinstance(item, dict):
        raise UserError(f"concept #{index + 1} must be a table with name, kind, aliases, ...")
    name = item.get("name")
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_\-]+", name):
        raise UserError(f"concept #{index + 1} needs a `name` of letters, digits, _ or -")
    known = {"name", "kind", "aliases", "words", "role", "includes", "after", "before", "inside", "sentence_start"}
    unknown = set(item) - known
    if unknown:
        raise UserError(f"concept {name!r} has unknown keys {sorted(unknown)}")
    rules = [k for k in ("after", "before", "inside", "sentence_start") if item.get(k)]
    kind = item.get("kind", "contextual" if rules else "lexical")
    if kind not in ("lexical", "contextual"):
        raise UserError(f"concept {name!r}: kind must be 'lexical' or 'contextual', not {kind!r}")
    aliases = _words_or_phrases(item.get("aliases", [name.replace("_", " ")]), f"concept {name!r} aliases")
    role = item.get("role", "noun")
    if not isinstance(role, str) or not role:
        raise UserError(f"concept {name!r}: role must be a non-empty string")
    if kind == "lexical":
        if rules:
            raise UserError(f"concept {name!r} is lexical but has a rule {rules}; set kind = 'contextual'")
        words = _words(item.get("words", []), f"concept {name!r} words")
        includes = _words(item.get("includes", []), f"concept {name!r} includes")
        if not words and not includes:
            raise UserError(f"lexical concept {name!r} needs a non-empty `words` or `includes` list")
        return Concept(name=name, kind="lexical", aliases=aliases, words=words, role=role, includes=includes)
    if "words" in item or "includes" in item:
        raise UserError(f"contextual concept {name!r} takes a rule, not `words` or `includes`")
    if len(rules) != 1:
        raise UserError(
            f"contextual concept {name!r} needs exactly one rule of after, before, inside, "
            f"sentence_start (has {rules or 'none'})"
        )
    rule = rules[0]
    if rule == "after":
        return Concept(name, "contextual", aliases, after=_words(item["after"], f"{name}.after"))
    if rule == "before":
        return Concept(name, "contextual", aliases, before=_words(item["before"], f"{name}.before"))
    if rule == "sentence_start":
        if item["sentence_start"] is not True:
            raise UserError(f"concept {name!r}: sentence_start must be true")
        return Concept(name, "contextual", aliases, sentence_start=True)
    return Concept(name, "contextual", aliases, inside=_delimiters(item["inside"], name, grammar))


def _words_or_phrases(value: Any, what: str) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v.strip() for v in value):
        raise UserError(f"{what} must be a non-empty list of strings")
    return tuple(v.strip() for v in value)


def _delimiters(value: Any, name: str, grammar: Grammar) -> tuple[str, str]:
    if value == "quote":
        return grammar.quote
    if isinstance(value, str) and value in NAMED_DELIMITERS:
        return NAMED_DELIMITERS[value]
    pair = _words(value, f"concept {name!r} inside")
    if len(pair) != 2:
        raise UserError(
            f"concept {name!r}: inside must be 'quote', one of {sorted(NAMED_DELIMITERS)}, or a pair [open, close]"
        )
    return (pair[0], pair[1])


def _parse_grammar(raw: Any) -> Grammar:
    if not isinstance(raw, dict):
        raise UserError("`grammar` must be a table")
    known = {"templates", "sentence_end", "quote", "sentences_per_document", "topic_concepts", "topic_bias"}
    unknown = set(raw) - known
    if unknown:
        raise UserError(f"grammar has unknown keys {sorted(unknown)}")
    base = Grammar()
    templates = base.templates
    if "templates" in raw:
        templates = tuple(_parse_template(t) for t in _as_list(raw["templates"], "grammar.templates"))
        if not templates:
            raise UserError("grammar.templates must not be empty")
    sentence_end = _words(raw["sentence_end"], "grammar.sentence_end") if "sentence_end" in raw else base.sentence_end
    quote = base.quote
    if "quote" in raw:
        pair = _words(raw["quote"], "grammar.quote")
        if len(pair) != 2:
            raise UserError("grammar.quote must be a pair [open, close]")
        quote = (pair[0], pair[1])
    spd = raw.get("sentences_per_document", list(base.sentences_per_document))
    if (
        not isinstance(spd, list)
        or len(spd) != 2
        or not all(isinstance(v, int) for v in spd)
        or not 1 <= spd[0] <= spd[1]
    ):
        raise UserError("grammar.sentences_per_document must be [min, max] with 1 <= min <= max")
    topic_concepts = raw.get("topic_concepts", base.topic_concepts)
    topic_bias = raw.get("topic_bias", base.topic_bias)
    if not isinstance(topic_concepts, int) or topic_concepts < 0:
        raise UserError("grammar.topic_concepts must be an integer >= 0")
    if not isinstance(topic_bias, (int, float)) or not 0 <= topic_bias <= 1:
        raise UserError("grammar.topic_bias must be a number in [0, 1]")
    return Grammar(
        templates=templates,
        sentence_end=sentence_end,
        quote=quote,
        sentences_per_document=(spd[0], spd[1]),
        topic_concepts=topic_concepts,
        topic_bias=float(topic_bias),
    )


def _as_list(value: Any, what: str) -> list[Any]:
    if not isinstance(value, list):
        raise UserError(f"{what} must be a list")
    return value


def _parse_template(value: Any) -> Template:
    # A template is a string, or a table {text = "...", weight = 2.0}.
    if isinstance(value, str):
        return Template(value)
    if isinstance(value, dict) and isinstance(value.get("text"), str):
        weight = value.get("weight", 1.0)
        if not isinstance(weight, (int, float)) or weight <= 0:
            raise UserError(f"template {value['text']!r}: weight must be a positive number")
        return Template(value["text"], float(weight))
    raise UserError("each grammar template must be a string or a table {text, weight}")


def _check_references(cfg: WorldConfig) -> None:
    names = set(cfg.concept_names)
    for template in cfg.grammar.templates:
        if not template.text.split():
            raise UserError("a grammar template is empty")
        if template.slots and template.slots[0] == SAME_SLOT:
            raise UserError(f"template {template.text!r}: {{same}} needs an earlier slot to repeat")
        for slot in template.slots:
            if slot == SAME_SLOT:
                continue
            if slot.startswith("concept:"):
                target = slot.split(":", 1)[1]
                if target not in names:
                    raise UserError(f"template {template.text!r} names unknown concept {target!r}")
                if cfg.concept(target).kind != "lexical":
                    raise UserError(f"template {template.text!r}: slot {{{slot}}} must name a lexical concept")
            elif not re.fullmatch(r"[A-Za-z0-9_\-]+", slot):
                raise UserError(f"template {template.text!r} has a malformed slot {{{slot}}}")
    _check_template_structure(cfg)
    contextual_order(cfg)  # raises on a dependency cycle


def _check_template_structure(cfg: WorldConfig) -> None:
    # Sentence ends close templates only, and delimiter pairs close inside their template, so a
    # sentence start and an `inside` span are the same whether read from the template or the words.
    ends = set(cfg.grammar.sentence_end)
    pairs = {cfg.grammar.quote} | {c.inside for c in cfg.contextual if c.inside}
    for template in cfg.grammar.templates:
        tokens = template.text.split()
        for token in tokens:
            if ("{" in token or "}" in token) and not _SLOT.fullmatch(token):
                raise UserError(f"template {template.text!r}: slot {token!r} must be a whole word")
        if tokens[-1] not in ends:
            raise UserError(f"template {template.text!r} must end with one of {sorted(ends)}")
        if ends.intersection(tokens[:-1]):
            raise UserError(f"template {template.text!r} has a sentence end before its last word")
        for open_, close in pairs:
            depth = 0
            for token in tokens:
                if open_ == close and token == open_:
                    depth = 1 - depth
                elif token == open_:
                    depth += 1
                elif token == close:
                    depth -= 1
                if depth < 0:
                    break
            if depth != 0:
                raise UserError(f"template {template.text!r} does not close its {open_} {close} pair")


def contextual_order(cfg: WorldConfig) -> list[Concept]:
    """Contextual concepts in an order where each comes after the concepts its rule refers to."""
    contextual = {c.name: c for c in cfg.contextual}
    order: list[Concept] = []
    state: dict[str, int] = {}  # 1 = visiting, 2 = done

    def visit(concept: Concept, path: list[str]) -> None:
        if state.get(concept.name) == 2:
            return
        if state.get(concept.name) == 1:
            raise UserError(f"contextual rules refer to each other in a cycle: {' -> '.join(path)}")
        state[concept.name] = 1
        for ref in concept.after + concept.before:
            if ref in contextual:
                visit(contextual[ref], path + [ref])
        state[concept.name] = 2
        order.append(concept)

    for concept in contextual.values():
        visit(concept, [concept.name])
    return order
