"""Recipe files and typed overrides, with ml_collections `config_flags` semantics.

    load_config_file("configs/grpo_38b.py:smoke")   # big_vision style: get_config("smoke")
    apply_overrides(cfg, ["--config.optim.lr=3e-4", "--config.ssb.enabled=false"])

An override names an existing field (unknown keys are refused, listing the section's
fields) and is parsed for the field's current type: `bool` takes true/false/1/0/yes/no,
`int` refuses "2.5", `float` refuses "abc", tuples and dicts are Python literals. A value
of the wrong type is refused at once, naming the key and the expected type, so nothing
fails 40 s later inside a trainer.
"""

from __future__ import annotations

import ast
import importlib.util
import inspect
import math
import os
import sys
from typing import Any, Sequence

import ml_collections


class ConfigError(ValueError):
    """A recipe file or override that cannot be honoured (a user error)."""


def split_config_arg(spec: str) -> tuple[str, str | None]:
    """'configs/x.py:smoke' -> ('configs/x.py', 'smoke'); 'configs/x.py' -> (..., None)."""
    path, sep, arg = spec.partition(":") if not os.path.isfile(spec) else (spec, "", "")
    return path, (arg if sep else None)


def load_config_file(spec: str) -> ml_collections.ConfigDict:
    """Runs `get_config()` (or `get_config(arg)` for 'file.py:arg') of a config file."""
    path, arg = split_config_arg(spec)
    if not os.path.isfile(path):
        raise ConfigError(f"config file not found: {path}")
    folder = os.path.dirname(os.path.abspath(path))
    sys.path.insert(0, folder)  # recipes import their sibling model configs
    try:
        name = "_r1v2_config_" + os.path.splitext(os.path.basename(path))[0]
        spec_ = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec_)
        spec_.loader.exec_module(module)
    finally:
        sys.path.remove(folder)
    get_config = getattr(module, "get_config", None)
    if get_config is None:
        raise ConfigError(f"{path}: a config file must define get_config()")
    takes_arg = bool(inspect.signature(get_config).parameters)
    if arg is not None and not takes_arg:
        raise ConfigError(f"{path}: get_config() takes no argument, got ':{arg}'")
    cfg = get_config(arg) if takes_arg else get_config()
    if not isinstance(cfg, ml_collections.ConfigDict):
        raise ConfigError(f"{path}: get_config() must return an ml_collections.ConfigDict")
    return cfg


_TRUE, _FALSE = {"true", "1", "yes", "on"}, {"false", "0", "no", "off"}


def _literal(text: str, key: str, expected: str):
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        raise ConfigError(f"config.{key}: expected {expected}, got {text!r}") from None


def parse_value(key: str, text: str, current: Any) -> Any:
    """`text` parsed for the type of the field's current value."""
    if isinstance(current, bool):
        low = text.strip().lower()
        if low in _TRUE | _FALSE:
            return low in _TRUE
        raise ConfigError(f"config.{key}: expected a bool (true/false), got {text!r}")
    if isinstance(current, int):
        try:
            return int(text.strip().replace("_", ""))
        except ValueError:
            raise ConfigError(f"config.{key}: expected an int, got {text!r}") from None
    if isinstance(current, float):
        try:
            value = float(text)
        except ValueError:
            raise ConfigError(f"config.{key}: expected a float, got {text!r}") from None
        if not math.isfinite(value):
            raise ConfigError(f"config.{key}: expected a finite float, got {text!r}")
        return value
    if isinstance(current, str):
        return text
    if isinstance(current, (tuple, list)):
        value = _literal(text, key, "a tuple literal, e.g. (1, 2)")
        if not isinstance(value, (tuple, list)):
            raise ConfigError(f"config.{key}: expected a tuple, got {text!r}")
        return type(current)(value)
    if isinstance(current, (dict, ml_collections.ConfigDict)):
        value = _literal(text, key, "a dict literal")
        if not isinstance(value, dict):
            raise ConfigError(f"config.{key}: expected a dict, got {text!r}")
        return ml_collections.ConfigDict(value)
    # None (an optional field): a Python literal, else the text itself
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def override_key(item: str) -> tuple[str, str]:
    """'--config.a.b=v' | 'config.a.b=v' | 'a.b=v' -> ('a.b', 'v')."""
    if "=" not in item:
        raise ConfigError(f"override {item!r} must look like --config.key=value")
    key, text = item.split("=", 1)
    return key.removeprefix("--").removeprefix("config."), text


def set_field(cfg: ml_collections.ConfigDict, key: str, text: str) -> None:
    parts = key.split(".")
    node, walked = cfg, []
    for p in parts[:-1]:
        if not isinstance(node, ml_collections.ConfigDict) or p not in node:
            raise ConfigError(f"config.{key}: no such field ({'.'.join(walked + [p])!r} missing)")
        node, walked = node[p], walked + [p]
    leaf = parts[-1]
    if not isinstance(node, ml_collections.ConfigDict) or leaf not in node:
        known = sorted(node.keys()) if isinstance(node, ml_collections.ConfigDict) else []
        raise ConfigError(f"config.{key}: no such field; "
                          f"config.{'.'.join(walked) or '<root>'} has {known}")
    value = parse_value(key, text, node[leaf])
    with node.ignore_type():  # the type was checked above (None fields take any literal)
        node[leaf] = value


def apply_overrides(cfg: ml_collections.ConfigDict,
                    overrides: Sequence[str]) -> ml_collections.ConfigDict:
    for item in overrides:
        set_field(cfg, *override_key(item))
    return cfg


def split_cli_overrides(extra: Sequence[str]) -> list[str]:
    """The `--config.a.b=value` / `--config.a.b value` items of an argv tail, as 'a.b=value'.
    Anything else is refused (a typo must not be ignored)."""
    out, i = [], 0
    extra = list(extra)
    while i < len(extra):
        item = extra[i]
        if not item.startswith("--config."):
            raise ConfigError(f"unrecognised argument {item!r} (overrides look like "
                              f"--config.key=value)")
        if "=" in item:
            out.append(item)
            i += 1
        elif i + 1 < len(extra):
            out.append(f"{item}={extra[i + 1]}")
            i += 2
        else:
            raise ConfigError(f"override {item!r} has no value")
    return out
