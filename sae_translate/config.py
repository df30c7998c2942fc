"""Pipeline files: TOML with one table per stage, each loaded into that stage's dataclass config.

    name = "pythia-70m-deduped"
    [world]      # optional: build the toy world and take model, SAE and corpus from it
    [extract]    # ExtractConfig fields
    [train]      # TranslatorConfig fields
    [label]      # LabelConfig fields
    [report]     # ReportConfig fields

A stage whose table is absent is skipped. Unknown keys are an error, so typos do not pass silently.
"""

from __future__ import annotations

import dataclasses
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
    unknown = [k for k in raw if k not in STAGES]
    if unknown:
        raise UserError(f"{path}: unknown table(s) {', '.join(unknown)}; expected {', '.join(STAGES)}")
    for stage, section in raw.items():
        if not isinstance(section, dict):
            raise UserError(f"{path}: [{stage}] must be a table")
    return PipelineConfig(name=name, stages=raw, source=str(path))


def build_config(cls: type, section: dict[str, Any], where: str, **defaults: Any):
    """cls(**defaults, **section), with one-line errors for unknown or missing keys."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(section) - names)
    if unknown:
        raise UserError(f"[{where}] has unknown key(s) {', '.join(unknown)}; valid keys: {', '.join(sorted(names))}")
    merged = {k: v for k, v in defaults.items() if k in names} | section
    try:
        return cls(**merged)
    except TypeError as e:
        raise UserError(f"[{where}] {e}") from e
