"""The `r1v2` command line: one subcommand per job.

Each subcommand lives in its own module exposing `register(subparsers)`, which adds an
argparse parser whose `func` default runs the job. Modules are imported lazily so that
`r1v2 --help` stays fast and a broken optional dependency only affects its own command.
User errors (`r1v2_jax.errors`) print one line `r1v2 <command>: error: ...` and exit 2;
internal errors keep their traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from r1v2_jax.errors import run_command

# subcommand -> module that registers it
_COMMANDS = {
    "convert": "r1v2_jax.convert.cli",
    "generate": "r1v2_jax.generate.cli",
    "train": "r1v2_jax.recipes.cli",
    "eval": "r1v2_jax.recipes.eval_cli",
    "filter-prompts": "r1v2_jax.recipes.filter_cli",
    "demo": "r1v2_jax.demo.cli",
    "plan": "r1v2_jax.tools.plan",
    "bench": "r1v2_jax.tools.bench",
    "data": "r1v2_jax.recipes.data_cli",
}


def build_parser(argv: list[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="r1v2", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    wanted = argv[0] if argv and argv[0] in _COMMANDS else None
    for name, module in _COMMANDS.items():
        if wanted is not None and name != wanted:
            sub.add_parser(name)  # placeholder so the name stays valid in --help
            continue
        try:
            importlib.import_module(module).register(sub)
        except ModuleNotFoundError as err:
            if wanted is not None:
                raise
            sub.add_parser(name, help=f"(unavailable: {err})")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(argv)
    args, extra = parser.parse_known_args(argv)
    if extra and not getattr(args, "accepts_overrides", False):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.overrides = extra  # `--config.a.b=value` items (train, eval, demo, filter-prompts)
    return run_command(args.command, lambda: args.func(args))


if __name__ == "__main__":
    sys.exit(main())
