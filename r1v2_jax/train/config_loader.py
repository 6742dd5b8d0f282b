"""Loads an ml_collections config file (`get_config()`) and applies `--config.a.b=value`
overrides from the command line."""

from __future__ import annotations

import ast
import importlib.util
import os
import sys
from typing import Sequence

import ml_collections


def load_config_file(path: str) -> ml_collections.ConfigDict:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"config file not found: {path}")
    folder = os.path.dirname(os.path.abspath(path))
    sys.path.insert(0, folder)  # recipes import their sibling model configs
    try:
        name = "_r1v2_config_" + os.path.splitext(os.path.basename(path))[0]
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(folder)
    if not hasattr(module, "get_config"):
        raise ValueError(f"{path}: a config file must define get_config()")
    return module.get_config()


def _parse_value(text: str, current):
    if isinstance(current, str):
        return text
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text
    if isinstance(current, float) and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    return value


def apply_overrides(cfg: ml_collections.ConfigDict, overrides: Sequence[str]) -> ml_collections.ConfigDict:
    """overrides: items like 'config.train.steps=10' or 'train.steps=10'."""
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"override {item!r} must look like config.key=value")
        key, text = item.split("=", 1)
        key = key.removeprefix("--").removeprefix("config.")
        parts = key.split(".")
        node = cfg
        for p in parts[:-1]:
            if p not in node:
                raise KeyError(f"override {item!r}: no config field {key!r} ({p!r} missing)")
            node = node[p]
        if parts[-1] not in node:
            raise KeyError(f"override {item!r}: no config field {key!r}")
        with node.ignore_type():
            node[parts[-1]] = _parse_value(text, node[parts[-1]])
    return cfg
