"""Loading a config: YAML with repeated keys refused, ``--set`` overrides, and one-paragraph error messages.

``load_config`` reads a YAML file, applies ``--set key=value`` overrides and validates everything against the
schema (``pipeline.config``) before any data is touched; a problem becomes one ``ConfigError`` paragraph
naming the file, the key, what was expected and what was found.  ``pipeline.config`` re-exports
``load_config``.
"""

from __future__ import annotations

import difflib
import types
import typing
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from pipeline.config import PipelineConfig, default_policies
from pipeline.errors import ConfigError


def parse_override(text: str) -> tuple[list[str], Any]:
    """``a.b.c=value`` -> (["a", "b", "c"], value parsed as YAML)."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set {text!r}: expected KEY=VALUE with a dotted key, e.g. evaluation.top_k=5")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as error:
        raise ConfigError(f"--set {text!r}: the value is not valid YAML ({' '.join(str(error).split())})") from None
    return key.strip().split("."), value


def apply_override(raw: dict[str, Any], path: list[str], value: Any, text: str) -> None:
    node = raw
    for depth, part in enumerate(path[:-1]):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            where = ".".join(path[: depth + 1])
            raise ConfigError(f"--set {text}: '{where}' holds {child!r}, not a mapping, so it has no keys below it")
        node = child
    if value is None and path[0] == "policies" and len(path) == 2:
        node.pop(path[-1], None)  # --set policies.LinGreedy=null drops a policy
    else:
        node[path[-1]] = value


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, except that a key repeated in one mapping is an error (PyYAML keeps the last one
    silently, so a second ``LinUCB:`` entry would replace the first)."""

    def construct_mapping(self, node, deep=False):
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if isinstance(key, typing.Hashable) and key in seen:
                raise ConfigError(f"{self.name}: the key {key!r} appears twice in one block, at lines {seen[key]} and "
                                  f"{line}; YAML would silently keep only the last one. Merge or rename them")
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


def read_yaml(path: Path) -> Any:
    """The YAML document in ``path``; ``ConfigError`` for an unreadable, non-UTF-8 or invalid file, or a repeated key."""
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as error:
        line = path.read_bytes()[: error.start].count(b"\n") + 1
        raise ConfigError(f"{path}: not a UTF-8 text file (byte {error.object[error.start]:#04x} at line {line}); "
                          "save it as UTF-8") from None
    except OSError as error:
        raise ConfigError(f"config file {path} cannot be read: {error.strerror}") from None
    loader = _UniqueKeyLoader(text)
    loader.name = str(path)
    try:
        return loader.get_single_data()
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML: {' '.join(str(error).split())}") from None
    finally:
        loader.dispose()


def load_config(path: str | Path, overrides: list[str] = ()) -> PipelineConfig:
    """Read, override and validate a config file; raise ``ConfigError`` with one clear paragraph."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"config file {path} is a directory; expected a YAML file, e.g. configs/default.yaml")
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist (expected a YAML file, e.g. configs/default.yaml)")
    raw = read_yaml(path) or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of keys at the top level, found {type(raw).__name__}")
    overridden = set()
    if any(text.startswith("policies.") for text in overrides) and raw.get("policies") is None:
        # Overriding one default policy must keep the others, so start from the full default set.
        raw["policies"] = {name: policy.model_dump() for name, policy in default_policies().items()}
    for text in overrides:
        keys, value = parse_override(text)
        apply_override(raw, keys, value, text)
        overridden.add(tuple(keys))
    if raw.get("run") is None:
        raw["run"] = {}
    if isinstance(raw["run"], dict):
        raw["run"].setdefault("name", path.stem)  # runs are named after their config file by default
    try:
        return PipelineConfig.model_validate(raw)
    except ValidationError as error:
        raise ConfigError(describe_validation_error(error, path, overridden)) from None


def describe_validation_error(error: ValidationError, path: Path, overridden: set[tuple[str, ...]]) -> str:
    problems = []
    for item in error.errors():
        loc = [str(part) for part in item["loc"]]
        key = ".".join(loc) or "(top level)"
        # A value set with --set may be reported at its own key or at a block above it (a policy's MABWiser check
        # reports the policy), so either path may be the prefix of the other.
        # A check across blocks (reported at the top level) names its keys in the message.
        origin = " (from --set)" if any(_nested(tuple(loc), keys) or (not loc and ".".join(keys) in item["msg"])
                                        for keys in overridden) else ""
        if item["type"] == "extra_forbidden":
            problems.append(_unknown_key_message(loc, origin))
            continue
        message = item["msg"].removeprefix("Value error, ")
        found = item.get("input")
        shown = "" if isinstance(found, dict) or item["type"] == "missing" else f"; found {found!r}"
        problems.append(f"'{key}'{origin}: {message}{shown}" if loc else f"{message}{shown}{origin}")
    return f"{path}: invalid config: " + "; ".join(problem.rstrip(". ") for problem in problems) + "."


def _nested(a: tuple[str, ...], b: tuple[str, ...]) -> bool:
    n = min(len(a), len(b))
    return n > 0 and a[:n] == b[:n]


def _unknown_key_message(loc: list[str], origin: str) -> str:
    valid = _valid_keys_at(loc[:-1])
    hint = difflib.get_close_matches(loc[-1], valid, n=1)
    suggestion = f" Did you mean '{hint[0]}'?" if hint else ""
    parent = ".".join(loc[:-1]) or "the top level"
    return f"unknown key '{'.'.join(loc)}'{origin}.{suggestion} Valid keys under {parent}: {', '.join(valid)}"


def _valid_keys_at(loc: list[str]) -> list[str]:
    """Field names of the config block at ``loc`` (walking models, dicts and optionals)."""
    node: Any = PipelineConfig
    for part in loc:
        node = _unwrap_optional(node)
        if isinstance(node, type) and issubclass(node, BaseModel):
            field = next((f for n, f in node.model_fields.items() if part in (n, f.alias)), None)
            node = field.annotation if field else None
        elif typing.get_origin(node) is dict:
            node = typing.get_args(node)[1]
        else:
            return []
    node = _unwrap_optional(node)
    if isinstance(node, type) and issubclass(node, BaseModel):
        return [field.alias or name for name, field in node.model_fields.items()]
    return []


def _unwrap_optional(annotation: Any) -> Any:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        members = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
        return members[0] if len(members) == 1 else annotation
    return annotation
