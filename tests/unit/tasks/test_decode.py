"""KV-cached batched decoding (tasks/decode.py) on a tiny random Llama with a character-level
tokenizer: it must produce what Hugging Face's own greedy ``generate`` produces, whatever the
batch, padding and order, and a row that stops early must not disturb the others."""

from __future__ import annotations

import contextlib

import pytest
import torch
from helpers import make_tiny_llama

from lorasweep.tasks import get_task
from lorasweep.tasks.decode import decode


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from lorasweep.train.model import load_model

    path = make_tiny_llama(tmp_path_factory.mktemp("tiny-llama-decode"))
    return load_model(str(path), get_task("arith"), seed=0)


def _prompts(tiny, n: int = 5) -> list[list[int]]:
    task = get_task("arith", prompt="alpaca")
    examples = get_task("arith").load().test[:n]
    return [task.encode(tiny.tokenizer, e["question"][: 20 + 9 * i])[0]
            for i, e in enumerate(examples)]  # different lengths: left padding matters


def _hf_greedy(tiny, prompt: list[int], new: int) -> str:
    out = tiny.model.generate(input_ids=torch.tensor([prompt]), max_new_tokens=new,
                              do_sample=False, eos_token_id=None, pad_token_id=0,
                              temperature=None, top_p=None, top_k=None)
    return tiny.tokenizer.decode(out[0, len(prompt):], skip_special_tokens=True)


def test_greedy_decoding_equals_transformers_generate(tiny):
    prompts = _prompts(tiny)
    ours = decode(tiny.model, tiny.tokenizer, prompts, 12, 3, 0, set(), lambda t: None,
                  contextlib.nullcontext)
    assert ours == [_hf_greedy(tiny, p, 12) for p in prompts]
    assert all(len(t) == 12 for t in ours)  # one character per token, nothing stopped them


def test_rows_stop_at_their_answer_end_without_disturbing_the_others(tiny):
    prompts = _prompts(tiny, 6)
    full = decode(tiny.model, tiny.tokenizer, prompts, 16, 6, 0, set(), lambda t: None,
                  contextlib.nullcontext)
    stops = {i: 3 + 2 * i for i in range(6)}  # every row ends at its own length
    calls: list[int] = []

    def answer_end(text: str) -> int | None:
        calls.append(len(text))
        for length in stops.values():
            if text in {f[:length] for f in full} and len(text) == length:
                return length - 1  # the answer is cut before its last character
        return None

    cut = decode(tiny.model, tiny.tokenizer, prompts, 16, 6, 0, set(), answer_end,
                 contextlib.nullcontext)
    for text, whole in zip(cut, full, strict=True):
        assert whole.startswith(text) and len(text) < 16
    # finished rows left the batch: far fewer checks than 6 rows x 16 steps
    assert len(calls) < 6 * 16 * 0.75


def test_an_end_token_stops_its_row(tiny):
    prompts = _prompts(tiny, 3)
    full = decode(tiny.model, tiny.tokenizer, prompts, 10, 3, 0, set(), lambda t: None,
                  contextlib.nullcontext)
    first = tiny.tokenizer.convert_tokens_to_ids(full[0][4])  # row 0's fifth character
    stopped = decode(tiny.model, tiny.tokenizer, prompts, 10, 3, 0, {first}, lambda t: None,
                     contextlib.nullcontext)
    assert stopped[0] == full[0][: full[0].index(full[0][4])]
    for text, whole in zip(stopped, full, strict=True):
        assert whole.startswith(text)


def test_sampling_is_seeded_and_leaves_the_global_rng_alone(tiny):
    prompts = _prompts(tiny, 3)
    torch.manual_seed(1)
    expected = torch.rand(2)
    torch.manual_seed(1)
    runs = [decode(tiny.model, tiny.tokenizer, prompts * 2, 8, 4, 0, set(), lambda t: None,
                   contextlib.nullcontext, (1.0, 0.95, seed)) for seed in (3, 3, 4)]
    assert torch.equal(torch.rand(2), expected)
    assert runs[0] == runs[1] and runs[0] != runs[2]
    greedy = decode(tiny.model, tiny.tokenizer, prompts, 8, 4, 0, set(), lambda t: None,
                    contextlib.nullcontext, (1.0, 1e-9, 0))  # a nucleus of one token: argmax
    assert greedy == decode(tiny.model, tiny.tokenizer, prompts, 8, 4, 0, set(),
                            lambda t: None, contextlib.nullcontext)
