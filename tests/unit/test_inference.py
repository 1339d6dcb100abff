"""One inference path: prompts rendered by the tokenizer's apply_chat_template (a named template only for a tokenizer
without one), stop ids, and every place that generates (training sample, export check, accuracy, chat) through it."""

from __future__ import annotations

import copy
import io
from types import SimpleNamespace
from typing import Any

import pytest

from factory_cli.config.errors import UsageError
from factory_cli.data.chat_templates import named_template
from factory_cli.data.masking import tokenizer_chat_template
from factory_cli.inference import generate as generate_module
from factory_cli.inference.generate import pad_token_id, stop_token_ids
from factory_cli.inference.render import encode_prompt, prompt_template, render_prompt

HI = [{"role": "user", "content": "Hi"}]


@pytest.fixture
def bare_tokenizer(smollm2_tokenizer: Any) -> Any:
    """The SmolLM2 tokenizer without its chat template."""
    bare = copy.deepcopy(smollm2_tokenizer)
    bare.chat_template = None
    return bare


class _GenerateSpy:
    """Stands in for inference.generate.generate: records each call, streams and returns a fixed answer."""

    answer = "Paris."

    def __init__(self) -> None:
        self.calls: list[tuple[Any, list[list[int]], dict[str, Any]]] = []

    def __call__(self, model: Any, tokenizer: Any, prompts: Any, **kwargs: Any) -> list[str]:
        self.calls.append((model, [list(p) for p in prompts], kwargs))
        if kwargs.get("on_text") is not None:
            kwargs["on_text"](self.answer)
        return [self.answer for _ in prompts]


@pytest.fixture
def spy(monkeypatch: pytest.MonkeyPatch) -> _GenerateSpy:
    recorder = _GenerateSpy()
    monkeypatch.setattr(generate_module, "generate", recorder)
    return recorder


class _Model:
    """A model as the call sites see it before generating (they may switch it to eval mode)."""

    def eval(self) -> _Model:
        return self


# ------------------------------------------------------------------------------------------------- rendering


def test_prompts_render_with_the_tokenizers_own_template(smollm2_tokenizer: Any) -> None:
    own = tokenizer_chat_template(smollm2_tokenizer)
    assert own is not None and prompt_template(smollm2_tokenizer, "llama3") == own  # the fallback is not used
    text = render_prompt(smollm2_tokenizer, HI, own)
    assert text == smollm2_tokenizer.apply_chat_template(HI, tokenize=False, add_generation_prompt=True)
    assert text.endswith("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")
    ids = encode_prompt(smollm2_tokenizer, HI, own)
    assert ids == list(smollm2_tokenizer.apply_chat_template(HI, add_generation_prompt=True, return_dict=False))


def test_a_tokenizer_without_a_template_falls_back_to_the_named_one(bare_tokenizer: Any) -> None:
    assert prompt_template(bare_tokenizer) is None
    template = prompt_template(bare_tokenizer, "chatml")
    assert template == named_template("chatml")
    assert render_prompt(bare_tokenizer, HI, template) == "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    # no template at all: the user turns as plain text, special tokens as the tokenizer adds them to text
    assert encode_prompt(bare_tokenizer, HI, None) == bare_tokenizer("Hi")["input_ids"]
    assert encode_prompt(bare_tokenizer, HI, None, plain_text="Q: Hi") == bare_tokenizer("Q: Hi")["input_ids"]


def test_chat_uses_the_registry_template_for_a_tokenizer_without_one(bare_tokenizer: Any) -> None:
    from factory_cli.chat import chat_template
    from factory_cli.registry.models import find_model

    spec = find_model("smollm2-135m-instruct-gguf")
    assert spec is not None
    info = SimpleNamespace(base=None, reference="smollm2-135m-instruct-gguf")
    assert chat_template(SimpleNamespace(tokenizer=bare_tokenizer, info=info)) == named_template(spec.template)
    unknown = SimpleNamespace(base=None, reference="/models/mine")
    with pytest.raises(UsageError, match="no chat template"):
        chat_template(SimpleNamespace(tokenizer=bare_tokenizer, info=unknown))


# ---------------------------------------------------------------------------------------------- stop and pad


def test_stop_ids_join_the_tokenizers_eos_and_the_generation_configs() -> None:
    tokenizer = SimpleNamespace(eos_token_id=0, pad_token_id=None)
    model = SimpleNamespace(generation_config=SimpleNamespace(eos_token_id=[2, 7], pad_token_id=None))
    assert stop_token_ids(model, tokenizer) == [0, 2, 7]
    assert pad_token_id(model, tokenizer) == 0  # no pad anywhere: the first stop id
    model.generation_config.pad_token_id = 5
    assert pad_token_id(model, tokenizer) == 5
    assert pad_token_id(model, SimpleNamespace(eos_token_id=0, pad_token_id=3)) == 3
    assert stop_token_ids(SimpleNamespace(), SimpleNamespace(eos_token_id=None)) == []


# ------------------------------------------------------------------------------- the four former call sites


def test_training_sample_answer_goes_through_the_inference_path(spy: _GenerateSpy, smollm2_tokenizer: Any) -> None:
    from factory_cli.backends.deepspeed.worker import sample_answer

    messages = [{"role": "system", "content": "Be brief."}, *HI]
    assert sample_answer(_Model(), smollm2_tokenizer, {"sample_prompt": messages}) == {
        "prompt": "Hi",
        "answer": "Paris.",
    }
    (_, prompts, kwargs), *_ = spy.calls
    assert prompts == [encode_prompt(smollm2_tokenizer, messages, tokenizer_chat_template(smollm2_tokenizer))]
    assert kwargs == {"max_new_tokens": 64}  # greedy
    assert sample_answer(_Model(), smollm2_tokenizer, {}) == {} and len(spy.calls) == 1


def test_export_check_goes_through_the_inference_path(spy: _GenerateSpy, smollm2_tokenizer: Any) -> None:
    from factory_cli.export.verify import CHECK_NEW_TOKENS, CHECK_PROMPT, generate_check, prompt_ids

    ids = prompt_ids(smollm2_tokenizer)
    question = [{"role": "user", "content": CHECK_PROMPT}]
    assert ids.tolist() == [encode_prompt(smollm2_tokenizer, question, tokenizer_chat_template(smollm2_tokenizer))]
    assert generate_check(_Model(), smollm2_tokenizer, ids) == "Paris."
    (_, prompts, kwargs), *_ = spy.calls
    assert prompts == ids.tolist() and kwargs == {"max_new_tokens": CHECK_NEW_TOKENS}


@pytest.mark.parametrize("chat", [True, False])
def test_accuracy_task_goes_through_the_inference_path(spy: _GenerateSpy, smollm2_tokenizer: Any, chat: bool) -> None:
    from factory_cli.evaluation.accuracy import evaluate_math_accuracy, load_math_rows

    template = tokenizer_chat_template(smollm2_tokenizer) if chat else None
    loaded = SimpleNamespace(model=_Model(), tokenizer=smollm2_tokenizer)
    result = evaluate_math_accuracy(loaded, template, limit=3, batch_size=2, max_new_tokens=8)
    assert result.n == 3 and result.details["chat_template"] is chat
    (_, prompts, kwargs), *_ = spy.calls
    assert (kwargs["batch_size"], kwargs["max_new_tokens"]) == (2, 8) and "temperature" not in kwargs  # greedy
    rows = load_math_rows(3)
    question = next(m["content"] for m in rows[0]["prompt"] if m["role"] == "user")
    expected = encode_prompt(
        smollm2_tokenizer, rows[0]["prompt"], template, plain_text=f"Question: {question}\nAnswer:"
    )
    assert len(prompts) == 3 and prompts[0] == expected
    assert smollm2_tokenizer.decode(prompts[0]).endswith("<|im_start|>assistant\n" if chat else "Answer:")


def test_chat_reply_goes_through_the_inference_path(spy: _GenerateSpy, smollm2_tokenizer: Any) -> None:
    from factory_cli.chat import ChatOptions, reply

    template = named_template("chatml")
    loaded = SimpleNamespace(model=_Model(), tokenizer=smollm2_tokenizer)
    out = io.StringIO()
    assert reply(loaded, HI, ChatOptions(max_new_tokens=5, temperature=0.7), out, template) == "Paris."
    assert out.getvalue() == "Paris.\n"  # streamed, then the line ends
    (_, prompts, kwargs), *_ = spy.calls
    assert prompts == [encode_prompt(smollm2_tokenizer, HI, template)]
    assert (kwargs["max_new_tokens"], kwargs["temperature"], callable(kwargs["on_text"])) == (5, 0.7, True)
