"""Generation on the tiny ChatML model stops at `<|im_end|>` whether the tokenizer or the generation_config names it,
cuts each row of a left-padded batch at its own stop, and streams what it returns."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from factory_cli.inference.generate import generate, stop_token_ids
from factory_cli.inference.load import LoadedModel, load_for_inference
from factory_cli.inference.render import encode_prompt, prompt_template

pytestmark = pytest.mark.integration

MAX_NEW_TOKENS = 20


@pytest.fixture(scope="module")
def tiny(tiny_llama_dir: Path) -> LoadedModel:
    return load_for_inference(str(tiny_llama_dir), device="cpu")


@pytest.fixture
def loaded(tiny: LoadedModel) -> Iterator[LoadedModel]:
    """The tiny model with its own tokenizer copy and generation_config restored after each test."""
    saved = copy.deepcopy(tiny.model.generation_config)
    yield LoadedModel(tiny.model, copy.deepcopy(tiny.tokenizer), tiny.info, tiny.device)
    tiny.model.generation_config = saved


class _Script:
    """A forward hook that makes the model pick the scripted token of each row at each step (the last one repeats)."""

    def __init__(self, model: Any, rows: list[list[int]]) -> None:
        self.rows, self.steps = rows, 0
        self.handle = model.register_forward_hook(self._pick)

    def _pick(self, module: Any, args: Any, output: Any) -> Any:
        logits = output.logits
        logits[:, -1, :] = -1e9
        for row, tokens in enumerate(self.rows):
            logits[row, -1, tokens[min(self.steps, len(tokens) - 1)]] = 0.0
        self.steps += 1
        return output


def _im_end(tokenizer: Any) -> int:
    return int(tokenizer.convert_tokens_to_ids("<|im_end|>"))


@pytest.mark.parametrize("named_by", ["tokenizer", "generation_config"])
def test_generation_stops_at_im_end(loaded: LoadedModel, named_by: str) -> None:
    tokenizer, model = loaded.tokenizer, loaded.model
    im_end, endoftext = _im_end(tokenizer), int(tokenizer.convert_tokens_to_ids("<|endoftext|>"))
    if named_by == "tokenizer":  # a generation_config that only knows <|endoftext|>
        model.generation_config.eos_token_id = endoftext
    else:  # a tokenizer whose EOS is <|endoftext|>, the turn end only in generation_config
        tokenizer.eos_token = "<|endoftext|>"
        model.generation_config.eos_token_id = im_end
    assert set(stop_token_ids(model, tokenizer)) == {im_end, endoftext}
    words = tokenizer("Paris is nice", add_special_tokens=False)["input_ids"]
    script = _Script(model, [[*words, im_end, *words]])
    try:
        prompt = encode_prompt(
            tokenizer, [{"role": "user", "content": "Capital of France?"}], prompt_template(tokenizer)
        )
        (answer,) = generate(model, tokenizer, [prompt], max_new_tokens=MAX_NEW_TOKENS)
    finally:
        script.handle.remove()
    assert answer == "Paris is nice"
    assert script.steps == len(words) + 1  # stopped after <|im_end|>, not at max_new_tokens


def test_a_left_padded_batch_cuts_each_row_at_its_own_stop(loaded: LoadedModel) -> None:
    tokenizer, model = loaded.tokenizer, loaded.model
    im_end = _im_end(tokenizer)
    words = tokenizer("Paris is nice", add_special_tokens=False)["input_ids"]
    template = prompt_template(tokenizer)
    prompts = [
        encode_prompt(tokenizer, [{"role": "user", "content": "Capital of France?"}], template),
        encode_prompt(tokenizer, [{"role": "user", "content": "And the capital of a much longer country?"}], template),
    ]
    assert len(prompts[0]) != len(prompts[1])
    script = _Script(model, [[words[0], im_end, *words], [*words, im_end]])
    streamed: list[str] = []
    try:
        answers = generate(model, tokenizer, prompts, max_new_tokens=MAX_NEW_TOKENS, batch_size=2)
        with pytest.raises(ValueError, match="one prompt"):
            generate(model, tokenizer, prompts, max_new_tokens=2, on_text=streamed.append)
    finally:
        script.handle.remove()
    assert answers == [tokenizer.decode(words[:1]).strip(), "Paris is nice"]
    assert script.steps == len(words) + 1


def test_streamed_text_is_the_returned_text(loaded: LoadedModel) -> None:
    tokenizer, model = loaded.tokenizer, loaded.model
    words = tokenizer("Paris is nice", add_special_tokens=False)["input_ids"]
    script = _Script(model, [[*words, _im_end(tokenizer)]])
    streamed: list[str] = []
    try:
        prompt = encode_prompt(tokenizer, [{"role": "user", "content": "Capital?"}], prompt_template(tokenizer))
        (answer,) = generate(model, tokenizer, [prompt], max_new_tokens=MAX_NEW_TOKENS, on_text=streamed.append)
    finally:
        script.handle.remove()
    assert answer == "Paris is nice" == "".join(streamed).strip()


def test_the_training_sample_and_the_export_check_answer_with_the_real_model(loaded: LoadedModel) -> None:
    from factory_cli.backends.deepspeed.worker import sample_answer
    from factory_cli.export.verify import generate_check, prompt_ids

    tokenizer, model = loaded.tokenizer, loaded.model
    words = tokenizer("Paris is nice", add_special_tokens=False)["input_ids"]
    for call in (
        lambda: sample_answer(model, tokenizer, {"sample_prompt": "Capital of France?"})["answer"],
        lambda: generate_check(model, tokenizer, prompt_ids(tokenizer)),
    ):
        script = _Script(model, [[*words, _im_end(tokenizer), *words]])
        try:
            assert call() == "Paris is nice"
        finally:
            script.handle.remove()
        assert script.steps == len(words) + 1
