"""Render a chat-template Jinja source with transformers' own renderer, errors as ChatTemplateError.

`transformers.utils.chat_template_utils.render_jinja_template` is what `tokenizer.apply_chat_template` renders with:
the template compiled once (cached) in its sandboxed environment (`{% generation %}`, `raise_exception`, `tojson`
without HTML escaping, `strftime_now`, loop controls). This module only adapts it: one conversation in, its text out,
no tokenizer needed (named templates, factory_cli/data/chat_templates.py, are rendered before any tokenizer is
loaded in tests and bench), and a template that does not compile or refuses a row raises ChatTemplateError, which
the data pipeline reports per row. transformers is imported on the first render (0.7 s, without torch), not with
this module, so importing the data package stays light.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from factory_cli.data.chat_templates import ChatTemplateError


@functools.cache
def _library() -> tuple[Callable[..., Any], type[Exception], type[Exception]]:
    """transformers' renderer and the two Jinja errors it raises (imported once, on the first render)."""
    from jinja2.exceptions import TemplateError, TemplateSyntaxError
    from transformers.utils.chat_template_utils import render_jinja_template

    return render_jinja_template, TemplateSyntaxError, TemplateError


def render_chat(
    template_source: str,
    messages: list[dict[str, Any]],
    *,
    add_generation_prompt: bool = False,
    tools: Any = None,
    bos_token: str = "",
    eos_token: str = "",
    **extra: Any,
) -> str:
    """Render messages with a chat-template Jinja source exactly as transformers' apply_chat_template does."""
    render_jinja_template, syntax_error, template_error = _library()
    try:
        rendered, _ = render_jinja_template(
            [messages],
            tools=tools,
            chat_template=template_source,
            add_generation_prompt=add_generation_prompt,
            bos_token=bos_token,
            eos_token=eos_token,
            **extra,
        )
    except syntax_error as exc:
        line = getattr(exc, "lineno", None)
        where = f" (line {line})" if line else ""
        raise ChatTemplateError(f"chat template does not compile{where}: {getattr(exc, 'message', exc)}") from None
    except template_error as exc:
        raise ChatTemplateError(f"chat template refused the conversation: {exc}") from None
    return str(rendered[0])
