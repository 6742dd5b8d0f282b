"""A checkpoint's chat template (jinja2), rendered as transformers renders it.

`apply_chat_template` compiles the template in an `ImmutableSandboxedEnvironment` with
trim_blocks/lstrip_blocks, the loop-control extension, a `tojson` filter that keeps
non-ASCII text, `raise_exception` and `strftime_now`; `{% generation %}` blocks (assistant
masks) render their body. The same here, so prompts of real checkpoints are token for
token what `tokenizer.apply_chat_template(..., add_generation_prompt=True)` gives
(tests/data/test_prompts.py checks it against transformers).
"""

from __future__ import annotations

import datetime
import functools
import json
from typing import Any, Sequence

import jinja2
from jinja2.ext import Extension, loopcontrols
from jinja2.sandbox import ImmutableSandboxedEnvironment


class TemplateError(ValueError):
    """A template that does not compile or that raises while rendering."""


class _Generation(Extension):
    """`{% generation %}...{% endgeneration %}`: renders the body (no mask tracking)."""

    tags = {"generation"}

    def parse(self, parser):
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return jinja2.nodes.Scope(body, lineno=lineno)


def _raise_exception(message: str):
    raise jinja2.exceptions.TemplateError(message)


def _tojson(value, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                      sort_keys=sort_keys)


def _strftime_now(fmt: str) -> str:
    return datetime.datetime.now().strftime(fmt)


@functools.lru_cache(maxsize=8)
def compile_template(source: str) -> jinja2.Template:
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[_Generation, loopcontrols])
    env.filters["tojson"] = _tojson
    env.globals.update(raise_exception=_raise_exception, strftime_now=_strftime_now)
    try:
        return env.from_string(source)
    except jinja2.exceptions.TemplateError as err:
        raise TemplateError(f"chat template does not compile: {err}") from None


def render_chat(template: str, messages: Sequence[dict[str, Any]], *,
                add_generation_prompt: bool = True, **variables) -> str:
    """The template applied to `messages` ([{"role", "content"}]); `variables` (e.g.
    bos_token, eos_token) are passed to the template as transformers passes them."""
    try:
        return compile_template(template).render(
            messages=list(messages), add_generation_prompt=add_generation_prompt, **variables)
    except jinja2.exceptions.TemplateError as err:
        raise TemplateError(f"chat template failed: {err}") from None
