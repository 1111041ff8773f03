"""Math word problems as generation tasks: prompt, collation and exact-match evaluation.

Examples are ``{"question": str, "answer": str}``: ``answer`` is the full worked solution the
model learns to write, ending in a marked final answer (``#### 72`` or ``The answer is: 72``).

Prompt (option ``prompt``): ``alpaca`` is MetaMath's instruction prompt for base models (the one
its GSM8K evaluation uses, ending in "Let's think step by step."); ``chat`` renders the question
as a user turn with the tokenizer's chat template (instruct models); ``auto`` picks ``chat`` when
the tokenizer has a chat template. Training sees prompt + solution (+ end of turn / eos) with the
loss on the solution tokens only; evaluation greedily generates from the prompt and compares
the final answers (:mod:`.math_answer`). Other options: ``max_new_tokens`` (generation budget)
and ``eval_batch_size`` (prompts generated together; default: the training micro-batch size; on a
CPU a larger one is much faster, as decoding a few more rows costs little).
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

from .base import Task, TaskError, TaskOptions
from .math_answer import accuracy_of_texts

__all__ = ["ALPACA_PROMPT", "MathOptions", "MathTask", "prompt_style", "require_positive"]

ALPACA_PROMPT = (
    "Below is an instruction that describes a task. "
    "Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{query}\n\n### Response: Let's think step by step."
)
_PROMPTS = ("auto", "alpaca", "chat")
_IGNORE = -100  # label of tokens that carry no loss (prompt, padding)


@dataclasses.dataclass
class MathOptions(TaskOptions):
    prompt: str = "auto"  # auto | alpaca | chat
    max_new_tokens: int = 256  # generation budget per evaluated problem
    eval_batch_size: int | None = None  # prompts generated together (default: the batch size)


def prompt_style(tokenizer: Any, prompt: str) -> str:
    """``alpaca`` or ``chat``: what ``prompt`` (auto | alpaca | chat) means for ``tokenizer``."""
    has_template = bool(getattr(tokenizer, "chat_template", None))
    if prompt == "auto":
        return "chat" if has_template else "alpaca"
    if prompt == "chat" and not has_template:
        raise TaskError("task.prompt=chat needs a tokenizer with a chat template: use "
                        "task.prompt=alpaca (or auto) for a base model")
    return prompt


class MathTask(Task):
    """A math word-problem task: generation, metric exact match of the final answer."""

    metric = "exact_match"
    model_kind = "causal-lm"
    num_labels = 0  # no classification head: the causal LM's own vocabulary
    worst_score = 0.0
    Options = MathOptions

    def __init__(self, **options: Any):
        super().__init__(**options)
        if self.options.prompt not in _PROMPTS:
            raise TaskError(f"task.prompt must be one of {', '.join(_PROMPTS)}, "
                            f"got {self.options.prompt!r}")
        require_positive(self.options.max_new_tokens, "max_new_tokens", 256)
        if self.options.eval_batch_size is not None:
            require_positive(self.options.eval_batch_size, "eval_batch_size", 32)

    def length(self, example: dict[str, Any]) -> int:
        return len(example["question"]) + len(example["answer"])

    # ------------------------------------------------------------------ tokens

    def _prompt_ids(self, tokenizer: Any, question: str) -> list[int]:
        return self._encode(tokenizer, question, None)[0]

    def _encode(self, tokenizer: Any, question: str,
                answer: str | None) -> tuple[list[int], list[int]]:
        """Prompt tokens and solution tokens; the solution ends the turn the way the model
        should stop (the chat template's end-of-turn tokens, or eos)."""
        eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
        if prompt_style(tokenizer, self.options.prompt) == "alpaca":
            prompt = tokenizer(ALPACA_PROMPT.format(query=question))["input_ids"]
            if answer is None:
                return prompt, []
            return prompt, tokenizer(" " + answer, add_special_tokens=False)["input_ids"] + eos
        user = [{"role": "user", "content": question}]
        text = tokenizer.apply_chat_template(user, tokenize=False, add_generation_prompt=True)
        prompt = tokenizer(text, add_special_tokens=False)["input_ids"]  # the template has BOS
        if answer is None:
            return prompt, []
        full = tokenizer.apply_chat_template(
            [*user, {"role": "assistant", "content": answer}], tokenize=False
        )
        if full.startswith(text):  # the template's own end-of-turn tokens follow the answer
            return prompt, tokenizer(full[len(text):], add_special_tokens=False)["input_ids"]
        return prompt, tokenizer(answer, add_special_tokens=False)["input_ids"] + eos

    @staticmethod
    def _pad_id(tokenizer: Any) -> int:
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        if pad is None:
            raise TaskError("the tokenizer has neither a pad nor an eos token")
        return pad

    def collate(self, tokenizer: Any, examples: list[dict[str, Any]], max_length: int) -> dict:
        """Prompt + solution, right-padded; labels are -100 on prompt and padding tokens.

        Too long: the prompt loses tokens from its start (down to half of ``max_length``), then
        the solution loses its end, so the loss keeps as much of the solution as possible.
        """
        import torch

        rows: list[tuple[list[int], list[int]]] = []
        for example in examples:
            prompt, answer = self._encode(tokenizer, example["question"], example["answer"])
            excess = len(prompt) + len(answer) - max_length
            if excess > 0:
                keep = min(len(prompt), max_length // 2)
                prompt = prompt[min(excess, len(prompt) - keep):]
                answer = answer[: max_length - len(prompt)]
            rows.append((prompt, answer))
        width = max(len(p) + len(a) for p, a in rows)
        pad = self._pad_id(tokenizer)
        input_ids, attention, labels = [], [], []
        for prompt, answer in rows:
            fill = width - len(prompt) - len(answer)
            input_ids.append(prompt + answer + [pad] * fill)
            attention.append([1] * (len(prompt) + len(answer)) + [0] * fill)
            labels.append([_IGNORE] * len(prompt) + answer + [_IGNORE] * fill)
        return {
            "input_ids": torch.tensor(input_ids),
            "attention_mask": torch.tensor(attention),
            "labels": torch.tensor(labels),
        }

    # ------------------------------------------------------------------ evaluation

    def generate(self, model: Any, tokenizer: Any, examples: list[dict[str, Any]],
                 batch_size: int, max_length: int, autocast: Any) -> list[str]:
        """Greedy completions (new text only) of the examples' prompts, in their order.

        Prompts are left-padded (generation continues from each prompt's last token) and, when
        longer than ``max_length``, keep their last tokens. A sequence stops at eos / end of turn,
        after ``max_new_tokens``, or once it has written a complete marked final answer
        (``#### 72`` or ``The answer is 72`` then a line or sentence end): rambling models then
        cost no more than they need, and their first stated answer is the one scored.
        """
        import torch

        device = next(model.parameters()).device
        pad = self._pad_id(tokenizer)
        stop = {tokenizer.eos_token_id, *_as_list(model.generation_config.eos_token_id)}
        stop.discard(None)
        prompts = [self._prompt_ids(tokenizer, e["question"])[-max_length:] for e in examples]
        order = sorted(range(len(examples)), key=lambda i: len(prompts[i]))  # less padding
        texts: list[str] = [""] * len(examples)
        was_training = model.training
        model.eval()
        try:
            for start in range(0, len(order), batch_size):
                chunk = order[start : start + batch_size]
                width = max(len(prompts[i]) for i in chunk)
                ids = [[pad] * (width - len(prompts[i])) + prompts[i] for i in chunk]
                mask = [[0] * (width - len(prompts[i])) + [1] * len(prompts[i]) for i in chunk]
                with torch.no_grad(), autocast():
                    out = model.generate(
                        input_ids=torch.tensor(ids, device=device),
                        attention_mask=torch.tensor(mask, device=device),
                        max_new_tokens=self.options.max_new_tokens, do_sample=False,
                        temperature=None, top_p=None, top_k=None,
                        pad_token_id=pad, eos_token_id=sorted(stop) or None,
                        stopping_criteria=_answer_written(tokenizer, width),
                    )
                decoded = tokenizer.batch_decode(out[:, width:], skip_special_tokens=True)
                for i, text in zip(chunk, decoded, strict=True):
                    texts[i] = text
        finally:
            model.train(was_training)
        return texts

    def evaluate(self, model: Any, tokenizer: Any, examples: list[dict[str, Any]],
                 batch_size: int, max_length: int, autocast: Any) -> float:
        """Exact match of the greedy solutions' final answers, in [0, 1]."""
        batch_size = self.options.eval_batch_size or batch_size
        texts = self.generate(model, tokenizer, examples, batch_size, max_length, autocast)
        return accuracy_of_texts(texts, [e["answer"] for e in examples])


# A marked final answer, complete: the number is followed by a line end or a sentence end.
_WRITTEN = re.compile(r"(?:####|answer is:?)\s*\$?\s*[-−]?[\d,]*\.?\d+\s*(?:\n|[.!?]\s)",
                      re.IGNORECASE)
_TAIL_TOKENS = 32  # enough to hold "The answer is: $1,234.50.\n"


def _answer_written(tokenizer: Any, width: int) -> Any:
    """A stopping criterion: per sequence, whether its new text holds a complete final answer."""
    import torch
    from transformers import StoppingCriteria, StoppingCriteriaList

    class AnswerWritten(StoppingCriteria):
        def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
            new = input_ids[:, width:]
            tails = tokenizer.batch_decode(new[:, -_TAIL_TOKENS:], skip_special_tokens=True)
            return torch.tensor([bool(_WRITTEN.search(t)) for t in tails], device=input_ids.device)

    return StoppingCriteriaList([AnswerWritten()])


def _as_list(value: Any) -> list:
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple, set)) else [value]


def require_positive(value: Any, name: str, example: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise TaskError(f"task.{name} must be a positive integer, got {value!r} "
                        f"(e.g. --set task.{name}={example})")
