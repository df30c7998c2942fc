"""Pipeline files: TOML with one table per stage, each loaded into that stage's dataclass config.

    name = "pythia-70m-deduped"
    [world]      # optional: build the toy world and take model, SAE and corpus from it
    [extract]    # ExtractConfig fields
    [train]      # TranslatorConfig fields
    [label]      # LabelConfig fields
    [report]     # ReportConfig fields

A stage whose table is absent is skipped. Unknown keys and values of the wrong type are an error,
found when the file is loaded, before any stage runs, so typos do not pass silently.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomllib

from sae_translate.errors import UserError

STAGES = ("world", "extract", "train", "label", "report")


@dataclass
class PipelineConfig:
    name: str
    stages: dict[str, dict[str, Any]] = field(default_factory=dict)
    source: str = ""

    @property
    def run_dir(self) -> Path:
        return Path(self.stages.get("extract", {}).get("out", f"stores/{self.name}"))


def load_pipeline(path: str | Path) -> PipelineConfig:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"pipeline file {path} not found; see pipelines/ for examples")
    try:
        raw = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{path} is not valid TOML: {e}") from e
    name = raw.pop("name", path.stem)
    if not isinstance(name, str) or not name:
        raise UserError(f"{path}: name must be a non-empty string (got {name!r})")
    unknown = [k for k in raw if k not in STAGES]
    if unknown:
        raise UserError(f"{path}: unknown table(s) {', '.join(unknown)}; expected {', '.join(STAGES)}")
    for stage, section in raw.items():
        if not isinstance(section, dict):
            raise UserError(f"{path}: [{stage}] must be a table")
    try:
        check_stages(raw)
    except UserError as e:
        raise UserError(f"{path}: {e}") from e
    return PipelineConfig(name=name, stages=raw, source=str(path))


# [train] keys beside TranslatorConfig's fields: the modes to train, and the feature language's
# settings (its seed is the translator's)
TRAIN_MODES = ("unsupervised", "aligned")


def train_extra_keys() -> dict[str, Any]:
    return {"modes": list[str], "mode": str, **_language_keys()}


def _language_keys() -> dict[str, Any]:
    from sae_translate.translator.config import LanguageConfig

    return {k: v for k, v in typing.get_type_hints(LanguageConfig).items() if k != "seed"}


def split_train_section(section: Mapping[str, Any]) -> tuple[list[str], dict[str, Any], dict[str, Any]]:
    """A [train] table as (the modes to train, LanguageConfig keys, TranslatorConfig keys)."""
    translator = dict(section)
    if "mode" in translator and "modes" in translator:
        raise UserError("[train] sets both mode and modes; keep one (modes = [...] trains several)")
    modes = translator.pop("modes", [translator.pop("mode", "unsupervised")])
    language = {k: translator.pop(k) for k in _language_keys().keys() & translator.keys()}
    return list(modes), language, translator


def _as_file_keys(error: UserError) -> str:
    """A stage's message about its command-line options, in a pipeline file's words: "--n-top-examples"
    is the key n_top_examples there."""
    return re.sub(r"--([a-z][a-z0-9-]*)", lambda m: m.group(1).replace("-", "_"), str(error))


def check_stages(stages: Mapping[str, Mapping[str, Any]]) -> None:
    """Every table's keys and value types, and the translator's settings, checked at once: a typo in
    a late table fails before the early stages spend their minutes."""
    from sae_translate.extract.config import ExtractConfig
    from sae_translate.label.config import LabelConfig
    from sae_translate.report.config import ReportConfig
    from sae_translate.translator.config import LanguageConfig, TranslatorConfig
    from sae_translate.world.build import WorldBuildConfig

    classes = {
        "world": WorldBuildConfig,
        "extract": ExtractConfig,
        "label": LabelConfig,
        "report": ReportConfig,
    }
    for stage, cls in classes.items():
        if stage in stages:
            check_section(cls, stages[stage], stage)
    # values the stages check themselves, checked here too: a wrong method name in [label] must not
    # wait for extract and train to finish
    if "label" in stages:
        from sae_translate.label.stage import check_label_options
        from sae_translate.score.stage import check_scorers

        label = LabelConfig(**{"run": "", **stages["label"]})
        try:
            check_label_options(label)
            check_scorers(tuple(label.scorers), "")  # the world may be built by the [world] stage
        except UserError as e:
            raise UserError(f"[label] {_as_file_keys(e)}") from e
    if "report" in stages:
        try:
            ReportConfig(**{"run": "", **stages["report"]}).validate()
        except UserError as e:
            raise UserError(f"[report] {_as_file_keys(e)}") from e
    if "train" in stages:
        check_section(TranslatorConfig, stages["train"], "train", also=train_extra_keys())
        modes, language, translator = split_train_section(stages["train"])
        for mode in modes:
            if mode not in TRAIN_MODES:
                raise UserError(f"[train] modes must name {' or '.join(TRAIN_MODES)} (got {mode!r})")
        try:
            LanguageConfig(**language).validate()
            for mode in modes:
                TranslatorConfig(**translator, mode=mode).validate()
        except UserError as e:
            raise UserError(f"[train] {e}") from e


_KINDS: dict[Any, tuple[str, str]] = {  # what a TOML value of the type is called, alone and in a list
    bool: ("true or false", "booleans"),
    int: ("an integer", "integers"),
    float: ("a number", "numbers"),
    str: ("a string", "strings"),
    Path: ("a string", "strings"),
}


def _fits(tp: Any, value: Any) -> bool:
    """Whether a TOML value fits a field's annotation (annotations not listed here are not checked)."""
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp in (str, Path):
        return isinstance(value, str)
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        return any(_fits(a, value) for a in args if a is not type(None))
    if origin in (tuple, list) and args:
        return isinstance(value, (list, tuple)) and all(_fits(args[0], v) for v in value)
    return True


def _describe(tp: Any) -> str:
    if tp in _KINDS:
        return _KINDS[tp][0]
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in args if a is not type(None))
    if origin in (tuple, list) and args and args[0] in _KINDS:
        return f"a list of {_KINDS[args[0]][1]}"
    return str(tp)


def check_section(cls: type, section: Mapping[str, Any], where: str, also: Mapping[str, Any] | None = None) -> None:
    """One-line errors for a key that is neither a field of `cls` nor in `also` (key -> type), and
    for a value whose type does not fit its field."""
    hints = typing.get_type_hints(cls)
    valid = {f.name: hints[f.name] for f in dataclasses.fields(cls)} | dict(also or {})
    unknown = sorted(set(section) - set(valid))
    if unknown:
        raise UserError(f"[{where}] has unknown key(s) {', '.join(unknown)}; valid keys: {', '.join(sorted(valid))}")
    for key, value in section.items():
        if not _fits(valid[key], value):
            raise UserError(f"[{where}] {key} must be {_describe(valid[key])} (got {value!r})")


def build_config(cls: type, section: dict[str, Any], where: str, **defaults: Any):
    """cls(**defaults, **section), with one-line errors for unknown or missing keys and mistyped values."""
    check_section(cls, section, where)
    names = {f.name for f in dataclasses.fields(cls)}
    merged = {k: v for k, v in defaults.items() if k in names} | section
    try:
        return cls(**merged)
    except TypeError as e:
        raise UserError(f"[{where}] {e}") from e
