"""The command line: options derived from the stage configs, the commands end to end, progress output."""

from __future__ import annotations

import dataclasses
import io
import json
import os
import signal
import subprocess
import sys
import time
import typing
from dataclasses import dataclass, field
from pathlib import Path

import click
import pytest
import typer

from sae_translate.bench.hmm import BenchConfig, HMMConfig
from sae_translate.cli import app
from sae_translate.errors import UserError
from sae_translate.extract.extract import ExtractConfig
from sae_translate.extract.sae_training import TrainSaeConfig
from sae_translate.label import LabelConfig
from sae_translate.options import field_help
from sae_translate.report import ReportConfig
from sae_translate.translator.languages import LanguageConfig
from sae_translate.translator.train import TranslatorConfig, checkpoint_meta

ROOT = Path(__file__).resolve().parents[1]
# one thread per process: oversubscribed cores make each training step seconds instead of milliseconds
ENV = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


def _cli(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "sae_translate", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=ENV,
        timeout=timeout,
    )


def _command(path: str) -> click.Command:
    cmd = typer.main.get_command(app)
    for name in path.split():
        cmd = cmd.commands[name]  # type: ignore[attr-defined]
    return cmd


def _expected(value, hint):
    """A dataclass default as the CLI shows it: tuples of strings comma-joined, of ints a list."""
    if isinstance(value, tuple):
        return ",".join(value) if typing.get_args(hint)[0] is str else (list(value) or None)
    return value


# every command, the configs it is built from, and the fields that are set in code instead
COMMANDS = [
    ("extract", [(ExtractConfig, {"progress"}, {})]),
    ("train-sae", [(TrainSaeConfig, set(), {})]),
    ("label", [(LabelConfig, set(), {})]),
    ("report", [(ReportConfig, set(), {"features": "feature"})]),
    ("train", [(TranslatorConfig, {"progress"}, {}), (LanguageConfig, {"seed"}, {})]),
    (
        "bench hmm",
        [
            (HMMConfig, set(), {}),
            (
                BenchConfig,
                {"hmm", "translator", "aligned_translator"},
                {"n_train": "train_sentences", "n_test": "test_sentences", "out_dir": "out"},
            ),
        ],
    ),
]


def test_bench_translator_options_default_to_the_benchmarks_translator():
    params = {p.name: p for p in _command("bench hmm").params}
    bench = BenchConfig().translator
    assert (params["steps"].default, params["batch_size"].default, params["device"].default) == (
        bench.steps,
        bench.batch_size,
        bench.device,
    )
    assert "lr" not in params  # only the three the benchmark exposes
    for name in ("steps", "batch_size"):  # the field's help once, then what the option sets
        text = params[name].help
        assert text.endswith("(the unsupervised translator's; the aligned bound keeps its own, see --defaults)")
        assert text.count(field_help(TranslatorConfig)[name]) == 1, text
    assert params["device"].help == "auto, cpu, cuda, cuda:1, ..."


@pytest.mark.parametrize("command, configs", COMMANDS, ids=[c for c, _ in COMMANDS])
def test_every_option_default_and_help_come_from_the_stage_config(command, configs):
    params = {p.name: p for p in _command(command).params}
    for cls, skipped, renamed in configs:
        helps, hints = field_help(cls), typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if f.name in skipped:
                assert f.name not in params or cls is LanguageConfig  # seed comes from the translator's
                continue
            param = params[renamed.get(f.name, f.name)]
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                assert param.required, f.name
            else:
                default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
                shown = param.default
                same_path = isinstance(default, Path) and Path(shown) == default
                assert shown == _expected(default, hints[f.name]) or same_path, (command, f.name, shown, default)
            if helps.get(f.name):
                assert helps[f.name] in (param.help or ""), (command, f.name)


@pytest.mark.parametrize("group", ["", "bench"])
def test_command_lists_show_each_command_in_one_unbroken_sentence(group):
    commands = (_command(group) if group else typer.main.get_command(app)).commands  # type: ignore[attr-defined]
    for name, cmd in commands.items():
        listed = (cmd.short_help or cmd.help or "").split("\n\n")[0]  # what the list shows
        assert "\n" not in listed.strip(), (name, listed)


def test_train_help_gives_each_device_default_instead_of_the_config_default():
    from sae_translate.translator.config import DEVICE_DEFAULTS

    params = {p.name: p for p in _command("train").params}
    for name in DEVICE_DEFAULTS["cpu"]:
        cpu, cuda = DEVICE_DEFAULTS["cpu"][name], DEVICE_DEFAULTS["cuda"][name]
        assert f"(when not given: {cpu} on a CPU, {cuda} on CUDA)" in params[name].help
        assert params[name].show_default is False
    assert params["lr"].show_default is not False


def test_field_help_reads_metadata_docstrings_comments_and_sections():
    @dataclass
    class Example:
        a: int = 1  # the trailing comment
        b: str = "x"
        """the docstring"""
        c: float = field(default=0.5, metadata={"help": "from metadata"})  # not this
        # a section
        d: bool = False
        e: str = "# not a comment"
        # a comment of several lines right above a field
        # is that field's own help, whole
        f: int = 0
        g: int = 0

    helps = field_help(Example)
    assert helps["a"] == "the trailing comment"
    assert helps["b"] == "the docstring"
    assert helps["c"] == "from metadata"
    assert helps["d"] == "(a section)"
    assert helps["e"] == "(a section)"
    assert helps["f"] == "a comment of several lines right above a field is that field's own help, whole"
    assert helps["g"] == "(a section)"  # it names no section


def test_true_defaults_can_be_switched_off_and_lists_are_parsed():
    ctx = _command("report").make_context("report", ["--run", "r", "--feature", "3", "--feature", "5"])
    assert ctx.params["feature"] == [3, 5]
    ctx = _command("train").make_context("train", ["--run", "r", "--no-anchor", "--no-amp"])
    assert ctx.params["anchor"] is False and ctx.params["amp"] is False
    ctx = _command("bench hmm").make_context("hmm", ["--no-aligned", "--train-sentences", "10"])
    assert ctx.params["aligned"] is False and ctx.params["train_sentences"] == 10


@pytest.mark.parametrize(
    "option, message",
    [
        (["--test-sentences", "0"], "error: --train-sentences and --test-sentences must be 1 or more (got 20000, 0)"),
        (["--ablate", "--benchmarks", "{tmp}/missing/B.md"], "error: cannot write {tmp}/missing/B.md: "),
        (["--ablate", "--benchmarks", "{tmp}"], "error: {tmp} is a directory; choose another --benchmarks"),
    ],
)
def test_bench_hmm_rejects_bad_settings_before_training(tmp_path, option, message):
    # each of these used to train for minutes first (the ablation table was only written at the end)
    result = _cli("bench", "hmm", *[o.replace("{tmp}", str(tmp_path)) for o in option], timeout=60)
    assert result.returncode == 1
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert result.stderr.startswith(message.replace("{tmp}", str(tmp_path))), result.stderr


def test_readme_command_table_names_only_real_options():
    """Every --option the README's command table shows exists on that command."""
    readme = (ROOT / "README.md").read_text()
    rows = [line for line in readme.splitlines() if line.startswith("| `sae-translate ")]
    assert rows
    group = typer.main.get_command(app)
    for row in rows:
        words = row.split("`")[1].split()
        name = words[1] if words[1] != "bench" else f"{words[1]} {words[2]}"
        cmd = group.commands[name.split()[0]]  # type: ignore[attr-defined]
        if " " in name:
            cmd = cmd.commands[name.split()[1]]  # type: ignore[attr-defined]
        known = {o for p in cmd.params for o in (*p.opts, *p.secondary_opts)}
        for word in words:
            opt = word.strip("[]").split("=")[0]
            if opt.startswith("--"):
                assert opt in known, (name, opt)


# ------------------------------------------------------------------ start-up cost

# seconds to import; only the stage that runs needs them, never --help or a query
HEAVY = ("torch", "nltk", "x_transformers", "transformer_lens", "sae_lens")

_STARTUP = """
import json, sys

heavy = sys.argv[1].split(",")
import sae_translate.cli  # noqa: E402

after_import = [m for m in heavy if m in sys.modules]
if sys.argv[2:]:
    import typer
    from typer.testing import CliRunner

    def paths(cmd, prefix=()):
        yield prefix
        for name, sub in getattr(cmd, "commands", {}).items():
            yield from paths(sub, (*prefix, name))

    runner, exits = CliRunner(), {}
    for path in paths(typer.main.get_command(sae_translate.cli.app)):
        exits[" ".join((*path, "--help"))] = runner.invoke(sae_translate.cli.app, [*path, "--help"]).exit_code
    query = ["query", "--db", sys.argv[2], "SELECT count(*) FROM labels"]
    exits["query"] = runner.invoke(sae_translate.cli.app, query).exit_code
    print(json.dumps({"after_import": after_import, "after_commands": [m for m in heavy if m in sys.modules],
                      "exits": exits}))
else:
    print(json.dumps({"after_import": after_import}))
"""


def _startup(*db: str) -> dict:
    result = subprocess.run(
        [sys.executable, "-c", _STARTUP, ",".join(HEAVY), *db],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=ENV,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.splitlines()[-1])


def test_importing_the_command_line_imports_no_heavy_library():
    assert _startup()["after_import"] == []


def test_help_of_every_command_and_a_query_import_no_heavy_library(tmp_path):
    from sae_translate.store import db as label_db

    db = tmp_path / "labels.duckdb"
    with label_db.write_transaction(db):
        pass  # an empty database with the schema
    seen = _startup(str(db))
    assert {"--help", "extract --help", "label --help", "bench hmm --help", "query"} <= set(seen["exits"])
    assert set(seen["exits"].values()) == {0}, seen["exits"]
    assert seen["after_import"] == [] and seen["after_commands"] == []


def test_query_takes_a_lean_path_with_the_typer_commands_options_and_output(tmp_path):
    from typer.testing import CliRunner

    from sae_translate.entry import query_parser
    from sae_translate.store import db as label_db

    # the same argument and options, with the same defaults, as the documented typer command
    command = typer.main.get_command(app).commands["query"]  # type: ignore[attr-defined]
    typer_opts = {o: p.default for p in command.params for o in p.opts}
    lean = {o: a.default for a in query_parser()._actions for o in (a.option_strings or [a.dest])}
    assert set(lean) == set(typer_opts)
    assert {o: str(d) for o, d in lean.items() if d is not None} == {
        o: str(d) for o, d in typer_opts.items() if d is not None
    }

    path = tmp_path / "labels.duckdb"
    with label_db.write_transaction(path) as con:
        con.execute("INSERT INTO meta VALUES ('note', 'a ''quoted'' value'), ('n', '2')")
    sql = "SELECT key, value FROM meta ORDER BY key"
    probe = "import sys, runpy; sys.argv = ['sae-translate', *sys.argv[1:]]; runpy.run_module('sae_translate')"
    for fmt in ("table", "csv", "json"):
        lean_run = subprocess.run(
            [sys.executable, "-X", "importtime", "-c", probe, "query", sql, "--db", str(path), "--format", fmt],
            capture_output=True,
            text=True,
            cwd=ROOT,
            env=ENV,
            timeout=120,
        )
        assert lean_run.returncode == 0, lean_run.stderr
        imported = {line.split("|")[-1].strip() for line in lean_run.stderr.splitlines() if "|" in line}
        assert not {"typer", "pydantic", "sae_translate.cli"} & imported
        via_typer = CliRunner().invoke(app, ["query", sql, "--db", str(path), "--format", fmt])
        assert via_typer.exit_code == 0 and lean_run.stdout == via_typer.stdout

    for args, message in (
        (["SELECT 1", "--db", str(tmp_path / "missing.duckdb")], "error: no label database at"),
        (["SELECT nope", "--db", str(path)], "error: SQL error:"),
        (["SELECT 1", "--db", str(path), "--format", "xml"], "error: unknown --format 'xml'"),
        (["", "--db", str(path)], "error: empty SQL statement"),
        (["  \n ", "--db", str(path)], "error: empty SQL statement"),
        (["-- only a comment", "--db", str(path)], "error: empty SQL statement"),
        (["SELECT 1; SELECT 2", "--db", str(path)], "error: one SQL statement at a time (got 2)"),
    ):
        bad = _cli("query", *args)
        assert bad.returncode == 1 and bad.stderr.startswith(message) and "Traceback" not in bad.stderr, bad.stderr
        assert len(bad.stderr.strip().splitlines()) == 1


# ------------------------------------------------------------------ progress in logs


def test_progress_on_a_non_terminal_writes_plain_lines_at_most_every_interval():
    from sae_translate.progress import LineProgress, progress

    stream = io.StringIO()  # not a terminal
    bar = progress(total=1000, desc="work", file=stream, interval=0.2)
    assert isinstance(bar, LineProgress)
    start = time.monotonic()
    for _ in range(1000):
        bar.update(1)
        time.sleep(0.0005)
    bar.close()
    elapsed = time.monotonic() - start
    text = stream.getvalue()
    assert "\r" not in text
    lines = text.splitlines()
    assert all(line.startswith("work") for line in lines)
    assert "1000/1000" in lines[-1]
    assert 2 <= len(lines) <= elapsed / 0.2 + 3  # the first, the last, and one per interval between


def test_progress_on_a_non_terminal_never_prints_frames_and_disabled_prints_nothing():
    from sae_translate.progress import progress

    stream = io.StringIO()
    bar = progress(range(50), file=stream, interval=60)
    for _ in bar:
        pass
    assert stream.getvalue().count("\n") == 2 and "\r" not in stream.getvalue()  # start and end only
    quiet = io.StringIO()
    for _ in progress(range(5), file=quiet, disable=True):
        pass
    assert quiet.getvalue() == ""


# ------------------------------------------------------------------ train, label, kill and resume


@pytest.fixture(scope="module")
def synthetic_run(tmp_path_factory):
    from sae_translate.bench.synthetic import make_synthetic_run

    syn = make_synthetic_run(tmp_path_factory.mktemp("cli") / "run", n_seq=120, ctx=16, d_sae=12, seed=3)
    syn.run.close()
    return syn.run.dir


TRAIN = [
    "--steps",
    "60",
    "--batch-size",
    "8",
    "--dim",
    "16",
    "--depth",
    "1",
    "--decoder-depth",
    "1",
    "--eval-every",
    "20",
    "--checkpoint-every",
    "5",
    "--select-sentences",
    "16",
    "--device",
    "cpu",
    "--no-anchor",
]  # the anchor's vocabulary alignment takes longer than this whole training


def test_train_command_writes_a_checkpoint_that_carries_its_metadata(synthetic_run, tmp_path):
    out = tmp_path / "translator"
    result = _cli("train", "--run", str(synthetic_run), *TRAIN, "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert "selected at step" in result.stdout
    # before the bulk of training: the settings (the ones given, the device's for the others) and the time
    assert "training on cpu: dim 16, 1+1 layers, batch 8" in result.stdout and "expected to take" in result.stdout
    assert "\r" not in result.stderr  # progress to a pipe: plain lines
    # the weights file alone says what it is: the .json copies are for reading, not loading
    (out / "last.json").write_text(json.dumps({"step": 1}))  # a stale copy, as a kill mid-save could leave
    (out / "best.json").unlink()
    assert checkpoint_meta(out / "last.safetensors")["step"] == 60
    from sae_translate.translator.train import load_translator

    load_translator(out)


def test_label_says_which_scorers_it_skipped_for_a_run_without_a_toy_world(synthetic_run, tmp_path):
    db = str(tmp_path / "labels.duckdb")
    args = ["label", "--run", str(synthetic_run), "--methods", "top-tokens", "--db", db]
    result = _cli(*args, "--scorers", "detection,ground_truth,name_match")
    assert result.returncode == 0, result.stderr
    assert "ground_truth and name_match skipped: the run has no toy world" in result.stdout
    result = _cli(*args, "--scorers", "detection")
    assert result.returncode == 0 and "skipped" not in result.stdout


def test_label_translator_aligned_without_a_translator_says_to_train_one(synthetic_run):
    result = _cli(
        "label",
        "--run",
        str(synthetic_run),
        "--methods",
        "translator-aligned",
        "--scorers",
        "",
        "--db",
        str(Path(synthetic_run).parent / "labels.duckdb"),
    )
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: no translator in") and "sae-translate train" in lines[0]
    assert "unknown label method" not in lines[0]


@pytest.mark.parametrize(
    "option, message",
    [
        (["--workers", "-1"], "error: --workers must be 0 (one per CPU core) or more (got -1)"),
        (["--fidelity", "bogus"], "error: unknown --fidelity 'bogus'"),
        (["--window", "0"], "error: --window must be 1 or more (got 0)"),
        (["--device", "gpu"], "error: unknown device 'gpu'; use auto, cpu, cuda or cuda:N"),
        (["--label-tokens", "0"], "error: --label-tokens must be 1 or more (got 0)"),
        (["--n-per-quantile", "-1"], "error: --n-per-quantile must be 0 or more (got -1)"),
    ],
)
def test_label_rejects_bad_describer_options_even_when_only_baselines_run(synthetic_run, tmp_path, option, message):
    db = tmp_path / "labels.duckdb"
    result = _cli("label", "--run", str(synthetic_run), "--methods", "top-tokens", "--db", str(db), *option)
    assert result.returncode == 1
    assert len(result.stderr.strip().splitlines()) == 1 and result.stderr.startswith(message), result.stderr
    assert not db.exists()


@pytest.mark.parametrize("where, message", [("{tmp}", "is a directory; pass a database file as --db")])
def test_label_refuses_a_database_path_it_could_not_write_before_labelling(synthetic_run, tmp_path, where, message):
    db = where.replace("{tmp}", str(tmp_path))
    result = _cli("label", "--run", str(synthetic_run), "--methods", "describe-corpus", "--db", db)
    assert result.returncode == 1
    # one line: no describer progress before it, the labels were not computed
    assert result.stderr.strip().splitlines() == [f"error: {db} {message}"], result.stderr


@pytest.mark.parametrize(
    "option, message",
    [
        (["--scorers", "embeding"], "error: unknown scorer 'embeding'"),
        (["--scorers", "ground_truth", "--world", "/nonexistent"], "error: /nonexistent is not a toy world"),
        (["--methods", ""], "error: no label method given"),
    ],
)
def test_label_rejects_bad_scorers_world_or_methods_before_writing(synthetic_run, tmp_path, option, message):
    db = tmp_path / "labels.duckdb"
    good = ["label", "--run", str(synthetic_run), "--methods", "top-tokens", "--db", str(db)]
    assert _cli(*good, "--scorers", "detection").returncode == 0
    before = db.read_bytes()
    result = _cli(*good, *option)
    assert result.returncode == 1
    assert len(result.stderr.strip().splitlines()) == 1 and result.stderr.startswith(message), result.stderr
    assert db.read_bytes() == before  # the stored labels and scores are untouched


@pytest.mark.slow
def test_killed_train_resumes_from_a_consistent_checkpoint(synthetic_run, tmp_path):
    killed, straight = tmp_path / "killed", tmp_path / "straight"
    args = ["train", "--run", str(synthetic_run), *TRAIN]
    args[args.index("--steps") + 1] = "200"
    proc = subprocess.Popen(
        [sys.executable, "-m", "sae_translate", *args, "--out", str(killed)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=ENV,
    )
    deadline = time.time() + 240
    last = killed / "last.safetensors"
    while True:  # kill once a few checkpoints have landed, at whatever instant that is
        assert proc.poll() is None, "train ended before it could be killed"
        assert time.time() < deadline
        try:
            if last.exists() and checkpoint_meta(last)["step"] >= 30:
                break
        except Exception:  # noqa: BLE001  (a checkpoint being renamed into place this instant)
            pass
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    step = checkpoint_meta(last)["step"]
    assert 30 <= step < 200
    from safetensors.torch import load_file

    from sae_translate.translator.train import load_translator

    load_translator(last)  # weights and metadata match: the model loads from them

    resumed = _cli(*args, "--out", str(killed))
    assert resumed.returncode == 0, resumed.stderr
    assert checkpoint_meta(last)["step"] == 200
    log = [json.loads(x) for x in (killed / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if "select" not in r] == list(range(1, 201))  # each step logged once

    assert _cli(*args, "--out", str(straight)).returncode == 0
    a, b = load_file(str(last)), load_file(str(straight / "last.safetensors"))
    for key in a:
        if key.startswith("model."):
            assert (a[key] - b[key]).abs().max() < 1e-5, key  # resuming is exact on CPU


@pytest.mark.parametrize(
    "option, message",
    [
        (["--steps", "0"], "steps and batch size must be positive"),
        (["--selection", "nosuch"], "selection must be"),
        (["--anchor-model", "nosuch"], "anchor_model must be one of"),
        (["--dim", "0"], "dim must be 1 or more (got 0)"),
        (["--heads", "0"], "heads must be 1 or more (got 0)"),
        (["--eval-every", "0"], "eval_every must be 1 or more (got 0)"),
        (["--dropout", "1.5"], "dropout must lie in [0, 1) (got 1.5)"),
    ],
)
def test_train_rejects_bad_settings_before_writing_anything(synthetic_run, tmp_path, option, message):
    out = tmp_path / "translator"
    result = _cli("train", "--run", str(synthetic_run), *TRAIN, *option, "--out", str(out))
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [result.stderr.strip()] and message in result.stderr
    assert not out.exists()


def test_a_run_damaged_inside_its_data_is_named_in_one_line_by_every_reader(synthetic_run, tmp_path):
    import shutil

    import h5py

    damaged = tmp_path / "damaged"
    shutil.copytree(synthetic_run, damaged)
    path = damaged / "activations.h5"
    with h5py.File(path, "r") as f:  # the middle of each compressed dataset's first chunk
        chunks = [f[name].id.get_chunk_info(0) for name in ("codes/feature", "codes/indptr", "codes/value", "tokens")]
    with path.open("r+b") as raw:
        for chunk in chunks:
            raw.seek(chunk.byte_offset + chunk.size // 2)
            raw.write(b"\x00\xff" * 8)
    for args in (
        ["label", "--run", str(damaged), "--db", str(tmp_path / "labels.duckdb"), "--methods", "top-tokens"],
        ["train", "--run", str(damaged), *TRAIN, "--out", str(tmp_path / "translator")],
        ["report", "--run", str(damaged), "--out", str(tmp_path / "report.html")],
    ):
        result = _cli(*args)
        assert result.returncode == 1, args
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"error: {path} is damaged ("), result.stderr
        assert "delete it and rerun extract" in result.stderr


def test_ctrl_c_says_how_to_resume_and_a_fresh_rerun_logs_each_step_once(synthetic_run, tmp_path):
    out = tmp_path / "interrupted"
    args = ["train", "--run", str(synthetic_run), *TRAIN, "--out", str(out)]
    args[args.index("--checkpoint-every") + 1] = "1000"  # interrupted before its first checkpoint
    args[args.index("--steps") + 1] = "400"
    proc = subprocess.Popen(
        [sys.executable, "-m", "sae_translate", *args],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=ENV,
    )
    deadline, log = time.time() + 240, out / "log.jsonl"
    while not (log.exists() and len(log.read_text().splitlines()) >= 5):
        assert proc.poll() is None, "train ended before it could be interrupted"
        assert time.time() < deadline
        time.sleep(0.01)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130
    assert "interrupted; rerun the same command to resume" in stderr.decode()
    assert "Traceback" not in stderr.decode()
    assert not (out / "last.safetensors").exists()

    args[args.index("--steps") + 1] = "20"
    rerun = _cli(*args)
    assert rerun.returncode == 0, rerun.stderr
    rows = [json.loads(x) for x in log.read_text().splitlines()]
    assert [r["step"] for r in rows if "select" not in r] == list(range(1, 21))  # each step logged once


def test_old_checkpoints_with_a_json_beside_them_still_load(synthetic_run, tmp_path):
    """Checkpoints written before the metadata moved into the header."""
    from safetensors.torch import load_file, save_file

    from sae_translate.translator.train import load_translator

    out = tmp_path / "new"
    assert _cli("train", "--run", str(synthetic_run), *TRAIN, "--out", str(out)).returncode == 0
    meta = checkpoint_meta(out / "best.safetensors")
    old = tmp_path / "old"
    old.mkdir()
    save_file(load_file(str(out / "best.safetensors")), str(old / "best.safetensors"))  # no header metadata
    (old / "best.json").write_text(json.dumps(meta))
    assert checkpoint_meta(old / "best.safetensors") == meta
    load_translator(old)


# ------------------------------------------------------------------ whole pipelines (slow)


@pytest.mark.slow
def test_train_sae_command(tiny_world, tmp_path):
    out = tmp_path / "sae"
    result = _cli(
        "train-sae",
        "--model",
        str(tiny_world.model_dir),
        "--hook",
        "blocks.0.hook_resid_post",
        "--dataset",
        str(tiny_world.corpus_files[0]),
        "--out",
        str(out),
        "--d-sae",
        "32",
        "--k",
        "4",
        "--training-tokens",
        "8192",
        "--context-size",
        "32",
        "--batch-size-tokens",
        "1024",
        "--buffer-tokens",
        "4096",
        "--n-batches-for-norm-estimate",
        "2",
        "--eval-batches",
        "1",
        "--device",
        "cpu",
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    assert f"SAE saved to {out}" in result.stdout
    assert "warnings.warn" not in result.stderr, result.stderr  # sae-lens's warnings in our own words, or none
    assert json.loads((out / "cfg.json").read_text())["d_sae"] == 32


@pytest.mark.slow
def test_run_command_does_every_stage_of_a_pipeline(tiny_world, tmp_path):
    run = tmp_path / "run"
    db = tmp_path / "labels.duckdb"
    pipeline = tmp_path / "tiny.toml"
    pipeline.write_text(f"""
name = "tiny"
[extract]
model = "{tiny_world.model_dir}"
sae = "{tiny_world.sae_dir}"
dataset = "{tiny_world.corpus_files[0]}"
world = "{tiny_world.dir}"
out = "{run}"
tokens = 8192
ctx = 32
device = "cpu"
[train]
steps = 30
batch_size = 8
dim = 16
depth = 1
decoder_depth = 1
eval_every = 10
checkpoint_every = 10
device = "cpu"
[label]
db = "{db}"
methods = ["translator", "top-tokens"]
scorers = ["detection"]
device = "cpu"
[report]
max_cards = 3
""")
    result = _cli("run", str(pipeline), timeout=900)
    assert result.returncode == 0, result.stderr
    for stage in ("extract", "train", "label", "report"):
        assert f"== {stage}" in result.stdout
    assert (run / "activations.h5").is_file() and (run / "translator" / "best.safetensors").is_file()
    assert (run / "report.html").is_file() and db.is_file()
    assert f"   {run / 'report.html'}: " in result.stdout  # where the report went


@pytest.mark.parametrize(
    "path", sorted((ROOT / "pipelines").glob("*.toml")) + [ROOT / "sae_translate" / "demo.toml"], ids=lambda p: p.name
)
def test_pipeline_files_configure_every_stage_with_valid_keys(path):
    from sae_translate.config import build_config, load_pipeline

    config = load_pipeline(path)
    assert {"extract", "train", "label", "report"} <= set(config.stages)
    run = {"run": "stores/x"}
    build_config(LabelConfig, config.stages["label"], "label", **run)
    build_config(ReportConfig, config.stages["report"], "report", **run)
    train = {
        k: v
        for k, v in config.stages["train"].items()
        if k not in ("modes", "mode", "dense_threshold", "min_count", "variant")
    }
    build_config(TranslatorConfig, train, "train").validate()
    if "world" not in config.stages:
        build_config(ExtractConfig, config.stages["extract"], "extract")


@pytest.mark.parametrize(
    "table, message",
    [
        ('[train]\nsteps = "many"', "[train] steps must be an integer (got 'many')"),
        ('[label]\nmethodz = ["top-tokens"]', "[label] has unknown key(s) methodz; valid keys: "),
        ('[label]\nmethods = "top-tokens"', "[label] methods must be a list of strings (got 'top-tokens')"),
        ("[report]\nmax_cards = 1.5", "[report] max_cards must be an integer (got 1.5)"),
        ('[train]\nmodes = ["sideways"]', "[train] modes must name unsupervised or aligned (got 'sideways')"),
        ("[train]\nsteps = 0", "[train] steps and batch size must be positive"),
        ('[train]\nmode = "aligned"\nmodes = ["unsupervised"]', "[train] sets both mode and modes; keep one"),
        ("[train]\nstepz = 5", "[train] has unknown key(s) stepz; valid keys: "),
        # values a later stage would only reject after extract and train have run
        ('[label]\nmethods = ["translater"]', "[label] unknown label method 'translater'; choose from "),
        ('[label]\nscorers = ["ground-truth"]', "[label] unknown scorer 'ground-truth'; choose from "),
        ('[label]\nfidelity = "f1"', "[label] unknown fidelity 'f1'; choose from detection, f_beta"),
        ("[label]\nwindow = 0", "[label] window must be 1 or more (got 0)"),
        ("[label]\nn_top_examples = -1", "[label] n_top_examples must be 0 or more (got -1)"),
        ("[report]\nmax_cards = -1", "[report] max_cards must be >= 0"),
    ],
)
def test_pipeline_keys_and_types_are_checked_before_any_stage_runs(tmp_path, table, message):
    run = tmp_path / "run"
    pipeline = tmp_path / "p.toml"
    # extract comes first and would fail on its model: the error must be the later table's
    pipeline.write_text(f'[extract]\nmodel = "no-such-model"\nsae = "x"\ndataset = "x.txt"\nout = "{run}"\n{table}\n')
    result = _cli("run", str(pipeline))
    assert result.returncode == 1
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert result.stderr.startswith(f"error: {pipeline}: {message}"), result.stderr
    assert "== extract" not in result.stdout and not run.exists()
    if "[train] has unknown key" in message:  # every key [train] takes is listed, the demo's modes among them
        for key in ("modes", "mode", "dense_threshold", "min_count", "variant", "steps", "anchor_starts"):
            assert f" {key}," in result.stderr or result.stderr.rstrip().endswith(f" {key}"), key


def test_a_pipeline_name_that_is_no_string_is_a_user_error(tmp_path):
    from sae_translate.config import load_pipeline

    pipeline = tmp_path / "p.toml"
    pipeline.write_text("name = 3\n[report]\n")
    with pytest.raises(UserError, match=r"p.toml: name must be a non-empty string \(got 3\)"):
        load_pipeline(pipeline)


def test_loading_a_model_warns_nothing_about_hooked_transformer(tiny_world):
    import warnings

    from sae_translate.extract.models import load_model

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        load_model(str(tiny_world.model_dir), device="cpu")
    assert not [w for w in caught if "HookedTransformer" in str(w.message)]


@pytest.mark.parametrize(
    "args, world, run",
    [
        ([], "stores/world", "stores/demo"),
        (["--world-config", "benchmarks/worlds/market.toml"], "stores/world-market", "stores/market"),
        (["--world-config", "benchmarks/worlds/market.toml", "--out", "elsewhere"], "stores/world-market", "elsewhere"),
    ],
)
def test_demo_runs_into_a_directory_named_after_its_world_config(monkeypatch, args, world, run):
    from typer.testing import CliRunner

    import sae_translate.pipeline

    ran = []
    monkeypatch.setattr(sae_translate.pipeline, "run_pipeline", lambda config, echo: ran.append(config))
    result = CliRunner().invoke(app, ["demo", *args])
    assert result.exit_code == 0, result.output
    assert ran[0].stages["world"]["out"] == world and ran[0].stages["extract"]["out"] == run


@pytest.mark.parametrize("name", ["world.toml", "demo.toml", "world-market.toml"])
def test_a_world_config_named_like_the_demos_own_stores_is_refused_unless_given_out(monkeypatch, tmp_path, name):
    from typer.testing import CliRunner

    import sae_translate.pipeline

    result = _cli("demo", "--world-config", str(tmp_path / name))
    assert result.returncode == 1 and result.stderr.startswith("error:"), result.stderr
    assert "rename the file or pass --out" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    ran = []
    monkeypatch.setattr(sae_translate.pipeline, "run_pipeline", lambda config, echo: ran.append(config))
    result = CliRunner().invoke(app, ["demo", "--world-config", str(tmp_path / name), "--out", str(tmp_path / "run")])
    assert result.exit_code == 0 and ran[0].stages["extract"]["out"] == str(tmp_path / "run")


def test_demo_takes_a_world_config_and_reports_a_bad_one_in_one_line(tmp_path):
    from sae_translate.pipeline import demo_pipeline

    config = demo_pipeline(tmp_path / "fruit.toml", tmp_path / "demo")
    assert config.stages["world"]["config"] == str(tmp_path / "fruit.toml")
    assert config.stages["world"]["out"] == "stores/world-fruit"  # the default world is left alone
    assert config.stages["extract"]["out"] == str(tmp_path / "demo")

    bad = tmp_path / "bad.toml"
    bad.write_text("name = [unclosed\n")
    result = _cli("demo", "--world-config", str(bad), "--out", str(tmp_path / "demo"))
    assert result.returncode == 1
    assert len(result.stderr.strip().splitlines()) == 1 and result.stderr.startswith("error:"), result.stderr
    assert "bad.toml" in result.stderr
    assert not (tmp_path / "demo").exists()
