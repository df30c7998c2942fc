"""Labels on real English: Jane Austen's six novels, a tiny model and SAE trained on them, every
label method scored on held-out text.

    python benchmarks/real_corpus.py build [--install]   # corpus, tokenizer, model, SAE -> stores/real-world/
    python benchmarks/real_corpus.py run [--methods a,b] # extract -> train translators -> label + score
    python benchmarks/real_corpus.py report [--json]     # per-method numbers + 20 random features
    python benchmarks/real_corpus.py all                 # the three in order

Prerequisite: the corpus ships in Debian's `r-cran-janeaustenr` (the novels from Project
Gutenberg, public domain; package MIT). Either

    apt-get install r-cran-janeaustenr     # pulls in R, which this script does not use
    python benchmarks/real_corpus.py build --install   # or: apt-get download + dpkg-deb -x into stores/

The novels are read straight from the package's R lazy-load database (no R needed), split into
one document per paragraph, shuffled (fixed seed) so any prefix spans all six books, and
written to `stores/real-world/corpus/train.txt`. A word-level tokenizer (lower-cased words,
every punctuation mark its own token, the 8,192 most frequent kept, the rest `<unk>`)
and a tiny GPT-NeoX are trained on it, then an SAE on its residual stream with sae-lens's
trainer. The world is reused when present with the same settings; a run is started over when
its world changes.

Time on an idle 2-core CPU: build 3.5 min; run 13 min (extract 10 s, both translators at the
demo's 1,500 steps 12 min, label + scores 45 s); report seconds. `run --steps 300` trains in
half the time and gives labels well below the 1,500-step ones (BENCHMARKS.md); on a busy
machine (load ~8) every figure is two to three times longer.
Run from the repository root; in a git worktree put it first on the path (PYTHONPATH=.) so its
own package is imported.

No ground truth exists here: the scores are embedding AUROC, detection and simulation.
"""

from __future__ import annotations

import argparse
import bz2
import gzip
import hashlib
import json
import lzma
import random
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from sae_translate.errors import UserError

PACKAGE = "r-cran-janeaustenr"
DATA_SUBDIR = Path("usr/lib/R/site-library/janeaustenr/data")
SYSTEM_ROOT = Path("/")
WORLD_DIR = Path("stores/real-world")
RUN_DIR = Path("stores/real-corpus")
DB = RUN_DIR / "labels.duckdb"
MANIFEST = "real_world.json"
BOOKS = ("sensesensibility", "prideprejudice", "mansfieldpark", "emma", "northangerabbey", "persuasion")
# The demo pipeline's translator settings (sae_translate/demo.toml), kept in step with it.
TRAIN_SECTION_KEYS = (
    "steps",
    "dictionary_until",
    "batch_size",
    "crop",
    "dim",
    "depth",
    "decoder_depth",
    "eval_every",
    "checkpoint_every",
)
N_SAMPLE = 20
N_TOP_EXAMPLES = 3


@dataclass
class RealWorldSettings:
    """What determines the built world (besides the package's text)."""

    vocab: int = 8192  # tokenizer vocabulary cap, special tokens included
    # The 8k-way unembedding dominates each step's cost on CPU, so the model is narrow and
    # the batch small: ~1.2 passes over the ~0.9M-token corpus.
    d_model: int = 64
    n_layers: int = 3  # the SAE reads the middle: blocks.1.hook_resid_post
    n_heads: int = 4
    ctx: int = 64
    lm_steps: int = 1000
    lm_batch_size: int = 16
    d_sae: int = 1024
    sae_k: int = 8
    sae_training_tokens: int = 1_228_800
    seed: int = 0


# ------------------------------------------------------------------ reading the R package


def _find_data_dir(world_dir: Path) -> Path | None:
    """The package's data directory: installed system-wide, or unpacked under the world dir."""
    for root in (SYSTEM_ROOT, world_dir / "package"):
        if (root / DATA_SUBDIR / "Rdata.rdx").is_file():
            return root / DATA_SUBDIR
    return None


def install_package(world_dir: Path) -> None:
    """Unpack the Debian package under `world_dir/package` (apt-get download + dpkg-deb -x):
    the data alone, without the R it depends on."""
    target = world_dir / "package"
    with tempfile.TemporaryDirectory() as tmp:
        try:
            subprocess.run(["apt-get", "download", PACKAGE], cwd=tmp, check=True, capture_output=True, text=True)
        except FileNotFoundError as e:
            raise UserError("apt-get not found; install the corpus by hand: apt-get install " + PACKAGE) from e
        except subprocess.CalledProcessError as e:
            last = (e.stderr.strip().splitlines() or ["no output"])[-1]
            raise UserError(f"apt-get download {PACKAGE} failed ({last}); run apt-get update first") from e
        debs = sorted(Path(tmp).glob(f"{PACKAGE}_*.deb"))
        target.mkdir(parents=True, exist_ok=True)
        subprocess.run(["dpkg-deb", "-x", str(debs[-1]), str(target)], check=True)


class _RReader:
    """R's XDR serialization (format 2 or 3), for the types an R data package stores: its index
    (a named list of integer offsets) and character vectors. Named lists become dicts."""

    NIL, SYM, LIST, CHAR, LGL, INT, REAL, STR, VEC, REF = 254, 1, 2, 9, 10, 13, 14, 16, 19, 255

    def __init__(self, data: bytes):
        if data[:2] != b"X\n":
            raise ValueError("not XDR-serialized R data")
        self.data, self.pos, self.refs = data, 2, []
        version = self._int()
        self.pos += 8  # writer and minimal reader R versions
        if version == 3:
            n = self._int()
            self.pos += n  # the writer's native encoding name

    def _int(self) -> int:
        (value,) = struct.unpack_from(">i", self.data, self.pos)
        self.pos += 4
        return value

    def _array(self, fmt: str, size: int) -> list:
        n = self._int()
        values = list(struct.unpack_from(f">{n}{fmt}", self.data, self.pos))
        self.pos += n * size
        return values

    def read(self) -> Any:
        flags = self._int()
        kind, has_attr, has_tag = flags & 0xFF, bool(flags & 0x200), bool(flags & 0x400)
        if kind == self.NIL:
            return None
        if kind == self.REF:
            return self.refs[(flags >> 8) - 1]
        if kind == self.SYM:
            self.refs.append(self.read())
            return self.refs[-1]
        if kind == self.LIST:  # a pairlist: attributes and tags, returned as a dict
            if has_attr:
                self.read()
            tag = self.read() if has_tag else None
            head = {tag: self.read()}
            return head | (self.read() or {})
        if kind == self.CHAR:
            n = self._int()
            if n < 0:
                return None
            raw = self.data[self.pos : self.pos + n]
            self.pos += n
            return raw.decode("utf-8", errors="replace")
        if kind in (self.LGL, self.INT):
            value: Any = self._array("i", 4)
        elif kind == self.REAL:
            value = self._array("d", 8)
        elif kind in (self.STR, self.VEC):
            value = [self.read() for _ in range(self._int())]
        else:
            raise ValueError(f"unsupported R type {kind}")
        if has_attr:
            names = (self.read() or {}).get("names")
            if names is not None and kind == self.VEC:
                value = dict(zip(names, value))
        return value


def _lazyload_object(rdb: bytes, offset: int, length: int) -> Any:
    """One object of an R lazy-load database: 4-byte length, then a compressed serialization."""
    blob = rdb[offset + 4 : offset + length]
    if blob[0] == 0x78:  # a bare zlib stream (compress = TRUE)
        raw = zlib.decompress(blob)
    else:  # a type byte first (compress = 2 or 3)
        raw = {b"Z": zlib.decompress, b"2": bz2.decompress, b"X": lzma.decompress, b"0": bytes}[blob[:1]](blob[1:])
    return _RReader(raw).read()


def read_novels(data_dir: Path) -> dict[str, list[str]]:
    """Each novel's lines (as Project Gutenberg wraps them; "" between paragraphs)."""
    index = _RReader(gzip.decompress((data_dir / "Rdata.rdx").read_bytes())).read()
    rdb = (data_dir / "Rdata.rdb").read_bytes()
    books = {name: _lazyload_object(rdb, *index["variables"][name]) for name in BOOKS}
    return {name: [line or "" for line in lines] for name, lines in books.items()}


_HEADING = re.compile(r"^(chapter|volume)\b|^[ivxlc]+\.?$|^the end$", re.IGNORECASE)


def paragraphs(lines: list[str]) -> list[str]:
    """Paragraphs (lines joined with spaces), without chapter headings and Gutenberg's
    _underscore_ italics marks."""
    out, current = [], []
    for line in lines + [""]:
        if line.strip():
            current.append(line.strip())
            continue
        if current:
            text = " ".join(current).replace("_", "")
            if not _HEADING.match(text) and len(text.split()) >= 3:
                out.append(text)
            current = []
    return out


# ------------------------------------------------------------------ build


def _settings_digest(settings: RealWorldSettings, corpus_digest: str) -> str:
    identity = {"settings": asdict(settings), "corpus": corpus_digest, "format": 1}
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]


def load_corpus(world_dir: Path, install: bool, seed: int) -> list[str]:
    """Every paragraph of the six novels, shuffled with `seed`."""
    data_dir = _find_data_dir(world_dir)
    if data_dir is None and install:
        install_package(world_dir)
        data_dir = _find_data_dir(world_dir)
    if data_dir is None:
        raise UserError(
            f"the corpus is not installed: apt-get install {PACKAGE}, "
            "or run `python benchmarks/real_corpus.py build --install`"
        )
    docs = [p for lines in read_novels(data_dir).values() for p in paragraphs(lines)]
    random.Random(seed).shuffle(docs)
    return docs


def build(settings: RealWorldSettings, world_dir: Path, install: bool, threads: int, force: bool) -> dict[str, Any]:
    """Build (or reuse) the world: corpus, tokenizer + model, SAE. Returns its manifest."""
    import torch

    from sae_translate.extract.sae_training import replace_dir
    from sae_translate.world import lm
    from sae_translate.world.build import (
        WorldBuildConfig,
        set_sae_model_name,
        train_model_and_sae,
    )

    start = time.perf_counter()
    docs = load_corpus(world_dir, install, settings.seed)
    text = "\n".join(docs) + "\n"
    digest = _settings_digest(settings, hashlib.sha256(text.encode()).hexdigest())
    manifest_path = world_dir / MANIFEST
    if not force and manifest_path.is_file():
        manifest = json.loads(manifest_path.read_text())
        if manifest.get("digest") == digest:
            print(f"world reused: {world_dir}", file=sys.stderr)
            return manifest

    world_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{world_dir.name}.build-", dir=world_dir.parent))
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        (tmp / "corpus").mkdir()
        corpus_file = tmp / "corpus" / "train.txt"
        corpus_file.write_text(text, encoding="utf-8")
        n_words = sum(len(d.split()) for d in docs)
        print(f"corpus: {len(docs):,} paragraphs, {n_words:,} words", file=sys.stderr)
        tokenizer = lm.train_tokenizer(docs, lowercase=True, split_punctuation=True, max_vocab=settings.vocab)
        cfg = WorldBuildConfig(
            out=world_dir,
            d_model=settings.d_model,
            n_layers=settings.n_layers,
            n_heads=settings.n_heads,
            ctx=settings.ctx,
            lm_steps=settings.lm_steps,
            lm_batch_size=settings.lm_batch_size,
            d_sae=settings.d_sae,
            sae_k=settings.sae_k,
            sae_training_tokens=settings.sae_training_tokens,
            sae_batch_size_tokens=4096,
            seed=settings.seed,
            threads=threads,
        )
        trained = train_model_and_sae(tmp, corpus_file, docs, tokenizer, cfg)
        set_sae_model_name(tmp / "sae", str(world_dir / "model"))
        encoded = tokenizer.backend_tokenizer.encode_batch(docs)
        n_tokens = sum(len(e.ids) + 1 for e in encoded)  # + the EOS after each paragraph
        n_unk = sum(e.ids.count(tokenizer.unk_token_id) for e in encoded)
        # A package left in the old world dir (--install) moves along with the new one.
        if (world_dir / "package").is_dir():
            shutil.move(str(world_dir / "package"), str(tmp / "package"))
        manifest = {
            "digest": digest,
            "package": PACKAGE,
            "hook": cfg.hook_name,
            "settings": asdict(settings),
            "sizes": {
                "paragraphs": len(docs),
                "words": n_words,
                "tokens": n_tokens,
                "unk_share": n_unk / n_tokens,
                "vocab": len(tokenizer),
                "windows": trained["windows"],
            },
            "model": trained["model"],
            "sae": trained["sae"],
            "timings": {**trained["timings"], "total_s": time.perf_counter() - start},
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2))
        replace_dir(tmp, world_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        torch.set_num_threads(previous_threads)
    print(f"world built in {manifest['timings']['total_s']:.0f}s: {world_dir}", file=sys.stderr)
    return manifest


# ------------------------------------------------------------------ run


def applicable_methods(run_dir: Path) -> list[str]:
    """Every registered label method the run can serve: translator methods need their trained
    checkpoint, logit-lens needs the run's logit-lens tokens."""
    from sae_translate import label as label_module
    from sae_translate.store.h5 import RunStore

    run = RunStore.open(run_dir)
    methods = []
    for name in sorted(label_module.LABELERS):
        if name.startswith("translator"):
            from sae_translate.translator.run import translator_dir

            mode = "unsupervised" if name == "translator" else name.removeprefix("translator-")
            if not (translator_dir(run.dir, mode) / "best.safetensors").exists():
                continue
        if name == "logit-lens" and run.logit_lens_tokens is None:
            continue
        methods.append(name)
    return methods


def run_pipeline_stages(
    world_dir: Path, run_dir: Path, db: Path, methods: list[str] | None, tokens: int, steps: int, threads: int
) -> None:
    """extract -> train (unsupervised + aligned, the demo's settings) -> label + score, through
    the same stage runners `sae-translate run` uses."""
    import torch

    from sae_translate.config import PipelineConfig, load_pipeline
    from sae_translate.pipeline import (
        DEMO_PIPELINE,
        PipelineState,
        stage_extract,
        stage_label,
        stage_train,
    )

    manifest_path = world_dir / MANIFEST
    if not manifest_path.is_file():
        raise UserError(f"no world in {world_dir}; run `python benchmarks/real_corpus.py build` first")
    manifest = json.loads(manifest_path.read_text())
    # extract knows the model and SAE by path only: a run of an older world is started over
    stamp = run_dir / "world_digest"
    if run_dir.is_dir() and (not stamp.is_file() or stamp.read_text() != manifest["digest"]):
        shutil.rmtree(run_dir)
    torch.set_num_threads(threads)
    demo = load_pipeline(DEMO_PIPELINE).stages
    train = {k: v for k, v in demo["train"].items() if k in TRAIN_SECTION_KEYS or k == "modes"}
    if steps:  # the anchor is still learned for the demo's first 600 steps: all of a short run
        train["steps"] = steps
    extract = {
        "model": str(world_dir / "model"),
        "sae": str(world_dir / "sae"),
        "hook": manifest["hook"],
        "dataset": str(world_dir / "corpus" / "train.txt"),
        "out": str(run_dir),
        "tokens": tokens,
        "ctx": manifest["settings"]["ctx"],
        "batch_size": 64,
        "chunk_seqs": 512,
        "device": "cpu",
    }
    state = PipelineState(PipelineConfig(name=run_dir.name, stages={"extract": extract}))
    for name, runner, section in (("extract", stage_extract, extract), ("train", stage_train, train)):
        t0 = time.perf_counter()
        print(f"== {name}", flush=True)
        runner(state, dict(section))
        stamp.write_text(manifest["digest"])
        print(f"   {name} done in {time.perf_counter() - t0:.0f}s", flush=True)
    chosen = methods or applicable_methods(run_dir)
    label = {"db": str(db), "methods": chosen, "scorers": ["embedding", "detection", "simulation"], "device": "cpu"}
    t0 = time.perf_counter()
    print(f"== label ({', '.join(chosen)})", flush=True)
    stage_label(state, label)
    print(f"   label done in {time.perf_counter() - t0:.0f}s", flush=True)


# ------------------------------------------------------------------ report


@dataclass
class MethodReport:
    method: str
    embedding: float | None
    detection: float | None
    simulation: float | None
    n_features: int
    distinct_labels: int
    top_label: str
    top_label_share: float


def method_reports(con: Any, run_id: str) -> list[MethodReport]:
    means = {
        (m, s): v
        for m, s, v in con.execute(
            "SELECT method, scorer, mean FROM score_summary WHERE run_id = ?", [run_id]
        ).fetchall()
    }
    rows = con.execute(
        "SELECT method, label FROM labels WHERE run_id = ? AND rank = 0 ORDER BY method, feature", [run_id]
    ).fetchall()
    by_method: dict[str, list[str]] = {}
    for method, label in rows:
        by_method.setdefault(method, []).append(label)
    out = []
    for method, labels in by_method.items():
        top, count = Counter(labels).most_common(1)[0]
        out.append(
            MethodReport(
                method,
                means.get((method, "embedding")),
                means.get((method, "detection")),
                means.get((method, "simulation")),
                len(labels),
                len(set(labels)),
                top,
                count / len(labels),
            )
        )
    return out


def feature_sample(con: Any, run_id: str, n: int, seed: int) -> list[dict[str, Any]]:
    """`n` random labelled features (fixed seed): each method's label and the top examples."""
    features = [
        f
        for (f,) in con.execute(
            "SELECT DISTINCT feature FROM labels WHERE run_id = ? ORDER BY feature", [run_id]
        ).fetchall()
    ]
    chosen = sorted(random.Random(seed).sample(features, min(n, len(features))))
    sample = []
    for f in chosen:
        labels = dict(
            con.execute(
                "SELECT method, label FROM labels WHERE run_id = ? AND feature = ? AND rank = 0 ORDER BY method",
                [run_id, f],
            ).fetchall()
        )
        examples = [
            t
            for (t,) in con.execute(
                "SELECT text FROM examples WHERE run_id = ? AND feature = ? AND kind = 'top' ORDER BY rank LIMIT ?",
                [run_id, f, N_TOP_EXAMPLES],
            ).fetchall()
        ]
        sample.append({"feature": f, "labels": labels, "top_examples": examples})
    return sample


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def print_report(reports: list[MethodReport], sample: list[dict[str, Any]], header: str) -> None:
    print(header)
    width = max(len("method"), *(len(r.method) for r in reports))
    print(
        f"{'method':<{width}}  {'embedding':>9}  {'detection':>9}  {'simulation':>10}  {'labels':>6}  "
        f"{'distinct':>8}  {'top share':>9}  most common label"
    )
    for r in reports:
        print(
            f"{r.method:<{width}}  {_fmt(r.embedding):>9}  {_fmt(r.detection):>9}  {_fmt(r.simulation):>10}  "
            f"{r.n_features:>6}  {r.distinct_labels:>8}  {r.top_label_share:>9.1%}  {r.top_label!r}"
        )
    print(
        f"\n{len(sample)} random features (seed 0): each method's label, then the top "
        f"{N_TOP_EXAMPLES} held-out windows («firing token»)"
    )
    for item in sample:
        print(f"\nfeature {item['feature']}")
        for method, label in item["labels"].items():
            print(f"  {method:<{width}}  {label}")
        for text in item["top_examples"]:
            print(f"    | {text}")


def report(db: Path, run_id: str, as_json: bool, seed: int) -> None:
    from sae_translate.store.db import connect_readonly

    if not db.is_file():
        raise UserError(f"no label database at {db}; run `python benchmarks/real_corpus.py run` first")
    con = connect_readonly(db)
    try:
        reports = method_reports(con, run_id)
        if not reports:
            raise UserError(f"run {run_id!r} has no labels in {db}; run `python benchmarks/real_corpus.py run` first")
        sample = feature_sample(con, run_id, N_SAMPLE, seed)
        runs = con.execute("SELECT n_tokens, d_sae FROM runs WHERE run_id = ?", [run_id]).fetchone()
        alive = con.execute("SELECT count(*) FROM features WHERE run_id = ? AND alive", [run_id]).fetchone()[0]
    finally:
        con.close()
    if as_json:
        print(
            json.dumps(
                {
                    "run_id": run_id,
                    "n_tokens": runs[0],
                    "d_sae": runs[1],
                    "alive": alive,
                    "methods": [asdict(r) for r in reports],
                    "sample": sample,
                }
            )
        )
        return
    print_report(
        reports,
        sample,
        f"run {run_id}: {runs[0]:,} tokens, {alive}/{runs[1]} features alive "
        f"(held-out scores; no ground truth on real text)",
    )


# ------------------------------------------------------------------ command line


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("command", choices=("build", "run", "report", "all"))
    p.add_argument("--install", action="store_true", help=f"fetch {PACKAGE} with apt-get download when missing")
    p.add_argument("--force", action="store_true", help="rebuild the world even when one matches")
    p.add_argument("--world", type=Path, default=WORLD_DIR)
    p.add_argument("--out", type=Path, default=RUN_DIR, help="run directory")
    p.add_argument("--db", type=Path, default=DB)
    p.add_argument("--methods", default="", help="comma-separated; default every registered method that applies")
    p.add_argument("--tokens", type=int, default=409_600, help="tokens extracted")
    p.add_argument(
        "--steps",
        type=int,
        default=0,
        help="translator steps, the demo's other settings (0: the demo's 1500; 300 for a quick, weaker run)",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads; small matrices gain little from more, and lose when cores are busy",
    )
    p.add_argument("--json", action="store_true", help="report: one JSON object")
    p.add_argument("--seed", type=int, default=0, help="report: the sample of features")
    args = p.parse_args()
    try:
        if args.command in ("build", "all"):
            build(RealWorldSettings(), args.world, args.install, args.threads, args.force)
        if args.command in ("run", "all"):
            methods = [m.strip() for m in args.methods.split(",") if m.strip()] or None
            run_pipeline_stages(args.world, args.out, args.db, methods, args.tokens, args.steps, args.threads)
        if args.command in ("report", "all"):
            report(args.db, args.out.name, args.json, args.seed)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
