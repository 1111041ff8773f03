"""HumanEval pass@1 after training on CodeFeedback: the study's code-generation protocol.

Data. Training: the first ``train_samples`` (100,000) rows of ``m-a-p/CodeFeedback-Filtered-
Instruction`` (fields ``query``, ``answer``). Evaluation: the 164 problems of
``openai/openai_humaneval`` (``task_id``, ``prompt``, ``canonical_solution``, ``test``,
``entry_point``). Both come from the Hugging Face Hub through ``datasets``, or, with
``--set task.data_dir=DIR``, from JSON Lines files in the Hub's schemas (one row per line):

    DIR/humaneval.jsonl      the HumanEval problems
    DIR/codefeedback.jsonl   CodeFeedback rows (at least train_samples of them are used if present)

On a machine with network: ``datasets.load_dataset("openai/openai_humaneval", split="test")
.to_json("DIR/humaneval.jsonl")`` and the same for CodeFeedback's ``train`` split.

Splits. HumanEval has no validation split and the study reports HumanEval itself, so validation
and test are the *same* list (``data.test is data.validation``, as GLUE's tasks do): the sweep
selects on the study's number. A held-out slice of 164 problems would make both numbers noisier.

Prompts (option ``prompt``, as the math tasks): ``chat`` renders the query as a user turn with the
tokenizer's chat template and the answer as the assistant turn (ending with the template's own
end-of-turn tokens); ``alpaca`` is the Alpaca instruction prompt (answer + EOS); ``auto`` picks
``chat`` when the tokenizer has a chat template. Only the answer is supervised (labels -100 on
prompt and padding); too long, the prompt keeps its end and the answer its start (at least a
quarter of ``max_length``). Evaluation: the same format with the instruction
"Complete the following Python function" and the problem's code, and the response is *started*
with a fenced block holding the problem's prompt, so the model continues the function body. The
prompt's trailing whitespace is removed there (as the usual harnesses do): the model then writes
the newline and indentation itself; with a trailing newline in the input, small models tend to
close the block at once. The completion is that prompt + the body, cut at the first stop
sequence (Codex's ``\\ndef``, ``\\nclass``, ``\\nif __name__``, ``\\nprint(``, ``\\n#``, plus a
newline followed by the closing fence).

Metric. pass@1 averaged over ``samples`` completions per problem (the study: 8 evaluation runs):
the mean over problems of (completions that pass) / ``samples``, which is the unbiased pass@1
estimate. ``samples == 1`` is greedy decoding; otherwise nucleus sampling with ``temperature``
0.2 and ``top_p`` 0.95 (the Codex paper's pass@1 setting), seeded with ``seed`` (the global RNG
state is restored afterwards). A completion passes when ``completion + test +
check(entry_point)`` runs to its end in the sandbox (:mod:`lorasweep.tasks.sandbox`) within
``timeout`` seconds; ``workers`` sandboxes run at a time.

Budget (study): one epoch over the 100k rows at a global batch of 64 (16 x 4 accumulated), max
length 1024, bf16 autocast on CUDA (automatic), the study's NLG learning-rate grid; the rest as
the GSM8K task (TrainConfig's defaults).
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any, ClassVar

from .base import Task, TaskData, TaskError, TaskOptions, register_task
from .sandbox import SandboxLimits, run_many

__all__ = ["HumanEval", "STOP_SEQUENCES", "pass_at_1", "program", "truncate_body"]

HUMANEVAL_ID = "openai/openai_humaneval"
CODEFEEDBACK_ID = "m-a-p/CodeFeedback-Filtered-Instruction"
STOP_SEQUENCES = ("\ndef ", "\nclass ", "\nif __name__", "\nprint(", "\n#", "\n```")
CODE_LRS = (1e-6, 1e-5, 2e-5, 5e-5, 1e-4, 2e-4, 5e-4, 1e-3)
_PROBLEM_FIELDS = ("task_id", "prompt", "canonical_solution", "test", "entry_point")
_TRAIN_FIELDS = ("query", "answer")
_FILES = {"humaneval": "humaneval.jsonl", "codefeedback": "codefeedback.jsonl"}
_ALPACA = ("Below is an instruction that describes a task. "
           "Write a response that appropriately completes the request.\n\n"
           "### Instruction:\n{query}\n\n### Response:\n")
_EVAL_QUERY = "Complete the following Python function.\n\n```python\n{prompt}```"


# --------------------------------------------------------------------------- scoring (no torch)


def truncate_body(body: str, prompt: str = "\n") -> str:
    """The generated function body up to the first stop sequence; a stop sequence may start
    with the prompt's last newline (a body that opens with ``def`` or a closing fence)."""
    lead = "\n" if prompt.endswith("\n") else ""
    text = lead + body
    cut = min((i for i in (text.find(s) for s in STOP_SEQUENCES) if i >= 0), default=len(text))
    return text[len(lead):max(cut, len(lead))]


def program(problem: dict[str, Any], completion: str) -> str:
    """The program the sandbox runs: the completion (prompt + body), the tests, the check."""
    return f"{completion}\n\n{problem['test']}\n\ncheck({problem['entry_point']})\n"


def pass_at_1(problems: list[dict[str, Any]], completions: list[list[str]], timeout: float = 5.0,
              workers: int = 4) -> float:
    """Mean over problems of the share of their completions (prompt + body) that pass."""
    if not problems:
        raise ValueError("pass@1 of an empty set")
    if len(completions) != len(problems) or any(not c for c in completions):
        raise ValueError("pass@1 needs a non-empty list of completions for every problem")
    programs = [program(p, c) for p, cs in zip(problems, completions, strict=True) for c in cs]
    results = iter(run_many(programs, SandboxLimits(timeout=timeout), workers))
    shares = [sum(next(results).passed for _ in cs) / len(cs) for cs in completions]
    return sum(shares) / len(shares)


# --------------------------------------------------------------------------- the task


@dataclasses.dataclass
class HumanEvalOptions(TaskOptions):
    train_samples: int = 100_000  # CodeFeedback rows to train on (the first ones)
    samples: int = 8  # completions per problem; 1 = greedy
    temperature: float = 0.2
    top_p: float = 0.95
    max_new_tokens: int = 512
    seed: int = 0  # sampling seed of the evaluation
    timeout: float = 5.0  # seconds per completion in the sandbox
    workers: int | None = None  # sandboxes at a time; default min(8, CPUs)
    prompt: str = "auto"  # auto (chat if the tokenizer has a template) | alpaca | chat


def _read_jsonl(path: Path, fields: tuple[str, ...], limit: int | None = None) -> list[dict]:
    rows = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if limit is not None and len(rows) >= limit:
                break
            if not line.strip():
                continue
            try:
                raw = json.loads(line)
            except json.JSONDecodeError as err:
                raise TaskError(f"{path}:{number}: not JSON ({err.msg})") from None
            rows.append(_fields(raw, fields, f"{path}:{number}"))
    if not rows:
        raise TaskError(f"{path} has no rows")
    return rows


def _fields(raw: Any, fields: tuple[str, ...], where: str) -> dict[str, str]:
    missing = [f for f in fields if not isinstance(raw, dict) or f not in raw]
    if missing:
        raise TaskError(f"{where}: no field {missing[0]!r} (a row needs {', '.join(fields)})")
    return {f: str(raw[f]) for f in fields}


@register_task
class HumanEval(Task):
    """Code generation: train on CodeFeedback, score HumanEval pass@1 (see the module docstring)."""

    key = "humaneval"
    summary = "HumanEval pass@1 after CodeFeedback training (needs the Hub or task.data_dir)"
    metric = "pass@1"
    model_kind = "causal-lm"
    num_labels = 0
    default_model = "meta-llama/Llama-3.1-8B"
    worst_score = 0.0
    Options = HumanEvalOptions
    default_train: ClassVar[dict[str, Any]] = {
        "epochs": 1.0, "steps": None, "batch_size": 16, "grad_accum": 4, "max_length": 1024,
    }
    default_lrs = CODE_LRS

    def __init__(self, **options: Any):
        super().__init__(**options)
        o = self.options
        for name in ("train_samples", "samples", "max_new_tokens"):
            value = getattr(o, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise TaskError(f"task.{name} must be a positive integer, got {value!r}")
        if o.workers is not None and (not isinstance(o.workers, int) or o.workers <= 0):
            raise TaskError(f"task.workers must be a positive integer, got {o.workers!r}")
        if not isinstance(o.temperature, (int, float)) or o.temperature <= 0:
            raise TaskError(f"task.temperature must be positive, got {o.temperature!r}")
        if not isinstance(o.top_p, (int, float)) or not 0 < o.top_p <= 1:
            raise TaskError(f"task.top_p must be in (0, 1], got {o.top_p!r}")
        if not isinstance(o.timeout, (int, float)) or o.timeout <= 0:
            raise TaskError(f"task.timeout must be positive seconds, got {o.timeout!r}")
        if o.prompt not in ("auto", "alpaca", "chat"):
            raise TaskError(f"task.prompt must be auto, alpaca or chat, got {o.prompt!r}")

    # ------------------------------------------------------------------ data

    def _hint(self) -> str:
        return (f"put {HUMANEVAL_ID} (its test split) in DIR/{_FILES['humaneval']} and "
                f"{CODEFEEDBACK_ID} (its train split) in DIR/{_FILES['codefeedback']}, as JSON "
                "Lines in the Hub's schemas, and pass --set task.data_dir=DIR")

    def check_available(self) -> None:
        if self.options.data_dir is None:
            return  # the Hub (or its local cache): only load() can tell
        root = Path(self.options.data_dir).expanduser()
        missing = [str(root / f) for f in _FILES.values() if not (root / f).is_file()]
        if missing:
            raise TaskError(f"{self.key}: missing {' and '.join(missing)}: {self._hint()}")

    def _load_hub(self) -> tuple[list[dict], list[dict]]:
        try:
            import datasets

            problems = datasets.load_dataset(HUMANEVAL_ID, split="test")
            train = datasets.load_dataset(CODEFEEDBACK_ID, split="train")
            train = train.select(range(min(self.options.train_samples, len(train))))
        except Exception as err:  # offline, hub down, no cache: all end here with the fix
            reason = (str(err).splitlines() or [type(err).__name__])[0]
            raise TaskError(f"{self.key}: cannot load its data from the Hugging Face Hub "
                            f"({reason}); without network, {self._hint()}") from None
        return ([_fields(r, _PROBLEM_FIELDS, HUMANEVAL_ID) for r in problems],
                [_fields(r, _TRAIN_FIELDS, CODEFEEDBACK_ID) for r in train])

    def load(self) -> TaskData:
        if self.options.data_dir is None:
            problems, train = self._load_hub()
        else:
            self.check_available()
            root = Path(self.options.data_dir).expanduser()
            problems = _read_jsonl(root / _FILES["humaneval"], _PROBLEM_FIELDS)
            train = _read_jsonl(root / _FILES["codefeedback"], _TRAIN_FIELDS,
                                self.options.train_samples)
        problems = self.limited(problems)
        return TaskData(train=train, validation=problems, test=problems)

    def length(self, example: dict[str, Any]) -> int:
        return len(example.get("query", example.get("prompt", ""))) + len(example.get("answer", ""))

    # ------------------------------------------------------------------ prompts

    def _chat(self, tokenizer: Any) -> bool:
        has_template = bool(getattr(tokenizer, "chat_template", None))
        if self.options.prompt == "chat" and not has_template:
            raise TaskError("task.prompt=chat needs a tokenizer with a chat template: use "
                            "task.prompt=alpaca (or auto) for a base model")
        return has_template if self.options.prompt == "auto" else self.options.prompt == "chat"

    def _prompt(self, tokenizer: Any, query: str, chat: bool) -> str:
        if chat:
            return tokenizer.apply_chat_template([{"role": "user", "content": query}],
                                                 tokenize=False, add_generation_prompt=True)
        return _ALPACA.format(query=query)

    def _answer(self, tokenizer: Any, query: str, answer: str, prompt: str, chat: bool) -> str:
        """The supervised text: the answer and how the turn ends (template tokens, or EOS)."""
        if chat:
            turns = [{"role": "user", "content": query}, {"role": "assistant", "content": answer}]
            full = tokenizer.apply_chat_template(turns, tokenize=False)
            if full.startswith(prompt):
                return full[len(prompt):]
        return answer + (tokenizer.eos_token or "")

    def eval_prompt(self, tokenizer: Any, problem: dict[str, Any]) -> str:
        """What the model continues: the instruction, then a code block opened with the prompt."""
        chat = self._chat(tokenizer)
        query = _EVAL_QUERY.format(prompt=problem["prompt"])
        return self._prompt(tokenizer, query, chat) + "```python\n" + problem["prompt"].rstrip()

    # ------------------------------------------------------------------ model io

    def collate(self, tokenizer: Any, examples: list[dict[str, Any]], max_length: int) -> dict:
        import torch

        chat = self._chat(tokenizer)
        texts = [self._prompt(tokenizer, e["query"], chat) for e in examples]
        prompts = tokenizer(texts, add_special_tokens=not chat)["input_ids"]  # a template has BOS
        answers = tokenizer([self._answer(tokenizer, e["query"], e["answer"], t, chat)
                             for e, t in zip(examples, texts, strict=True)],
                            add_special_tokens=False)["input_ids"]
        rows = []
        for prompt, answer in zip(prompts, answers, strict=True):
            if len(prompt) + len(answer) > max_length:
                # Keep the answer's start (a quarter of the budget at least) and the prompt's end
                # (the question and the assistant header): a batch always has supervised tokens.
                keep = max(max_length - len(prompt), min(len(answer), max_length // 4))
                answer = answer[:keep]
                prompt = prompt[len(prompt) - (max_length - len(answer)):]
            rows.append((prompt, answer))
        width = max(len(p) + len(a) for p, a in rows)
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        input_ids = torch.full((len(rows), width), pad, dtype=torch.long)
        labels = torch.full((len(rows), width), -100, dtype=torch.long)
        attention = torch.zeros((len(rows), width), dtype=torch.long)
        for i, (prompt, answer) in enumerate(rows):  # right padding: positions start at 0
            n = len(prompt) + len(answer)
            input_ids[i, :n] = torch.tensor(prompt + answer)
            labels[i, len(prompt):n] = torch.tensor(answer)
            attention[i, :n] = 1
        return {"input_ids": input_ids, "attention_mask": attention, "labels": labels}

    def generate(self, model: Any, tokenizer: Any, problems: list[dict[str, Any]],
                 batch_size: int, autocast: Any) -> list[list[str]]:
        """``samples`` completions (prompt without trailing whitespace + truncated body) per
        problem, in the problems' order."""
        import torch
        from transformers import GenerationConfig

        o = self.options
        device = next(model.parameters()).device
        chat = self._chat(tokenizer)
        jobs = [i for i in range(len(problems)) for _ in range(o.samples)]
        texts = {i: self.eval_prompt(tokenizer, problems[i]) for i in set(jobs)}
        jobs.sort(key=lambda i: len(texts[i]))  # similar lengths together: less padding
        eos = model.generation_config.eos_token_id
        eos = [eos] if isinstance(eos, int) else list(eos or [])
        config = GenerationConfig(
            max_new_tokens=o.max_new_tokens, do_sample=o.samples > 1,
            temperature=o.temperature if o.samples > 1 else None,
            top_p=o.top_p if o.samples > 1 else None, top_k=None,
            eos_token_id=sorted({*eos, tokenizer.eos_token_id}),
            pad_token_id=tokenizer.pad_token_id, stop_strings=list(STOP_SEQUENCES),
        )
        bodies: dict[int, list[str]] = {i: [] for i in range(len(problems))}
        was_training, side = model.training, tokenizer.padding_side
        model.eval()
        tokenizer.padding_side = "left"  # generation continues from the last prompt token
        devices = [device.index or 0] if device.type == "cuda" else []
        try:
            with torch.random.fork_rng(devices=devices), torch.no_grad():
                torch.manual_seed(o.seed)
                for start in range(0, len(jobs), batch_size):
                    chunk = jobs[start:start + batch_size]
                    batch = tokenizer([texts[i] for i in chunk], add_special_tokens=not chat,
                                      padding=True, return_tensors="pt").to(device)
                    with autocast():
                        out = model.generate(**batch, generation_config=config,
                                             tokenizer=tokenizer)
                    new = out[:, batch["input_ids"].shape[1]:]
                    for i, text in zip(chunk, tokenizer.batch_decode(new, skip_special_tokens=True),
                                       strict=True):
                        prompt = problems[i]["prompt"].rstrip()
                        bodies[i].append(prompt + truncate_body(text, prompt))
        finally:
            model.train(was_training)
            tokenizer.padding_side = side
        return [bodies[i] for i in range(len(problems))]

    def evaluate(self, model: Any, tokenizer: Any, examples: list[dict[str, Any]],
                 batch_size: int, max_length: int, autocast: Any) -> float:
        """pass@1 over ``examples``; ``max_length`` bounds training only (prompts are short)."""
        completions = self.generate(model, tokenizer, examples, batch_size, autocast)
        workers = self.options.workers or min(8, os.cpu_count() or 1)
        return pass_at_1(examples, completions, self.options.timeout, workers)
