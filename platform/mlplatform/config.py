"""How every YAML file mlplatform reads becomes a typed config, with errors that name the file and the field.

The config models live with the layer they configure (`mlplatform.data.config`, `mlplatform.train.config`,
`mlplatform.serve.config`, `mlplatform.release.config`, `mlplatform.job_configs`); this module holds what they
share: the strict base model, the YAML reader (which refuses duplicate keys) and the one way a pydantic
validation error is told to a user.

Every model forbids unknown keys, so a typo fails before anything is submitted instead of being ignored.
String values may reference environment variables as ``${NAME}``; ``${MLPLATFORM_HOME}`` defaults to the
local state folder so that the same config works from a laptop and inside a Ray job.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from mlplatform.errors import ConfigError
from mlplatform.settings import platform_home

__all__ = [
    "StrictModel",
    "Identifier",
    "load_config",
    "parse_config",
    "read_yaml",
    "validation_problems",
]

Identifier = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]
ModelT = TypeVar("ModelT", bound=BaseModel)


class StrictModel(BaseModel):
    """Base of every config: unknown keys are errors, values are immutable once validated."""

    model_config = ConfigDict(extra="forbid", frozen=True)


# ------------------------------------------------------------------------------------------ errors


def _dotted(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "<root>"


def validation_problems(exc: ValidationError, *, show_input: bool = True) -> list[str]:
    """One line per problem of a pydantic error: ``field.path: what is wrong (got <value>)``.

    The single formatter of validation errors (configs, Serve configs, traffic policies, requests), so a
    user reads every one the same way.
    """
    lines = []
    for err in exc.errors(include_url=False):
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown key (not allowed here; check its spelling)"
        got = ""
        if show_input and err["type"] not in ("missing", "extra_forbidden"):
            got = f" (got {err.get('input')!r:.80})"
        lines.append(f"{_dotted(tuple(err['loc']))}: {msg}{got}")
    return lines


# ------------------------------------------------------------------------------------------ loading

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def _expand(value: Any, loc: tuple[Any, ...], source: str) -> Any:
    """Expand ${VAR} in every string, failing on an unset variable with its field path."""
    if isinstance(value, dict):
        return {k: _expand(v, (*loc, k), source) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand(v, (*loc, i), source) for i, v in enumerate(value)]
    if not isinstance(value, str):
        return value

    def sub(match: re.Match[str]) -> str:
        name = match.group(1)
        if name == "MLPLATFORM_HOME":
            return str(platform_home())
        if name not in os.environ:
            raise ConfigError(f"{source}: {_dotted(loc)}: environment variable ${{{name}}} is not set")
        return os.environ[name]

    return _VAR.sub(sub, value)


def parse_config(raw: Any, model: type[ModelT], source: str = "<config>") -> ModelT:
    """Validate an already-parsed mapping; errors name `source` and each field path."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping at the top level, got {type(raw).__name__}")
    try:
        return model.model_validate(_expand(raw, (), source))
    except ValidationError as exc:
        lines = [f"  {source}: {line}" for line in validation_problems(exc)]
        raise ConfigError(f"invalid config {source}:\n" + "\n".join(lines)) from None


class _DuplicateKey(yaml.MarkedYAMLError):
    pass


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, except that a key given twice in one mapping is an error.

    Plain YAML keeps the last value silently: a second ``fields:`` in a source would replace the first and
    drop its contract without a word. Keys merged in with ``<<: *anchor`` may still be overridden.
    """

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, yaml.Mark] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=deep)
            try:
                first = seen.get(key)
            except TypeError:  # an unhashable key: SafeLoader names it below
                continue
            if first is not None:
                raise _DuplicateKey(
                    problem=f"duplicate key {key!r} (first given on line {first.line + 1}); each key may appear once",
                    problem_mark=key_node.start_mark,
                )
            seen[key] = key_node.start_mark
        return super().construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _UniqueKeyLoader.construct_mapping)


def read_yaml(path: str | os.PathLike[str]) -> Any:
    """Parse a YAML file; errors name the file and, for syntax errors and duplicate keys, the line and column."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{p}: config file not found") from None
    except IsADirectoryError:
        raise ConfigError(f"{p}: is a folder, not a config file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{p}: cannot read config: {exc}") from None
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 (a SafeLoader subclass)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}:{mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        what = "" if isinstance(exc, _DuplicateKey) else "malformed YAML: "
        raise ConfigError(f"{p}{where}: {what}{problem}") from None


def load_config(path: str | os.PathLike[str], model: type[ModelT]) -> ModelT:
    """Read a YAML file and validate it as `model`.

    Raises:
        ConfigError: the file is missing, is not YAML, repeats a key, or fails validation; the message
            names the file, the line for syntax errors and duplicate keys, and the dotted field path for
            validation errors.
    """
    return parse_config(read_yaml(path), model, str(path))
