"""`r1v2 data convert` (Hugging Face-style parquet / arrow folder -> the pipeline's
records) and `r1v2 data stats FILE` (counts, tiles per image, prompt lengths, answer
types, invalid rows by reason), docs/data.md."""

from __future__ import annotations

import json

import numpy as np

from r1v2_jax.errors import UserError


def register(subparsers) -> None:
    p = subparsers.add_parser("data", help="convert data sets to records; record statistics")
    sub = p.add_subparsers(dest="data_command", required=True, metavar="ACTION")

    c = sub.add_parser("convert", help="HF-style parquet/arrow folder -> .parquet or .jsonl records")
    c.add_argument("src", help="a folder of .parquet/.arrow files (a `datasets` export) or one file")
    c.add_argument("out", help="output .parquet (pipeline format) or .jsonl (+ images/ beside it)")
    c.add_argument("--kind", choices=("prompt", "preference", "sft"), default="prompt")
    for field in ("question", "answer", "answer-type", "prompt", "chosen", "rejected",
                  "chosen-score", "rejected-score", "response"):
        c.add_argument(f"--{field}", metavar="COLUMN",
                       help=f"source column of '{field.replace('-', '_')}' (default: same name)")
    c.add_argument("--images", metavar="COLUMN", help="image column (default: images, else image)")
    c.add_argument("--id", metavar="COLUMN")
    c.add_argument("--meta", metavar="COL,COL", default="", help="columns kept in meta")
    c.add_argument("--row-group-size", type=int, default=64,
                   help="parquet rows per row group (a random read decodes one group)")
    c.add_argument("--limit", type=int, default=None, help="convert the first N rows only")
    c.set_defaults(func=convert_main)

    s = sub.add_parser("stats", help="validate records and summarise them")
    s.add_argument("file", help="records: .jsonl, .parquet or tfds:NAME/SPLIT")
    s.add_argument("--kind", choices=("prompt", "preference", "sft"), default="prompt")
    s.add_argument("--tfds-data-dir", default=None)
    s.add_argument("--tokenizer", default=None, help="folder or tokenizer.json: prompt lengths")
    s.add_argument("--image-size", type=int, default=448)
    s.add_argument("--max-num", type=int, default=12, help="max tiles per image")
    s.add_argument("--num-image-token", type=int, default=256)
    s.add_argument("--max-prompt-tokens", type=int, default=None)
    s.add_argument("--decode-images", action="store_true",
                   help="fully decode every image (slow; default: headers only)")
    s.add_argument("--show", type=int, default=5, help="invalid-row messages to print")
    s.set_defaults(func=stats_main)


def convert_main(args) -> int:
    from r1v2_jax.data.pipeline.convert import ColumnMap, convert

    if args.row_group_size < 1:
        raise UserError(f"--row-group-size must be >= 1, got {args.row_group_size}")
    fields = ("question", "answer", "answer_type", "prompt", "chosen", "rejected",
              "chosen_score", "rejected_score", "response")
    columns = {f: getattr(args, f) for f in fields if getattr(args, f)}
    cmap = ColumnMap(kind=args.kind, columns=columns, images=args.images, id=args.id,
                     meta=tuple(c for c in args.meta.split(",") if c))
    try:
        n = convert(args.src, args.out, cmap, row_group_size=args.row_group_size,
                    limit=args.limit)
    except (ValueError, FileNotFoundError) as err:
        raise UserError(str(err)) from None
    print(f"wrote {n} {args.kind} records to {args.out}; check them with `r1v2 data stats "
          f"{args.out} --kind {args.kind}`")
    return 0


def summary(validated) -> dict:
    s = validated.stats
    lengths = np.asarray(s["prompt_tokens"], np.int64)
    out = {"rows": validated.num_rows, "valid": int(len(validated.indices)),
           "invalid": dict(validated.skipped), "answer_types": s["answer_types"],
           "tiles_per_image": s["tiles_per_image"]}
    if len(lengths):
        out["prompt_tokens"] = {"min": int(lengths.min()), "mean": round(float(lengths.mean()), 1),
                                "p50": int(np.percentile(lengths, 50)),
                                "p95": int(np.percentile(lengths, 95)), "max": int(lengths.max())}
    return out


def stats_main(args) -> int:
    from r1v2_jax.data.image import TilingConfig
    from r1v2_jax.data.pipeline import open_source, prevalidate
    from r1v2_jax.data.prompts import PromptConfig
    from r1v2_jax.data.records import RecordRules

    tokenizer = None
    if args.tokenizer:
        from r1v2_jax.data.tokenizer import load_tokenizer

        tokenizer = load_tokenizer(args.tokenizer)
    rules = RecordRules(tiling=TilingConfig(image_size=args.image_size, max_num=args.max_num),
                        prompt=PromptConfig(num_image_token=args.num_image_token),
                        max_prompt_tokens=args.max_prompt_tokens,
                        decode_images=args.decode_images, on_invalid="skip")
    if args.max_prompt_tokens is not None and tokenizer is None:
        raise UserError("--max-prompt-tokens needs --tokenizer")
    source = open_source(args.file, tfds_data_dir=args.tfds_data_dir)
    validated = prevalidate(source, args.kind, rules, tokenizer)
    print(json.dumps(summary(validated), indent=1))
    for message in validated.skip_messages[:args.show]:
        print(f"invalid: {message}")
    return 0
