"""Imports flow one way: core (models, losses, data, convert, sharding, generate) <- train
<- rl <- recipes <- demo / tools / the CLI. A module importing from a later layer (even
lazily, inside a function) fails this test, naming the file, line and import."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "r1v2_jax"
LAYERS = {
    "models": 0, "losses": 0, "data": 0, "convert": 0, "sharding": 0, "generate": 0,
    "errors": 0, "__init__": 0,
    "train": 1, "rl": 2, "recipes": 3, "demo": 4, "tools": 4, "cli": 4,
}


def layer_of(module: str) -> int | None:
    parts = module.split(".")
    if parts[0] != "r1v2_jax":
        return None
    return LAYERS[parts[1] if len(parts) > 1 else "__init__"]


def violations() -> list[str]:
    found = []
    for file in sorted(PACKAGE.rglob("*.py")):
        rel = file.relative_to(PACKAGE.parent).with_suffix("")
        own = layer_of(".".join(rel.parts))
        for node in ast.walk(ast.parse(file.read_text(), str(file))):
            names = []
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            for name in names:
                target = layer_of(name)
                if target is not None and target > own:
                    found.append(f"{rel}.py:{node.lineno} imports {name}")
    return found


def test_every_package_folder_has_a_layer():
    folders = {p.name for p in PACKAGE.iterdir() if p.is_dir() and p.name != "__pycache__"}
    modules = {p.stem for p in PACKAGE.glob("*.py")}
    assert folders | modules <= set(LAYERS), (folders | modules) - set(LAYERS)


def test_imports_flow_one_way():
    assert violations() == []


def test_the_check_sees_a_lazy_upward_import(tmp_path, monkeypatch):
    bad = PACKAGE / "models" / "_layering_probe.py"
    bad.write_text("def f():\n    from r1v2_jax.recipes import STAGES\n")
    try:
        assert "r1v2_jax/models/_layering_probe.py:2 imports r1v2_jax.recipes" in violations()
    finally:
        bad.unlink()
