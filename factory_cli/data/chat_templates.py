"""Named chat templates: Jinja sources for tokenizers that have no chat template of their own.

Each named template reproduces its family's official `tokenizer_config.json` template for plain conversations
(system / user / assistant turns, no tools); roles they do not cover raise, so nothing is silently dropped.
Special tokens (BOS, end-of-turn) are written into the text, so tokenize the result with
`add_special_tokens=False`, exactly as transformers does for `apply_chat_template`. They are rendered by
factory_cli/data/chat_render.py (data) and by the tokenizer's apply_chat_template (factory_cli/inference/render.py).
"""

from __future__ import annotations

import difflib

from factory_cli.config.errors import UsageError


class ChatTemplateError(UsageError):
    """A chat template that does not compile, or that refused the conversation (its `raise_exception`)."""


def _unsupported(name: str) -> str:
    return (
        "{{- raise_exception('the named template `" + name + "` renders plain system/user/assistant turns; "
        "got role ' + message['role'] + '. Use the tokenizer\\'s own chat template for tool calls') }}"
    )


# ChatML as Qwen2.5 and SmolLM2 write it, without their default system prompts.
_CHATML = r"""
{%- for message in messages %}
    {{- '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\n' }}
{%- endif %}
"""

# Qwen3: ChatML; assistant turns after the last user query carry a <think> block (empty when no reasoning),
# earlier ones lose their reasoning; enable_thinking=false pre-fills an empty <think> block in the generation prompt.
_QWEN3 = r"""
{%- if messages and messages[0]['role'] == 'system' %}
    {{- '<|im_start|>system\n' + messages[0]['content'] + '<|im_end|>\n' }}
{%- endif %}
{%- set ns = namespace(last_query=messages|length - 1) %}
{%- for message in messages %}
    {%- if message['role'] == 'user' and not (message['content'].startswith('<tool_response>')
          and message['content'].endswith('</tool_response>')) %}
        {%- set ns.last_query = loop.index0 %}
    {%- endif %}
{%- endfor %}
{%- for message in messages %}
    {%- if message['role'] == 'system' and loop.first %}
    {%- elif message['role'] == 'user' or message['role'] == 'system' %}
        {{- '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}
    {%- elif message['role'] == 'assistant' %}
        {%- set content = message['content'] %}
        {%- set reasoning = '' %}
        {%- if message.reasoning_content is defined and message.reasoning_content is not none %}
            {%- set reasoning = message.reasoning_content %}
        {%- elif '</think>' in content %}
            {%- set reasoning = content.split('</think>')[0].rstrip('\n').split('<think>')[-1].lstrip('\n') %}
            {%- set content = content.split('</think>')[-1].lstrip('\n') %}
        {%- endif %}
        {%- if loop.index0 > ns.last_query and (loop.last or reasoning) %}
            {{- '<|im_start|>assistant\n<think>\n' + reasoning.strip('\n') + '\n</think>\n\n' + content.lstrip('\n') }}
        {%- else %}
            {{- '<|im_start|>assistant\n' + content }}
        {%- endif %}
        {{- '<|im_end|>\n' }}
    {%- else %}
        @UNSUPPORTED@
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\n' }}
    {%- if enable_thinking is defined and enable_thinking is false %}
        {{- '<think>\n\n</think>\n\n' }}
    {%- endif %}
{%- endif %}
"""

# Llama 3 (Meta-Llama-3-*-Instruct): BOS once, header + trimmed content + <|eot_id|> per message.
_LLAMA3 = r"""
{%- for message in messages %}
    {%- if loop.first %}
        {{- '<|begin_of_text|>' }}
    {%- endif %}
    {{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' + message['content'] | trim + '<|eot_id|>' }}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|start_header_id|>assistant<|end_header_id|>\n\n' }}
{%- endif %}
"""

# Mistral-7B-Instruct-v0.3 (tokenizer v3): the system prompt joins the last user message.
_MISTRAL = r"""
{%- if messages and messages[0]['role'] == 'system' %}
    {%- set system_message = messages[0]['content'] %}
    {%- set loop_messages = messages[1:] %}
{%- else %}
    {%- set loop_messages = messages %}
{%- endif %}
{%- set user_messages = loop_messages | selectattr('role', 'equalto', 'user') | list %}
{%- for message in loop_messages %}
    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}
        {{- raise_exception('After the optional system message, conversation roles must alternate '
                            'user/assistant/user/assistant/...') }}
    {%- endif %}
{%- endfor %}
{{- '<s>' }}
{%- for message in loop_messages %}
    {%- if message['role'] == 'user' %}
        {%- if message == user_messages[-1] and system_message is defined %}
            {{- '[INST] ' + system_message + '\n\n' + message['content'] + '[/INST]' }}
        {%- else %}
            {{- '[INST] ' + message['content'] + '[/INST]' }}
        {%- endif %}
    {%- elif message['role'] == 'assistant' %}
        {{- ' ' + message['content'] | trim + '</s>' }}
    {%- else %}
        @UNSUPPORTED@
    {%- endif %}
{%- endfor %}
"""

# GLM-4 (glm-4-9b-chat): [gMASK]<sop>, then <|role|>\ncontent per non-empty message; tool results are observations.
_GLM4 = r"""
{{- '[gMASK]<sop>' }}
{%- for message in messages %}
    {%- if message['role'] not in ['system', 'user', 'assistant', 'tool'] %}
        @UNSUPPORTED@
    {%- endif %}
    {%- if message['content'] %}
        {%- set role = 'observation' if message['role'] == 'tool' else message['role'] %}
        {{- '<|' + role + '|>\n' + message['content'] }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|assistant|>' }}
{%- endif %}
"""

# DeepSeek-R1: BOS + all system prompts, <｜User｜>/<｜Assistant｜> turns; reasoning before </think> is dropped
# from assistant turns and the generation prompt opens a <think> block.
_DEEPSEEK_R1 = r"""
{%- set ns = namespace(system='', first=true) %}
{%- for message in messages %}
    {%- if message['role'] == 'system' %}
        {%- if ns.first %}
            {%- set ns.system = message['content'] %}
            {%- set ns.first = false %}
        {%- else %}
            {%- set ns.system = ns.system + '\n\n' + message['content'] %}
        {%- endif %}
    {%- endif %}
{%- endfor %}
{{- '@BOS@' + ns.system }}
{%- for message in messages %}
    {%- if message['role'] == 'user' %}
        {{- '@USER@' + message['content'] }}
    {%- elif message['role'] == 'assistant' %}
        {%- set content = message['content'] %}
        {%- if '</think>' in content %}
            {%- set content = content.split('</think>')[-1] %}
        {%- endif %}
        {{- '@ASSISTANT@' + content + '@EOS@' }}
    {%- elif message['role'] != 'system' %}
        @UNSUPPORTED@
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '@ASSISTANT@<think>\n' }}
{%- endif %}
"""

# DeepSeek's special tokens use fullwidth bars (U+FF5C) and lower blocks (U+2581).
_DEEPSEEK_TOKENS = {
    "@BOS@": "<\uff5cbegin\u2581of\u2581sentence\uff5c>",
    "@EOS@": "<\uff5cend\u2581of\u2581sentence\uff5c>",
    "@USER@": "<\uff5cUser\uff5c>",
    "@ASSISTANT@": "<\uff5cAssistant\uff5c>",
}


def _finish(name: str, source: str, tokens: dict[str, str] | None = None) -> str:
    source = source.strip("\n").replace("@UNSUPPORTED@", _unsupported(name))
    for placeholder, token in (tokens or {}).items():
        source = source.replace(placeholder, token)
    return source


_TEMPLATES: dict[str, str] = {
    "chatml": _finish("chatml", _CHATML),
    "qwen3": _finish("qwen3", _QWEN3),
    "llama3": _finish("llama3", _LLAMA3),
    "mistral": _finish("mistral", _MISTRAL),
    "glm4": _finish("glm4", _GLM4),
    "deepseek_r1": _finish("deepseek_r1", _DEEPSEEK_R1, _DEEPSEEK_TOKENS),
}
TEMPLATE_NAMES: tuple[str, ...] = tuple(_TEMPLATES)


def named_template(name: str) -> str:
    """The Jinja source of a named template; ValueError (with a did-you-mean) for an unknown name."""
    key = name.strip().lower().replace("-", "_")
    if key in _TEMPLATES:
        return _TEMPLATES[key]
    close = difflib.get_close_matches(key, TEMPLATE_NAMES, n=1, cutoff=0.5)
    hint = f" (did you mean `{close[0]}`?)" if close else ""
    raise ValueError(f"unknown chat template `{name}`{hint}; known: {', '.join(TEMPLATE_NAMES)}")
