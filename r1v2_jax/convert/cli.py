"""`r1v2 convert to-jax SRC DST` and `r1v2 convert to-hf SRC DST --layout hf|original`."""

from __future__ import annotations

import argparse
import sys

from r1v2_jax.convert.hf_save import DEFAULT_SHARD_SIZE


def _dtype(value: str) -> str | None:
    return None if value == "keep" else value


def register(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "convert", help="convert checkpoints between Hugging Face and JAX (orbax)",
        description="Convert R1V2/InternVL checkpoints between Hugging Face safetensors "
                    "(layout 'hf' = transformers InternVL, 'original' = InternVL chat remote "
                    "code) and the JAX/orbax checkpoint folder.")
    sub = parser.add_subparsers(dest="direction", required=True, metavar="DIRECTION")
    to_jax = sub.add_parser("to-jax", help="HF checkpoint folder (either layout) -> JAX folder")
    to_jax.add_argument("src", help="HF folder with config.json and safetensors")
    to_jax.add_argument("dst", help="new JAX checkpoint folder (must not exist)")
    to_jax.add_argument("--dtype", type=_dtype, default="bfloat16",
                        help="bfloat16 (default), float16, float32, float64 or 'keep'")
    to_jax.add_argument("--max-chunk-size", default="1GiB",
                        help="largest zarr chunk (default 1GiB; stacked arrays are also "
                             "chunked per layer)")
    to_jax.set_defaults(func=_run_to_jax)
    to_hf = sub.add_parser("to-hf", help="JAX checkpoint folder -> HF checkpoint folder")
    to_hf.add_argument("src", help="JAX checkpoint folder (params/ + model_config.json)")
    to_hf.add_argument("dst", help="new HF folder (must not exist)")
    to_hf.add_argument("--layout", choices=("hf", "original"), required=True,
                       help="'hf': transformers InternVLForConditionalGeneration; "
                            "'original': InternVL chat remote-code layout")
    to_hf.add_argument("--dtype", type=_dtype, default=None,
                       help="output dtype (default: keep the stored dtype)")
    to_hf.add_argument("--shard-size", default=DEFAULT_SHARD_SIZE,
                       help=f"maximum safetensors shard size (default {DEFAULT_SHARD_SIZE})")
    to_hf.set_defaults(func=_run_to_hf)
    return parser


def _note_stale_partials(dst: str) -> None:
    """A conversion killed with SIGKILL (kill -9, the OOM killer) cannot clean up: name its
    leftovers so they are found (they are never read; deleting them is the user's call,
    as one may belong to a conversion still running)."""
    from pathlib import Path

    out = Path(dst).absolute()
    stale = sorted(out.parent.glob(f".{out.name}.partial-*"))
    if stale:
        print(f"r1v2 convert: note: {len(stale)} hidden partial folder(s) left by an earlier "
              f"killed conversion: {', '.join(map(str, stale))}; they are not used and can be "
              "deleted", file=sys.stderr)


def _report(convert) -> int:
    """SIGTERM/SIGINT raise inside the conversion, so its cleanup removes the hidden partial
    folder; bad input (ConversionError, a full or read-only disk) reaches `r1v2_jax.cli`,
    which prints one line and exits 2."""
    from r1v2_jax.errors import signals_raise

    with signals_raise():
        out = convert()
    print(f"wrote {out}")
    return 0


def _run_to_jax(args) -> int:
    from r1v2_jax.convert.hf_save import parse_size
    from r1v2_jax.convert.streaming import convert_to_jax

    _note_stale_partials(args.dst)
    return _report(lambda: convert_to_jax(args.src, args.dst, dtype=args.dtype,
                                          max_chunk_bytes=parse_size(args.max_chunk_size)))


def _run_to_hf(args) -> int:
    from r1v2_jax.convert.hf_save import convert_to_hf

    _note_stale_partials(args.dst)
    return _report(lambda: convert_to_hf(args.src, args.dst, args.layout, dtype=args.dtype,
                                         shard_size=args.shard_size))
