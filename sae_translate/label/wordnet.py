"""WordNet categories for a corpus vocabulary: which synsets cover the words a feature means.

A category is a WordNet 3.0 synset; its extension is the set of vocabulary tokens under it. A
token belongs to a synset when enough of its sense probability falls under that synset, so "red"
is a colour (most of its senses) but not a person (one rare sense: a communist).

`CategoryIndex.propose` ranks the synsets covering a feature's weighted words by a size-principle
likelihood (Xu & Tenenbaum, "Word learning as Bayesian inference", 2007): each weighted word is
drawn uniformly from the category's extension, or with probability `noise` from the whole
vocabulary. Small categories that explain the words beat general ones; categories that leave
much of the weight unexplained lose to ones that cover it.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import tempfile
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from nltk.corpus.reader.wordnet import Synset, WordNetCorpusReader, WordNetError

from sae_translate.errors import UserError
from sae_translate.label.rules import NOUN_NAMES

DEBIAN_WORDNET = Path("/usr/share/wordnet")
INSTALL_HINT = (
    "install it with `sudo apt-get install wordnet-base wordnet-sense-index` or `python -m nltk.downloader wordnet`"
)

# The files nltk's reader opens; Debian ships all but lexnames.
_WORDNET_FILES = WordNetCorpusReader._FILES
# WordNet 3.0's lexicographer files in number order, with their syntactic category (lexnames(5WN)).
_LEXNAMES = (
    "adj.all adj.pert adv.all noun.Tops noun.act noun.animal noun.artifact noun.attribute noun.body "
    "noun.cognition noun.communication noun.event noun.feeling noun.food noun.group noun.location "
    "noun.motive noun.object noun.person noun.phenomenon noun.plant noun.possession noun.process "
    "noun.quantity noun.relation noun.shape noun.state noun.substance noun.time verb.body verb.change "
    "verb.cognition verb.communication verb.competition verb.consumption verb.contact verb.creation "
    "verb.emotion verb.motion verb.perception verb.possession verb.social verb.stative verb.weather "
    "adj.ppl"
).split()
_SYNTACTIC_CATEGORY = {"noun": 1, "verb": 2, "adj": 3, "adv": 4}

# The top of the noun hierarchy: true of nearly anything, so never a useful description.
TOO_GENERAL = frozenset(
    """entity.n.01 physical_entity.n.01 abstraction.n.06 thing.n.12 thing.n.08 object.n.01 whole.n.02
    matter.n.03 substance.n.04 causal_agent.n.01 psychological_feature.n.01 attribute.n.02 group.n.01
    relation.n.01 measure.n.02 communication.n.02 process.n.06 set.n.02 change.n.06 living_thing.n.01
    artifact.n.01 unit.n.03 part.n.01 part.n.02 event.n.01 act.n.02 state.n.02 location.n.01
    physical_object.n.01""".split()
)

# Closed-class English words: WordNet only knows them through abbreviations and letters
# ("in" -> indium, "us" -> uracil, "be" -> beryllium), so they are never category members.
FUNCTION_WORDS = frozenset(
    """a an the this that these those some any each every no all both either neither such another
    i me my mine myself we us our ours ourselves you your yours yourself yourselves he him his himself
    she her hers herself it its itself they them their theirs themselves who whom whose which what
    whatever whoever whichever one ones
    of in on at by for with from to into onto upon about above below over under between through
    during before after against among amongst without within across along around behind beyond near
    off out up down than via per toward towards till until since unto beside besides despite
    and or but nor so yet if because although though while whereas unless whether as then else
    be am is are was were been being have has had having do does did done doing
    shall should will would can could may might must ought
    not nor very too also just only even still already ever never here there where when why how
    yes oh ah eh hmm ok okay mr mrs ms dr st""".split()
)

_MARKERS = ("Ġ", "▁", "Ċ", " ")  # leading word-boundary markers of BPE / SentencePiece vocabularies
_WORD = re.compile(r"[a-z]+(?:[-'][a-z]+)*")
_NUMERAL = re.compile(r"[0-9]{1,4}")
_POS = ("n", "v", "a")  # nouns, verbs, adjectives (satellites come with "a")


# ----------------------------------------------------------------------------------- loading


class _EnglishWordNet(WordNetCorpusReader):
    """nltk's reader without its WordNet-version mapping, which only multilingual (OMW) lookups use
    and which costs seconds at every load."""

    def map_wn(self, version: str = "wordnet") -> None:
        return None


def default_cache_dir() -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "sae-translate" / "nltk_data"


def load_wordnet(
    nltk_paths: Sequence[str | Path] | None = None,
    debian_dir: Path = DEBIAN_WORDNET,
    cache_dir: Path | None = None,
) -> WordNetCorpusReader:
    """WordNet 3.0 from an nltk data path (`nltk.data.path` by default), else assembled once from
    Debian's wordnet-base files into `cache_dir` (default ~/.cache/sae-translate/nltk_data)."""
    import nltk.data

    paths = tuple(str(p) for p in (nltk.data.path if nltk_paths is None else nltk_paths))
    return _load_wordnet(paths, str(debian_dir), str(cache_dir or default_cache_dir()))


@functools.lru_cache(maxsize=4)
def _load_wordnet(nltk_paths: tuple[str, ...], debian_dir: str, cache_dir: str) -> WordNetCorpusReader:
    problems: list[str] = []
    for root in nltk_paths:
        corpora = Path(root).expanduser() / "corpora"
        if (corpora / "wordnet").exists() or (corpora / "wordnet.zip").exists():  # nltk's downloader writes the zip
            reader = _try_open(root, problems)
            if reader is not None:
                return reader
    if all((Path(debian_dir) / f).is_file() for f in _WORDNET_FILES if f != "lexnames"):
        try:
            _assemble_from_debian(Path(debian_dir), Path(cache_dir) / "corpora" / "wordnet")
        except OSError as e:
            problems.append(f"cannot write {cache_dir}: {e.strerror or e}")
        else:
            reader = _try_open(cache_dir, problems)
            if reader is not None:
                return reader
    found = f" (unreadable: {'; '.join(problems)})" if problems else ""
    raise UserError(f"WordNet 3.0 not found{found}: {INSTALL_HINT}")


def _try_open(root: str, problems: list[str]) -> WordNetCorpusReader | None:
    """A reader for the WordNet under an nltk data root (a directory or nltk's downloaded zip),
    or None with the reason appended to `problems`."""
    import nltk.data

    root = str(Path(root).expanduser())
    if root not in nltk.data.path:
        nltk.data.path.append(root)  # nltk only opens files under its data path
    try:
        try:
            pointer = nltk.data.find("corpora/wordnet", paths=[root])
        except LookupError:
            pointer = nltk.data.find("corpora/wordnet.zip/wordnet/", paths=[root])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "multilingual functions are not available": English only
            return _EnglishWordNet(pointer, None)
    except LookupError:
        problems.append(f"{root}/corpora/wordnet: not found")
    except (OSError, ValueError, AssertionError, PermissionError) as e:
        lines = str(e).strip().splitlines()
        problems.append(f"{root}/corpora/wordnet: {type(e).__name__}: {lines[0][:160] if lines else ''}")
    return None


def _assemble_from_debian(src: Path, dest: Path) -> None:
    """Copy Debian's files and add lexnames. Copies, not links: nltk refuses symlinks leaving its
    data path and files with several hard links. The directory appears whole or not at all."""
    if all((dest / f).is_file() for f in _WORDNET_FILES):
        return
    if dest.exists():
        shutil.rmtree(dest)  # not written by this function, which never leaves a partial copy
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".wordnet.", dir=dest.parent))
    try:
        for name in _WORDNET_FILES:
            if name != "lexnames":
                shutil.copyfile(src / name, tmp / name)
        (tmp / "lexnames").write_text(
            "".join(f"{i:02d}\t{n}\t{_SYNTACTIC_CATEGORY[n.split('.')[0]]}\n" for i, n in enumerate(_LEXNAMES))
        )
        os.chmod(tmp, 0o755)
        os.rename(tmp, dest)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if not all((dest / f).is_file() for f in _WORDNET_FILES):  # another process may have won
            raise


# ----------------------------------------------------------------------------------- names


def _lemma_counts(wn: WordNetCorpusReader) -> dict[str, int]:
    """Sense key -> SemCor tag count, read in one pass (Lemma.count() seeks the file per call)."""
    with wn.open("cntlist.rev") as f:
        text = f.read()
    counts: dict[str, int] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 3:
            counts[parts[0]] = int(parts[2])
    return counts


def _display_name(synset: Synset, counts: Mapping[str, int] | None = None) -> str:
    if synset.name() in NOUN_NAMES:
        return NOUN_NAMES[synset.name()]
    # an abbreviation is no name to show ("no." is ordinal_number.n.01's most used lemma)
    lemmas = [lemma for lemma in synset.lemmas() if _WORD_LEMMA.fullmatch(lemma.name())] or synset.lemmas()
    used = [counts.get(lemma.key(), 0) if counts is not None else lemma.count() for lemma in lemmas]
    # WordNet's head word, unless nobody uses it and another lemma is used
    # (calendar_month -> "month", metallic_element -> "metal", but consume.v.02 stays "consume")
    best = 0 if used[0] > 0 or max(used) == 0 else used.index(max(used))
    return lemmas[best].name().replace("_", " ")


# the kinds of noun an adjective's derived noun may be to stand above it: what the adjective is a
# degree or kind of, not a thing it relates to ("salty" is no substance, "dear" no person)
_QUALITY_NOUNS = frozenset({"noun.attribute", "noun.feeling", "noun.state", "noun.phenomenon"})
_WORD_LEMMA = re.compile(r"[A-Za-z][A-Za-z_'-]*")


def category_name(synset: Synset) -> str:
    """Readable English name of a synset: its head lemma unless a sibling lemma is the one people
    use, underscores as spaces ("body_part" -> "body part", calendar_month.n.01 -> "month")."""
    return _display_name(synset)


# ----------------------------------------------------------------------------------- index


@dataclass(frozen=True)
class Category:
    """A WordNet synset proposed for a feature, with the tokens it selects."""

    synset: str  # WordNet name, e.g. "fruit.n.01"
    name: str  # display text, e.g. "fruit"
    token_ids: frozenset[int]  # extension: the vocabulary tokens under the synset
    coverage: float  # share of the feature's weight on the extension
    precision: float  # mean feature weight (scaled to max 1) over the extension
    score: float  # log-likelihood ratio against the uniform vocabulary, nats per unit weight


def normalise_token(token: str) -> str | None:
    """The lower-case English word a vocabulary token spells (numerals too: WordNet names "7" and
    "12" as it names "seven"), or None for punctuation, continuation pieces and function words."""
    if token.startswith("##"):
        return None
    word = token.lstrip("".join(_MARKERS)).strip().lower()
    if _NUMERAL.fullmatch(word):
        return word
    if len(word) < 2 or not _WORD.fullmatch(word) or word in FUNCTION_WORDS:
        return None
    return word


class CategoryIndex:
    """Every synset over a vocabulary's words, with its extension; built once per vocabulary."""

    def __init__(
        self,
        vocab: Sequence[str],
        wordnet: WordNetCorpusReader | None = None,
        *,
        min_membership: float = 0.1,
        noise: float = 0.1,
        max_extension_share: float = 0.5,
        tie_nats: float = 0.25,
        name_prior: float = 0.5,
    ):
        """min_membership: sense probability a token needs under a synset to be in its extension.
        noise: probability that a feature word comes from outside its category.
        max_extension_share: synsets over more of the word vocabulary than this are never proposed.
        tie_nats: score margin within which synsets with the same extension count as tied.
        name_prior: prior P(category) proportional to (1 + min(50, SemCor count of its name)) ** name_prior:
            categories people name ("mammal") are likelier descriptions than ones they do not
            ("placental")."""
        self.wn = wordnet or load_wordnet()
        self.noise = noise
        self.tie_nats = tie_nats
        self.name_prior = name_prior
        self.n_vocab = len(vocab)
        self._counts = _lemma_counts(self.wn)
        self._up_cache: dict[Synset, frozenset[Synset]] = {}

        rows, cols, vals = [], [], []
        col_of: dict[Synset, int] = {}
        by_word: dict[str, dict[Synset, float]] = {}
        word_cols: list[int] = []  # one entry per (distinct word, synset above it)
        for tid, token in enumerate(vocab):
            word = normalise_token(token)
            if word is None:
                continue
            first = word not in by_word
            if first:
                by_word[word] = self._membership(word, min_membership)
            for synset, m in by_word[word].items():
                c = col_of.setdefault(synset, len(col_of))
                rows.append(tid)
                cols.append(c)
                vals.append(m)
                if first:
                    word_cols.append(c)
        synsets = list(col_of)
        self._ext_words = np.bincount(np.asarray(word_cols, np.int64), minlength=len(synsets))
        matrix = sp.csc_matrix(
            (np.asarray(vals, np.float64), (np.asarray(rows, np.int64), np.asarray(cols, np.int64))),
            shape=(self.n_vocab, len(synsets)),
        )
        matrix.sum_duplicates()
        self.n_words = int(np.count_nonzero(np.diff(matrix.tocsr().indptr)))  # tokens that are words
        self._set_columns(matrix, synsets, max_extension_share)

    # -- senses ---------------------------------------------------------------------------

    def _senses(self, word: str) -> dict[Synset, float]:
        """P(sense | word) over noun, verb and adjective senses: SemCor counts, smoothed by
        1/rank so words without counts still prefer WordNet's earlier senses."""
        weights: dict[Synset, float] = {}
        for pos in _POS:
            forms = [word] + [f for f in self.wn._morphy(word, pos) if f != word and len(f) > 1]
            for form in forms:
                for rank, synset in enumerate(self._exact(form, pos), 1):
                    named = [lemma for lemma in synset.lemmas() if lemma.name().lower() == form]
                    count = max((self._counts.get(lemma.key(), 0) for lemma in named), default=0)
                    weights[synset] = max(weights.get(synset, 0.0), count + 1.0 / rank)
        total = sum(weights.values())
        return {s: w / total for s, w in weights.items()}

    def _exact(self, form: str, pos: str) -> list[Synset]:
        """Senses of exactly this lemma (no morphology: the caller already chose the forms)."""
        offsets = self.wn._lemma_pos_offset_map.get(form, {})
        found = []
        for p in ("a", "s") if pos == "a" else (pos,):
            found += [self.wn.synset_from_pos_and_offset(p, off) for off in offsets.get(p, [])]
        return found

    def _parents(self, synset: Synset) -> list[Synset]:
        """Hypernyms; for adjectives (which WordNet puts in no hierarchy) the cluster head, the noun
        attribute it values (large -> size, hot -> temperature), the nouns its words are derived
        with where spelled the same (blue, a colour) or naming a quality, feeling, state or
        phenomenon (happy -> happiness, a feeling; rainy -> rain, weather; not salty -> salt, a
        substance) and, for one valuing an attribute, its quality named by the same word."""
        pos = synset.pos()
        if pos in ("n", "v"):
            return synset.hypernyms() + synset.instance_hypernyms()
        heads = synset.similar_tos() if pos == "s" else []
        attributes = synset.attributes() + [a for h in heads for a in h.attributes()]
        parents = heads + synset.attributes()
        for lemma in synset.lemmas():
            name = lemma.name().lower()
            parents += [
                d.synset()
                for d in lemma.derivationally_related_forms()
                if d.synset().pos() == "n" and (d.name().lower() == name or d.synset().lexname() in _QUALITY_NOUNS)
            ]
            if attributes:  # an adjective valuing an attribute: its quality named by the same word
                parents += [n for n in self._exact(name, "n") if n.lexname() == "noun.attribute"]
        return parents

    def _up(self, synset: Synset) -> frozenset[Synset]:
        """The synset and everything above it."""
        cached = self._up_cache.get(synset)
        if cached is None:
            self._up_cache[synset] = frozenset([synset])  # guards the rare cycle
            above = [self._up(p) for p in self._parents(synset)]
            cached = frozenset([synset]).union(*above)
            self._up_cache[synset] = cached
        return cached

    def _membership(self, word: str, min_membership: float) -> dict[Synset, float]:
        """P(the word's sense lies under h) for every synset h reaching min_membership."""
        under: dict[Synset, float] = {}
        for sense, p in self._senses(word).items():
            for h in self._up(sense):
                under[h] = under.get(h, 0.0) + p
        return {h: min(m, 1.0) for h, m in under.items() if m >= min_membership}

    # -- columns --------------------------------------------------------------------------

    def _set_columns(self, matrix: sp.csc_matrix, synsets: list[Synset], max_share: float) -> None:
        self._synsets = synsets
        self._column_of_name = {s.name(): c for c, s in enumerate(synsets)}
        self._ext_size = np.diff(matrix.indptr).astype(np.float64)
        # equal keys <=> equal extensions: synsets that select the same tokens compete for one slot
        rows = (matrix.indices[matrix.indptr[c] : matrix.indptr[c + 1]] for c in range(len(synsets)))
        self._ext_key = np.array([hash(np.sort(r).tobytes()) for r in rows], np.int64)
        general = np.array([s.name() in TOO_GENERAL for s in synsets], bool)
        # capped: past a few dozen uses a name is simply familiar ("person" must not win on fame alone)
        self._log_prior = self.name_prior * np.log1p(np.minimum([self._familiarity(s) for s in synsets], 50))
        # a category over one word ("apple", "Ġapple") names nothing a token set does not
        self._proposable = (self._ext_words >= 2) & ~general & (self._ext_size <= max_share * max(self.n_words, 1))
        self._by_column = matrix
        self._by_token = matrix.tocsr()
        self._extensions: dict[int, frozenset[int]] = {}
        self._names: dict[int, str] = {}

    def _familiarity(self, synset: Synset) -> int:
        return max((self._counts.get(lemma.key(), 0) for lemma in synset.lemmas()), default=0)

    # -- public ---------------------------------------------------------------------------

    @property
    def n_categories(self) -> int:
        return len(self._synsets)

    def extension(self, synset: str) -> frozenset[int]:
        """Vocabulary token ids under a synset ("fruit.n.01"); empty when no vocabulary word is."""
        c = self._column_of_name.get(synset)
        if c is None:
            try:
                self.wn.synset(synset)
            except (WordNetError, ValueError) as e:
                raise UserError(f"unknown WordNet synset {synset!r}: {e}") from None
            return frozenset()
        return self._extension(c)

    def _extension(self, c: int) -> frozenset[int]:
        ext = self._extensions.get(c)
        if ext is None:
            ext = frozenset(self._by_column.indices[self._by_column.indptr[c] : self._by_column.indptr[c + 1]].tolist())
            self._extensions[c] = ext
        return ext

    def name(self, synset: str) -> str:
        """Display name of any synset by name ("calendar_month.n.01" -> "month")."""
        try:
            return _display_name(self.wn.synset(synset), self._counts)
        except (WordNetError, ValueError) as e:
            raise UserError(f"unknown WordNet synset {synset!r}: {e}") from None

    def lemma_of_forms(self, synset: str, words: Sequence[str]) -> str | None:
        """The lemma of ``synset`` that every one of ``words`` is a form of, or None: a category
        whose shown members are all one of its own words is named by that word (find.v.05, "find,
        feel", shown by "felt" and "feel" -> "feel", not "find")."""
        if not words:
            return None
        s = self.wn.synset(synset)
        pos = "a" if s.pos() == "s" else s.pos()
        lemmas = {lemma.name().lower(): lemma.name().replace("_", " ") for lemma in s.lemmas()}
        common = set(lemmas)
        for word in words:
            common &= {word, *self.wn._morphy(word, pos)}
            if not common:
                return None
        # WordNet's order among the lemmas left (a word that is two of them: the first)
        return next(lemmas[k] for k in lemmas if k in common)

    def _name(self, c: int) -> str:
        if c not in self._names:
            self._names[c] = _display_name(self._synsets[c], self._counts)
        return self._names[c]

    def propose(
        self, weights: Mapping[int, float] | sp.spmatrix | sp.sparray | np.ndarray, top_n: int = 5
    ) -> list[Category]:
        """The best-scoring categories for a feature's weighted tokens, best first. Only ratios of
        the weights matter; non-positive weights are ignored. Categories that explain the words no
        better than the uniform vocabulary are never returned."""
        ids, w = _as_sparse(weights, self.n_vocab)
        keep = w > 0
        ids, w = ids[keep], w[keep]
        if ids.size == 0 or top_n <= 0:
            return []
        u = w / w.max()
        total = u.sum()
        indptr, indices, data = self._by_token.indptr, self._by_token.indices, self._by_token.data
        starts, lens = indptr[ids], indptr[ids + 1] - indptr[ids]
        if lens.sum() == 0:
            return []
        # positions of every (token, synset) entry of the feature's tokens, without a Python loop
        pos = np.repeat(starts - np.cumsum(lens) + lens, lens) + np.arange(lens.sum())
        cols, m, uw = indices[pos], data[pos], np.repeat(u, lens)
        eps = self.noise
        # P(word | category) = P(its sense is under the category) / |extension|, mixed with noise
        ratio = np.log((1 - eps) * self.n_words * m / self._ext_size[cols] + eps) - np.log(eps)
        touched, local = np.unique(cols, return_inverse=True)  # only the synsets above these tokens
        gain = np.bincount(local, weights=uw * ratio, minlength=touched.size)
        hit = np.bincount(local, weights=uw, minlength=touched.size)
        fit = gain / total + np.log(eps)  # mean log P(word | category) / P(word | vocabulary)
        score = fit + self._log_prior[touched] / total  # with the name prior spread over the words
        proposable = self._proposable[touched]
        score[~proposable] = -np.inf
        candidates = np.flatnonzero(score > 0)
        if candidates.size == 0:
            return []
        ranked = candidates[np.argsort(-score[candidates], kind="stable")]
        # the best few distinct extensions, each with every synset selecting the same tokens
        # (a synset's fit, unlike its score, ignores its name)
        keys = self._ext_key[touched]
        best_keys = list(dict.fromkeys(keys[ranked[: 8 * top_n]].tolist()))[: 2 * top_n]
        chosen = []
        for k in best_keys:
            group = np.flatnonzero((keys == k) & proposable)
            chosen.append(self._name_for_extension(touched[group].tolist(), fit[group].tolist(), group.tolist()))
        chosen = sorted((i for i in chosen if score[i] > 0), key=lambda i: -score[i])[:top_n]
        return [
            Category(
                synset=self._synsets[touched[i]].name(),
                name=self._name(touched[i]),
                token_ids=self._extension(touched[i]),
                coverage=float(hit[i] / total),
                precision=float(hit[i] / self._ext_size[touched[i]]),
                score=float(score[i]),
            )
            for i in chosen
        ]

    def _name_for_extension(self, columns: list[int], fits: list[float], tags: list[int]) -> int:
        """The tag of one synset for synsets selecting the same tokens. Among the best-fitting one
        and its hyponyms that fit nearly as well, the most specific with a name people use: an
        ancestor fits a little better only through the words' other senses (cat -> guy -> organism),
        which says nothing about the feature."""
        if len(columns) == 1:
            return tags[0]
        synsets = [self._synsets[c] for c in columns]
        group = set(synsets)
        # specificity within the group: how many of the other members lie above a synset
        depth = [len(self._up(s) & group) for s in synsets]
        best = max(fits)
        idx = range(len(columns))
        top = synsets[max((i for i in idx if fits[i] >= best - 1e-9), key=depth.__getitem__)]
        close = [i for i in idx if fits[i] >= best - self.tie_nats]
        # down to the most specific hyponym of the best, then up to the first name people use
        bottom = synsets[max((i for i in close if top in self._up(synsets[i])), key=depth.__getitem__)]
        chain = [i for i in close if synsets[i] in self._up(bottom)]
        chain.sort(key=lambda i: (-depth[i], -self._familiarity(synsets[i])))
        familiar = [i for i in chain if self._familiarity(synsets[i]) > 0]
        return tags[(familiar or chain)[0]]


def _as_sparse(weights, n_vocab: int) -> tuple[np.ndarray, np.ndarray]:
    """(token ids, weights) from a dict, a dense vector or a scipy sparse vector."""
    if isinstance(weights, Mapping):
        ids = np.fromiter(weights.keys(), np.int64, len(weights))
        w = np.fromiter(weights.values(), np.float64, len(weights))
    elif sp.issparse(weights):
        coo = sp.coo_array(weights)
        coo.sum_duplicates()
        if coo.ndim == 2 and 1 not in coo.shape:
            raise ValueError(f"weights must be a vector, got shape {coo.shape}")
        if coo.ndim == 1:
            ids = coo.coords[0]
        else:
            ids = coo.col if coo.shape[0] == 1 else coo.row
        ids = ids.astype(np.int64)
        w = coo.data.astype(np.float64)
    else:
        dense = np.asarray(weights, np.float64).ravel()
        ids = np.flatnonzero(dense)
        w = dense[ids]
    if ids.size and (ids.min() < 0 or ids.max() >= n_vocab):
        raise ValueError(f"token id out of range for a vocabulary of {n_vocab}")
    return ids, w
