"""`r1v2 convert` under faults, in subprocesses: SIGTERM/SIGINT at random points leave
either nothing or the complete output (never a hidden partial folder); bad configs, bad
files, a full disk and a read-only destination are one-line errors (exit 2) naming the
file, key or output, with nothing written."""

from __future__ import annotations

import json
import random
import shutil
import signal
import struct
import time
from pathlib import Path

import numpy as np
import pytest

from r1v2_jax.convert import ConversionError, load_hf, load_jax_checkpoint
from r1v2_jax.convert.mapping import flatten
from tests.reliability._cli import assert_user_error, run_cli, start_cli

TO_JAX = ("convert", "to-jax", "--dtype", "float32", "--max-chunk-size", "4000")


def _partials(dst: Path) -> list[Path]:
    return sorted(dst.parent.glob(f".{dst.name}.partial-*"))


def _same_params(a: dict, b: dict) -> bool:
    fa, fb = flatten(a), flatten(b)
    return fa.keys() == fb.keys() and all(np.array_equal(fa[k], fb[k]) for k in fa)


def _interrupt(args, dst: Path, signum: int, delay: float, after_partial: bool):
    """Starts the command; sends `signum` `delay` s after the hidden partial folder appears
    (or after the start). Returns (exit status, stderr, whether the partial was seen)."""
    proc = start_cli(args)
    seen = False
    if after_partial:
        t_end = time.monotonic() + 120
        while not (seen := bool(_partials(dst))) and proc.poll() is None and time.monotonic() < t_end:
            time.sleep(0.002)
    time.sleep(delay)
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=120)
    return proc.returncode, err, seen


# (signal, delay in s, measured from the partial folder's appearance or from the start)
_RNG = random.Random(19)
POINTS = ([(signal.SIGTERM, 0.0, True), (signal.SIGINT, 0.0, True)]
          + [(signal.SIGTERM, round(_RNG.uniform(0.0, 0.8), 3), True) for _ in range(2)]
          + [(signal.SIGTERM, round(_RNG.uniform(0.5, 4.0), 3), False)])


@pytest.mark.parametrize("signum,delay,after_partial", POINTS,
                         ids=[f"{s.name}-{d}s-{'write' if w else 'start'}" for s, d, w in POINTS])
def test_signal_during_to_jax_leaves_nothing_or_everything(tiny_hf, tmp_path, signum, delay, after_partial):
    hf, ref = tiny_hf
    dst = tmp_path / "jax"
    code, err, seen = _interrupt([*TO_JAX, hf, dst], dst, signum, delay, after_partial)
    assert not _partials(dst), "hidden partial folder left behind"
    if code == 128 + signum:  # interrupted: nothing written
        assert f"interrupted by {signum.name}" in err and "Traceback" not in err, err[-2000:]
        assert not dst.exists()
    elif dst.exists():  # the signal came after the rename (or killed the process after it)
        assert code in (0, -signum), (code, err[-2000:])
        assert _same_params(load_jax_checkpoint(dst)[1], load_jax_checkpoint(ref)[1])
    else:  # on a loaded machine the signal can land before Python installed its handler
        assert code == -signum, (code, err[-2000:])
    if after_partial and delay == 0.0:
        assert seen and code == 128 + signum, "the signal was meant to land mid-write"


@pytest.mark.parametrize("delay", [0.0, round(_RNG.uniform(0.0, 0.5), 3)])
def test_signal_during_to_hf_leaves_nothing_or_everything(tiny_hf, tmp_path, delay):
    hf, ref = tiny_hf
    dst = tmp_path / "hf"
    code, err, seen = _interrupt(["convert", "to-hf", ref, dst, "--layout", "hf", "--shard-size", "20KB"],
                                 dst, signal.SIGTERM, delay, True)
    assert not _partials(dst)
    if code == 128 + signal.SIGTERM:
        assert not dst.exists() and "Traceback" not in err
    else:
        assert code in (0, -signal.SIGTERM), (code, err[-2000:])
        assert _same_params(load_hf(dst)[1], load_hf(hf)[1])
    if delay == 0.0:
        assert seen and code == 128 + signal.SIGTERM


def _copy_with_config(hf: Path, tmp_path: Path, edit) -> Path:
    src = Path(shutil.copytree(hf, tmp_path / "src"))
    raw = json.loads((src / "config.json").read_text())
    (src / "config.json").write_text(json.dumps(edit(raw)))
    return src


def _set(section: str, key: str, value):
    def edit(raw):
        raw[section][key] = value
        return raw
    return edit


@pytest.mark.parametrize("edit,fragments", [
    (lambda raw: [raw], ["config.json: expected a JSON object, got a list"]),
    (_set("text_config", "num_attention_heads", 0), ["'text_config.num_attention_heads' is 0"]),
    (_set("vision_config", "patch_size", 0), ["'vision_config.patch_size' is 0"]),
    (_set("text_config", "num_hidden_layers", 10**9), ["text num_hidden_layers=1000000000",
                                                       "the safetensors files hold"]),
], ids=["list", "zero-heads", "zero-patch", "1e9-layers"])
def test_bad_config_json_is_one_line_naming_the_key(tiny_hf, tmp_path, edit, fragments):
    src = _copy_with_config(tiny_hf[0], tmp_path, edit)
    result = run_cli([*TO_JAX, src, tmp_path / "out"], timeout=60)  # 1e9 layers once hung
    assert_user_error(result, "convert", str(src / "config.json"), *fragments)
    assert not (tmp_path / "out").exists() and not _partials(tmp_path / "out")


def _overlap_two_tensors(file: Path) -> tuple[str, str]:
    """Points the second of two same-size tensors at the first one's bytes."""
    raw = file.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    spans = {}
    for key, entry in header.items():
        if key != "__metadata__":
            begin, end = entry["data_offsets"]
            spans.setdefault(end - begin, []).append(key)
    a, b = next(keys for keys in spans.values() if len(keys) >= 2)[:2]
    header[b]["data_offsets"] = header[a]["data_offsets"]
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    file.write_bytes(struct.pack("<Q", len(text)) + text + raw[8 + n:])
    return a, b


def test_overlapping_tensors_are_refused_like_the_library_does(tiny_hf, tmp_path):
    from safetensors import SafetensorError, safe_open

    src = Path(shutil.copytree(tiny_hf[0], tmp_path / "src"))
    shard = sorted(src.glob("model-*.safetensors"))[0]
    a, b = _overlap_two_tensors(shard)
    with pytest.raises(SafetensorError):  # the reference behaviour
        safe_open(str(shard), "np")
    with pytest.raises(ConversionError, match="overlaps"):
        load_hf(src)
    result = run_cli([*TO_JAX, src, tmp_path / "out"])
    assert_user_error(result, "convert", shard.name, "overlaps", "in the data buffer")
    assert a in result.stderr or b in result.stderr
    assert not (tmp_path / "out").exists() and not _partials(tmp_path / "out")


DISK_FULL = ("import resource, signal\nsignal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
             "resource.setrlimit(resource.RLIMIT_FSIZE, (3000, 3000))")
# root ignores permission bits, so a read-only destination is simulated at os.mkdir
READ_ONLY = ("import errno, os\n_mkdir = os.mkdir\n"
             "def _ro(path, *a, **k):\n"
             "    if '.partial-' in os.fspath(path):\n"
             "        raise OSError(errno.EROFS, os.strerror(errno.EROFS), os.fspath(path))\n"
             "    return _mkdir(path, *a, **k)\n"
             "os.mkdir = _ro")


@pytest.mark.parametrize("direction,inject,why", [
    ("to-jax", DISK_FULL, "File too large"),
    ("to-jax", READ_ONLY, "Read-only file system"),
    ("to-hf", DISK_FULL, "File too large"),
], ids=["to-jax-disk-full", "to-jax-read-only", "to-hf-disk-full"])
def test_unwritable_destination_is_one_line_and_leaves_nothing(tiny_hf, tmp_path, direction, inject, why):
    hf, ref = tiny_hf
    dst = tmp_path / "out"
    args = ([*TO_JAX, hf, dst] if direction == "to-jax"
            else ["convert", "to-hf", ref, dst, "--layout", "hf", "--shard-size", "20KB"])
    result = run_cli(args, inject=inject)
    assert_user_error(result, "convert", str(dst), why, "nothing was written")
    assert not dst.exists() and not _partials(dst)


def test_internal_errors_keep_their_traceback(tiny_hf, tmp_path):
    bug = ("import r1v2_jax.convert.streaming as s\n"
           "def _bug(*a, **k):\n    raise KeyError('a bug, not bad input')\n"
           "s.chunk_shape = _bug")
    result = run_cli([*TO_JAX, tiny_hf[0], tmp_path / "out"], inject=bug)
    assert result.returncode == 1 and "Traceback" in result.stderr
    assert "KeyError: 'a bug, not bad input'" in result.stderr
    assert not (tmp_path / "out").exists() and not _partials(tmp_path / "out")


def test_leftovers_of_a_killed_conversion_are_named_not_deleted(tiny_hf, tmp_path):
    dst = tmp_path / "out"
    stale = tmp_path / ".out.partial-0badf00d"  # what kill -9 mid-conversion leaves
    (stale / "params").mkdir(parents=True)
    result = run_cli([*TO_JAX, tiny_hf[0], dst])
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"1 hidden partial folder(s) left by an earlier killed conversion: {stale}" in result.stderr
    assert stale.is_dir() and dst.is_dir()
