"""Command-line options derived from the stages' dataclass configs, so each option is defined once.

A field becomes `--field-name` with the field's type, its default, and help text taken from
`field(metadata={"help": ...})`, else a docstring right after the field, else its trailing
`# comment`, else the `# section` comment above a group of fields. Pipeline TOML files use
the same field names (config.build_config), so a TOML key and a CLI option never disagree.

    @app.command()
    @with_configs(ConfigOptions(ExtractConfig, "cfg", skip={"progress"}))
    def extract(cfg: ExtractConfig) -> None: ...

Tuples of strings (label methods, scorers) are one comma-separated option; tuples of ints
are a repeatable option.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import inspect
import io
import textwrap
import tokenize
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import MISSING, dataclass, field
from pathlib import Path
from typing import Any, Optional

import typer


def _comments(source: str) -> dict[int, str]:
    """Line number -> text of the comment on that line (tokenize: a '#' inside a string is not one)."""
    out: dict[int, str] = {}
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            out[tok.start[0]] = tok.string.lstrip("#").strip()
    return out


@functools.cache
def field_help(cls: type) -> dict[str, str]:
    """Help text of each field of a dataclass, from metadata, docstring or comment."""
    helps = {f.name: f.metadata["help"] for f in dataclasses.fields(cls) if "help" in f.metadata}
    try:
        source = textwrap.dedent(inspect.getsource(cls))
    except (OSError, TypeError):  # no source (frozen app): metadata only
        return helps
    comments = _comments(source)
    lines = source.splitlines()
    body = ast.parse(source).body[0].body  # type: ignore[attr-defined]
    section = ""
    previous_end = 0
    for i, stmt in enumerate(body):
        # a comment alone on a line between fields names the section of the fields below it; a
        # block of several comment lines right above a field is that field's own help
        alone = [
            line
            for line in range(previous_end + 1, stmt.lineno)
            if line in comments and lines[line - 1].lstrip().startswith("#")
        ]
        block: list[str] = []
        for line in reversed(alone):
            if line != stmt.lineno - 1 - len(block):
                break
            block.insert(0, comments[line])
        leading = " ".join(block) if len(block) > 1 else ""
        above = alone[: len(alone) - len(block)] if leading else alone  # the lines that name sections
        if above:
            section = comments[above[-1]]
        previous_end = stmt.end_lineno or stmt.lineno
        if not (isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)):
            continue
        name = stmt.target.id
        if name in helps:
            continue
        nxt = body[i + 1] if i + 1 < len(body) else None
        if isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant) and isinstance(nxt.value.value, str):
            helps[name] = inspect.cleandoc(nxt.value.value)
        elif previous_end in comments:
            helps[name] = comments[previous_end]
        elif leading:
            helps[name] = leading
        elif section:
            helps[name] = f"({section})"
    return helps


def _unwrap_optional(tp: Any) -> tuple[Any, bool]:
    """(X, True) for X | None and Optional[X]; (tp, False) otherwise."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return tp, False


def _element(tp: Any) -> Any:
    """int for tuple[int, ...] (and list[int]); None when tp is not a homogeneous sequence."""
    if typing.get_origin(tp) in (tuple, list):
        args = [a for a in typing.get_args(tp) if a is not Ellipsis]
        if len(args) == 1:
            return args[0]
    return None


@dataclass(frozen=True)
class ConfigOptions:
    """The options one dataclass config contributes to a command, built into `arg`."""

    cls: type
    arg: str  # keyword the command function receives the built config as
    skip: frozenset[str] | set[str] = frozenset()  # fields that are not options (set in code)
    rename: Mapping[str, str] = field(default_factory=dict)  # field -> option name (python spelling)
    help: Mapping[str, str] = field(default_factory=dict)  # extra help, appended to the field's
    only: frozenset[str] | set[str] | None = None  # when given: just these fields are options
    base: Any = None  # an instance whose values are the defaults (and the rest of the built config)
    # fields whose default the help does not show: the command picks their value (the help says how)
    hide_default: frozenset[str] | set[str] = frozenset()

    def _fields(self) -> Iterable[tuple[dataclasses.Field, Any]]:
        hints = typing.get_type_hints(self.cls)
        for f in dataclasses.fields(self.cls):
            nested = dataclasses.is_dataclass(_unwrap_optional(hints[f.name])[0])
            wanted = self.only is None or f.name in self.only
            if f.init and wanted and f.name not in self.skip and not nested:  # nested configs get their own options
                yield f, hints[f.name]

    def option_name(self, name: str) -> str:
        return self.rename.get(name, name)

    def parameters(self) -> list[inspect.Parameter]:
        helps = field_help(self.cls)
        params = []
        for f, tp in self._fields():
            default: Any = ...
            if self.base is not None:
                default = getattr(self.base, f.name)
            elif f.default is not MISSING:
                default = f.default
            elif f.default_factory is not MISSING:
                default = f.default_factory()
            inner, optional = _unwrap_optional(tp)
            elem = _element(inner)
            if elem is str:  # one comma-separated option
                annotation: Any = str
                default = default if default is ... else ",".join(default)
            elif elem is not None:  # repeatable option
                annotation = Optional[list[elem]]  # type: ignore[valid-type]  # built at run time
                default = None if default is ... or not default else list(default)
            else:
                annotation = Optional[inner] if optional else inner
            text = " ".join(t for t in (helps.get(f.name, ""), self.help.get(f.name, "")) if t)
            name = self.option_name(f.name)
            flag = name.replace("_", "-")
            decls = f"--{flag}/--no-{flag}" if annotation is bool else f"--{flag}"  # a True default can be unset
            option = typer.Option(default, decls, help=text or None, show_default=f.name not in self.hide_default)
            params.append(
                inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=annotation)
            )
        return params

    def build(self, values: dict[str, Any], **fixed: Any) -> Any:
        """The config from parsed option values (keyed by option name) and values set in code."""
        kwargs: dict[str, Any] = {}
        for f, tp in self._fields():
            value = values[self.option_name(f.name)]
            inner, _ = _unwrap_optional(tp)
            elem = _element(inner)
            if elem is str and isinstance(value, str):
                value = tuple(x.strip() for x in value.split(",") if x.strip())
            elif elem is not None and value is not None:
                value = tuple(value)
            elif elem is not None:
                value = ()
            elif inner is Path and isinstance(value, str):
                value = Path(value)
            elif inner is str and isinstance(value, Path):
                value = str(value)
            kwargs[f.name] = value
        if self.base is not None:
            return dataclasses.replace(self.base, **(kwargs | fixed))
        return self.cls(**(kwargs | fixed))


def with_configs(*groups: ConfigOptions) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator for a typer command: adds every group's options after the function's own and
    calls the function with each group's built config under its `arg` keyword."""

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        own = [
            p for p in inspect.signature(fn, eval_str=True).parameters.values() if p.name not in {g.arg for g in groups}
        ]
        per_group = [(g, g.parameters()) for g in groups]
        params = own + [p for _, ps in per_group for p in ps]
        names = [p.name for p in params]
        clash = {n for n in names if names.count(n) > 1}
        if clash:
            raise TypeError(f"{fn.__name__}: option(s) {sorted(clash)} defined twice; skip or rename one")

        @functools.wraps(fn)
        def command(**values: Any) -> Any:
            configs = {}
            for g, ps in per_group:
                configs[g.arg] = g.build({p.name: values.pop(p.name) for p in ps})
            return fn(**values, **configs)

        command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
        command.__annotations__ = {p.name: p.annotation for p in params}  # read by typing.get_type_hints
        return command

    return decorate
