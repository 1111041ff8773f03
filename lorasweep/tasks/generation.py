"""The one base of instruction-tuned causal-LM tasks (math, code): prompts, collation, generation.

A task of this kind has examples that become an *instruction* (the user's query) and a *target*
(what the model learns to write). It only says what its data, answer format and metric are
(:meth:`GenerationTask.instruction`, :meth:`~GenerationTask.target`,
:meth:`~GenerationTask.generation_prompt`, :meth:`~GenerationTask.answer_end`,
:meth:`~GenerationTask.score`); everything else lives here, once:

- **Prompt style** (option ``prompt``): ``alpaca`` is the Alpaca instruction prompt (for base
  models), followed by the task's :attr:`~GenerationTask.alpaca_lead`; ``chat`` renders the
  instruction as a user turn with the tokenizer's chat template (instruct models); ``auto`` picks
  ``chat`` when the tokenizer has a chat template.
- **Encoding**: prompt tokens, then target tokens that end the turn the way the model should stop
  (the chat template's own end-of-turn tokens, or EOS). The loss is on the target only.
- **Training collation**: right-padded rows, labels -100 on prompt and padding. Too long, the
  prompt loses tokens from its start (down to half of ``max_length``), then the target loses its
  end: the loss keeps as much of the answer as possible.
- **Generation** (:mod:`.decode`): left-padded, length-sorted batches, KV-cached, greedy (or
  seeded nucleus sampling), each sequence stopping at EOS / end of turn or as soon as its text
  holds a complete answer (:meth:`~GenerationTask.answer_end`), never running on to
  ``max_new_tokens`` when its answer is written.
- **Data files**: JSON Lines (or one JSON array) under ``task.data_dir`` (``--data-dir``), or the
  Hugging Face Hub through ``datasets``, with one error that names the files to put where.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, ClassVar

from ._hub import hub_errors
from .base import Task, TaskError, TaskOptions

__all__ = [
    "ALPACA_PROMPT",
    "GenerationOptions",
    "TemplateRewrites",
    "chat_segments",
    "GenerationTask",
    "hub_rows",
    "hub_usable",
    "prompt_style",
    "read_rows",
    "require_positive",
    "row_fields",
]

#: The Alpaca instruction prompt; a task appends its :attr:`GenerationTask.alpaca_lead`.
ALPACA_PROMPT = (
    "Below is an instruction that describes a task. "
    "Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{query}\n\n### Response:"
)
_PROMPTS = ("auto", "alpaca", "chat")
IGNORE = -100  # the label of tokens that carry no loss (prompt, padding)


@dataclasses.dataclass
class GenerationOptions(TaskOptions):
    prompt: str = "auto"  # auto | alpaca | chat
    max_new_tokens: int = 256  # generation budget per evaluated prompt
    eval_batch_size: int | None = None  # prompts generated together (default: the batch size)


def require_positive(value: Any, name: str, example: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise TaskError(f"task.{name} must be a positive integer, got {value!r} "
                        f"(e.g. --set task.{name}={example})")


def require_choice(value: Any, choices: tuple, name: str) -> None:
    """A task option that must be one of ``choices`` (the first is the example given)."""
    if value not in choices:
        raise TaskError(f"task.{name} must be one of {', '.join(map(str, choices))}, got "
                        f"{value!r} (e.g. --set task.{name}={choices[0]})")


def prompt_style(tokenizer: Any, prompt: str) -> str:
    """``alpaca`` or ``chat``: what ``prompt`` (auto | alpaca | chat) means for ``tokenizer``."""
    has_template = bool(getattr(tokenizer, "chat_template", None))
    if prompt == "auto":
        return "chat" if has_template else "alpaca"
    if prompt == "chat" and not has_template:
        raise TaskError("task.prompt=chat needs a tokenizer with a chat template: use "
                        "task.prompt=alpaca (or auto) for a base model")
    return prompt


class GenerationTask(Task):
    """An instruction-tuning task scored on generated text (see the module docstring)."""

    model_kind = "causal-lm"
    num_labels = 0  # no classification head: the causal LM's own vocabulary
    worst_score = 0.0
    Options = GenerationOptions
    #: What follows "### Response:" in the Alpaca prompt, and what separates it from the target.
    alpaca_lead: ClassVar[str] = "\n"
    alpaca_gap: ClassVar[str] = ""

    def __init__(self, **options: Any):
        super().__init__(**options)
        require_choice(self.options.prompt, tuple(_PROMPTS), "prompt")
        require_positive(self.options.max_new_tokens, "max_new_tokens", 256)
        if self.options.eval_batch_size is not None:
            require_positive(self.options.eval_batch_size, "eval_batch_size", 32)

    # ------------------------------------------------------------------ what a task says

    def instruction(self, example: dict[str, Any]) -> str:
        """The user's query of a training example."""
        return example["question"]

    def target(self, example: dict[str, Any]) -> str:
        """What the model learns to write for a training example."""
        return example["answer"]

    def generation_prompt(self, example: dict[str, Any]) -> tuple[str, str]:
        """The query of an evaluated example and the start of the response (given, not generated)."""
        return self.instruction(example), ""

    def answer_end(self, text: str) -> int | None:
        """Where a complete answer ends in generated ``text`` (the rest is cut), or None while it
        is not complete: generation of that sequence stops at the first complete answer."""
        return None

    def score(self, examples: list[dict[str, Any]], texts: list[list[str]]) -> float:
        """The metric from the generated texts (``samples`` per example, answers already cut)."""
        raise NotImplementedError

    def length(self, example: dict[str, Any]) -> int:
        return len(self.instruction(example)) + len(self.target(example))

    # ------------------------------------------------------------------ tokens

    def _prompt_text(self, tokenizer: Any, query: str) -> tuple[str, bool]:
        """The prompt text and whether it already holds the special tokens (a chat template)."""
        if prompt_style(tokenizer, self.options.prompt) == "alpaca":
            return ALPACA_PROMPT.format(query=query) + self.alpaca_lead, False
        turn = [{"role": "user", "content": query}]
        return tokenizer.apply_chat_template(turn, tokenize=False, add_generation_prompt=True), True

    def encode(self, tokenizer: Any, query: str, answer: str | None = None,
               response_start: str = "") -> tuple[list[int], list[int]]:
        """Prompt tokens (ending with ``response_start``) and the answer's tokens; the answer
        ends the turn the way the model should stop (the template's end-of-turn, or EOS)."""
        text, templated = self._prompt_text(tokenizer, query)
        prompt = tokenizer(text + response_start, add_special_tokens=not templated)["input_ids"]
        if answer is None:
            return prompt, []
        eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
        if not templated:
            return prompt, tokenizer(self.alpaca_gap + answer,
                                     add_special_tokens=False)["input_ids"] + eos
        turns = [{"role": "user", "content": query}, {"role": "assistant", "content": answer}]
        try:  # the template's own end-of-turn tokens follow the answer
            (_, (tail, _)) = chat_segments(tokenizer, turns, [1])
        except TemplateRewrites:
            return prompt, tokenizer(answer, add_special_tokens=False)["input_ids"] + eos
        return prompt, tokenizer(tail, add_special_tokens=False)["input_ids"]

    @staticmethod
    def pad_id(tokenizer: Any) -> int:
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        if pad is None:
            raise TaskError("the tokenizer has neither a pad nor an eos token")
        return pad

    def collate(self, tokenizer: Any, examples: list[dict[str, Any]], max_length: int) -> dict:
        """Prompt + target, right-padded; labels are -100 on prompt and padding tokens."""
        import torch

        rows: list[tuple[list[int], list[int]]] = []
        for example in examples:
            prompt, answer = self.encode(tokenizer, self.instruction(example), self.target(example))
            excess = len(prompt) + len(answer) - max_length
            if excess > 0:
                keep = min(len(prompt), max_length // 2)
                prompt = prompt[min(excess, len(prompt) - keep):]
                answer = answer[: max_length - len(prompt)]
            rows.append((prompt, answer))
        width = max(len(p) + len(a) for p, a in rows)
        pad = self.pad_id(tokenizer)
        input_ids, attention, labels = [], [], []
        for prompt, answer in rows:
            fill = width - len(prompt) - len(answer)
            input_ids.append(prompt + answer + [pad] * fill)
            attention.append([1] * (len(prompt) + len(answer)) + [0] * fill)
            labels.append([IGNORE] * len(prompt) + answer + [IGNORE] * fill)
        return {"input_ids": torch.tensor(input_ids), "attention_mask": torch.tensor(attention),
                "labels": torch.tensor(labels)}

    # ------------------------------------------------------------------ generation

    def generate(self, model: Any, tokenizer: Any, examples: list[dict[str, Any]],
                 batch_size: int, max_length: int, autocast: Any, samples: int = 1,
                 sampling: tuple[float, float, int] | None = None) -> list[list[str]]:
        """``samples`` completions per example, in the examples' order: the response start, then
        the generated text cut where its answer ends (:meth:`answer_end`).

        Prompts longer than ``max_length`` keep their last tokens. ``sampling`` is
        ``(temperature, top_p, seed)`` for nucleus sampling (a private generator: the global
        RNG is untouched); None is greedy decoding.
        """
        from .decode import decode

        prompts, starts = [], []
        for example in examples:
            query, start = self.generation_prompt(example)
            prompts.append(self.encode(tokenizer, query, None, start)[0][-max_length:])
            starts.append(start)
        jobs = [i for i in range(len(examples)) for _ in range(samples)]
        eos = {tokenizer.eos_token_id, *_as_list(model.generation_config.eos_token_id)}
        eos.discard(None)
        texts = decode(model, tokenizer, [prompts[i] for i in jobs], self.options.max_new_tokens,
                       batch_size, self.pad_id(tokenizer), eos, self.answer_end, autocast,
                       sampling)
        out: list[list[str]] = [[] for _ in examples]
        for i, text in zip(jobs, texts, strict=True):
            out[i].append(starts[i] + text)
        return out

    def evaluate(self, model: Any, tokenizer: Any, examples: list[dict[str, Any]],
                 batch_size: int, max_length: int, autocast: Any) -> float:
        batch_size = self.options.eval_batch_size or batch_size
        texts = self.generate(model, tokenizer, examples, batch_size, max_length, autocast)
        return self.score(examples, texts)


class TemplateRewrites(TaskError):
    """A chat template whose rendering of a conversation's first turns is not a prefix of its
    rendering of more turns (it rewrites earlier turns): ``turn`` is the 1-based turn."""

    def __init__(self, turn: int):
        super().__init__(f"the chat template rewrites earlier turns (turn {turn})")
        self.turn = turn


def chat_segments(tokenizer: Any, turns: list[dict[str, str]],
                  answers: list[int]) -> list[tuple[str, int | None]]:
    """The chat template's rendering of ``turns``, cut into ``(text, turn)`` pieces by prefix
    rendering: for each assistant turn ``i`` of ``answers`` (0-based, in order), the text up to
    ``turns[:i]`` with the generation prompt (``turn`` None), then what rendering ``turns[i]``
    adds (its content and the template's end of turn; ``turn`` i). The pieces join into the
    rendering of ``turns[:answers[-1] + 1]``. No ``{% generation %}`` tags are needed; a template
    for which a rendering is not a prefix of the next raises :class:`TemplateRewrites`."""
    render = tokenizer.apply_chat_template
    pieces: list[tuple[str, int | None]] = []
    done = ""
    for i in answers:
        clean = [{"role": t["role"], "content": t["content"]} for t in turns[: i + 1]]
        head = render(clean[:i], tokenize=False, add_generation_prompt=True)
        full = render(clean, tokenize=False)
        if not head.startswith(done) or not full.startswith(head):
            raise TemplateRewrites(i + 1)
        pieces += [(head[len(done):], None), (full[len(head):], i)]
        done = full
    return pieces


def _as_list(value: Any) -> list:
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple, set)) else [value]


# --------------------------------------------------------------------------- data files


def read_rows(path: Path, limit: int | None = None) -> list[dict[str, Any]]:
    """JSON Lines (at most ``limit`` rows), or one JSON array of objects."""
    with path.open(encoding="utf-8") as handle:
        head = handle.read(4096)
        handle.seek(0)
        if head.lstrip().startswith("["):
            try:
                rows = json.load(handle)
            except json.JSONDecodeError as err:
                raise TaskError(f"{path}: not JSON ({err.msg} at line {err.lineno})") from None
            rows = rows[:limit] if isinstance(rows, list) and limit is not None else rows
        else:
            rows = []
            for number, line in enumerate(handle, 1):
                if limit is not None and len(rows) >= limit:
                    break
                if line.strip():
                    try:
                        rows.append(json.loads(line))
                    except json.JSONDecodeError as err:
                        raise TaskError(f"{path}:{number}: not JSON ({err.msg})") from None
    if not isinstance(rows, list) or not rows or not all(isinstance(r, dict) for r in rows):
        raise TaskError(f"{path}: expected JSON objects, one per line (or one array of them)")
    return rows


def row_fields(row: dict[str, Any], names: tuple[str, ...], where: str) -> dict[str, str]:
    """The named text fields of a row (stripped of nothing), or an error naming the first missing."""
    missing = [n for n in names if not isinstance(row.get(n), str)]
    if missing:
        raise TaskError(f"{where}: no field {missing[0]!r} (a row needs the text fields "
                        f"{', '.join(names)})")
    return {n: row[n] for n in names}


def hub_rows(task: str, repo: str, *config: str, split: str, hint: str,
             limit: int | None = None) -> list[dict[str, Any]]:
    """A Hub dataset split as rows (the first ``limit``); offline or missing: one TaskError."""
    with hub_errors(task, repo, hint):
        import datasets

        data = datasets.load_dataset(repo, *config, split=split)
        if limit is not None:
            data = data.select(range(min(limit, len(data))))
        return list(data)


def hub_usable(repo: str) -> bool:
    """Reachable now, or in the local caches (a few seconds at most, offline included)."""
    try:
        from huggingface_hub import HfApi, constants

        cached = [Path(constants.HF_HUB_CACHE) / f"datasets--{repo.replace('/', '--')}"]
        try:
            import datasets

            cached.append(Path(datasets.config.HF_DATASETS_CACHE) / repo.replace("/", "___"))
        except ImportError:
            pass
        if any(p.is_dir() for p in cached):
            return True
        if constants.HF_HUB_OFFLINE:
            return False
        HfApi().dataset_info(repo, timeout=5)
        return True
    except Exception:  # network down, DNS failure, hub error: not usable from here
        return False
