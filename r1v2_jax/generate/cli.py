"""`r1v2 generate --ckpt DIR --image PATH --question TEXT`: answer one question."""

from __future__ import annotations

import argparse
import math

from r1v2_jax.errors import UserError


def _number(check, what: str):
    """An argparse type: parses a float/int and refuses values outside `what` (nan, -1...)
    before any checkpoint is loaded."""
    def parse(text: str):
        try:
            value = float(text) if what.startswith("a number") else int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if not check(value):
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return value
    return parse


_TEMPERATURE = _number(lambda v: math.isfinite(v) and v >= 0, "a number >= 0 (0 = greedy)")
_TOP_P = _number(lambda v: 0 < v <= 1, "a number in (0, 1]")
_NON_NEGATIVE = _number(lambda v: v >= 0, "an integer >= 0")
_POSITIVE = _number(lambda v: v >= 1, "an integer >= 1")
_PENALTY = _number(lambda v: math.isfinite(v) and v > 0, "a number > 0")


def register(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "generate", help="answer a question about an image with a converted checkpoint",
        description="Loads a JAX checkpoint folder (params/ + model_config.json, tokenizer "
                    "files), builds the ChatML prompt opened with <think>, samples an answer "
                    "and prints the reasoning and the answer separately.")
    parser.add_argument("--ckpt", required=True, help="JAX checkpoint folder")
    parser.add_argument("--image", default=None, help="image file (omit for text only)")
    parser.add_argument("--question", required=True, help="the user question")
    parser.add_argument("--tokenizer", default=None,
                        help="tokenizer folder or tokenizer.json (default: --ckpt)")
    parser.add_argument("--system", default=None, help="system prompt (default: none)")
    # Sampling: the flag, else the checkpoint's generation_config.json, else R1V2's chat
    # defaults (chat.SamplingOptions: temperature 0.6, top-p 0.95, repetition penalty 1.05).
    parser.add_argument("--temperature", type=_TEMPERATURE, default=None, help="0 = greedy")
    parser.add_argument("--top-p", type=_TOP_P, default=None)
    parser.add_argument("--top-k", type=_NON_NEGATIVE, default=None, help="0 = off")
    parser.add_argument("--repetition-penalty", type=_PENALTY, default=None, help="1 = off")
    parser.add_argument("--max-new-tokens", type=_POSITIVE, default=None)
    parser.add_argument("--max-tiles", type=_POSITIVE, default=None,
                        help="at most this many image tiles (default: the checkpoint's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.set_defaults(func=main)
    return parser


def sampling_options(args, defaults: dict):
    """Each option: the flag if given, else the checkpoint's generation_config.json value,
    else chat.SamplingOptions' default."""
    from r1v2_jax.generate.chat import SamplingOptions

    chosen = {name: getattr(args, name) if getattr(args, name) is not None else defaults[name]
              for name in ("temperature", "top_p", "top_k", "repetition_penalty",
                           "max_new_tokens")
              if getattr(args, name) is not None or name in defaults}
    return SamplingOptions(**chosen, seed=args.seed)


def main(args) -> int:
    """Bad options are refused by argparse; a bad checkpoint, tokenizer or image is a
    UserError (`r1v2_jax.cli` prints one line, exit status 2)."""
    from r1v2_jax.convert import load_jax_checkpoint
    from r1v2_jax.data.tokenizer import load_tokenizer
    from r1v2_jax.generate.chat import answer_question
    from r1v2_jax.generate.gen_config import generation_defaults

    try:
        config, params = load_jax_checkpoint(args.ckpt)
        tokenizer = load_tokenizer(args.tokenizer or args.ckpt)
        options = sampling_options(args, generation_defaults(args.ckpt))
        result = answer_question(config, params, tokenizer, args.question, args.image,
                                 system=args.system, options=options,
                                 max_tiles=args.max_tiles)
    except (ValueError, FileNotFoundError) as err:  # ConversionError, ImageError included
        raise UserError(str(err)) from err
    print("=== reasoning ===")
    print(result.reasoning)
    print("=== answer ===")
    print(result.answer if result.answer else "(none: the reasoning was not closed)")
    if result.truncated:
        print(f"(stopped at max_new_tokens={options.max_new_tokens})")
    return 0
