"""``sft``: your own instruction or chat data, a causal LM trained on the answers only.

``--dataset`` names the data (see :mod:`.datasource`); the rows are read as one of the formats of
:mod:`.sft_format` (``task.format``, ``task.fields``, ``task.roles``, ``task.system``).

- **Rendering** (``task.prompt``): ``chat`` renders every row, prompt-completion and alpaca
  included (a user turn and an assistant turn), with the tokenizer's chat template, so the same
  problems written in the three formats train on identical tokens; ``plain`` writes the prompt
  (alpaca rows: the Alpaca prompt) and the completion, then EOS, with no template (a base
  model); ``auto`` is ``chat`` when the tokenizer has a template. ``messages`` data needs one.
- **Loss mask** (``task.loss_on``): ``completion`` (the default: the answer of alpaca and
  prompt-completion rows, the last turn of messages), ``assistant`` (every assistant turn),
  ``last`` (the last assistant turn) or ``all`` (every token). The learned spans come from
  rendering prefixes (:func:`.generation.chat_segments`): no template tags are needed, and a
  template that rewrites earlier turns is an error that names the turn and ``task.loss_on=last``.
- **Length**: rows keep their start and are cut at ``max_length``; a row whose learned tokens
  are all cut away is dropped and counted, and more than 1% of such rows is an error naming the
  length that fits 99% of them. No packing: a step sees the rows it would see alone.
- **Metric** (``task.metric``): ``loss`` (the default: the mean negative log-likelihood per
  learned token on validation and test, minimized; its exp is the perplexity) or
  ``exact_match`` (greedy generation with the KV-cached decoder, scored as
  :mod:`.sft_metric` says: ``task.extract``, lm-eval's normalisation).

When the sweep is checked the task records in the study the data (absolute path, fingerprint,
split sizes), the tokenizer it rendered the rows with and the max length.
"""

from __future__ import annotations

import dataclasses
import math
import sys
from typing import Any

from .. import _phase as phase
from .base import Task, TaskData, TaskError, register_task
from .datasource import DataOptions, Source, check_fingerprint, load_source, pick_splits
from .generation import (
    ALPACA_PROMPT,
    IGNORE,
    GenerationOptions,
    GenerationTask,
    TemplateRewrites,
    chat_segments,
    require_choice,
    require_positive,
)
from .sft_format import FORMATS, parse_map, to_example
from .sft_metric import answer_end_of, exact_match_rate, extractor, mean_nll

__all__ = ["SftOptions", "SftTask", "render"]

_LOSS_ON = ("completion", "assistant", "last", "all")
_PROMPTS = ("auto", "chat", "plain")
_METRICS = ("loss", "exact_match")
_CUT_SHARE = 0.01  # above this share of rows whose answer max_length cuts away: an error


@dataclasses.dataclass
class SftOptions(DataOptions, GenerationOptions):
    format: str = "auto"  # auto | alpaca | prompt-completion | messages | text
    fields: Any = None  # canonical=column pairs (a string, or a mapping in a recipe)
    roles: Any = None  # name=role pairs (human=user,gpt=assistant)
    system: str | None = None  # a system turn for every row
    loss_on: str = "completion"  # completion | assistant | last | all
    metric: str = "loss"  # loss | exact_match
    extract: str = "full"  # full | last_line | last_number | marker:TEXT | regex:PATTERN
    validation_size: int | None = 200
    max_new_tokens: int = 128
    #: Set by the sweep (from --model and train.max_length) and recorded: what renders the rows.
    tokenizer: str | None = None
    gguf_file: str | None = None
    max_length: int | None = None


def _tokens(tokenizer: Any, text: str, special: bool = False) -> list[int]:
    return tokenizer(text, add_special_tokens=special)["input_ids"]


def _eos(tokenizer: Any) -> list[int]:
    return [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []


def _style(tokenizer: Any, prompt: str, fmt: str) -> str:
    has_template = bool(getattr(tokenizer, "chat_template", None))
    if prompt == "chat" or fmt == "messages" or (prompt == "auto" and has_template):
        if not has_template:
            raise TaskError(f"task.{'format=messages' if fmt == 'messages' else 'prompt=chat'} "
                            "needs a chat template, and the tokenizer has none: use an instruct "
                            "model, or prompt-completion data with task.prompt=plain")
        return "chat"
    return "plain"


def render(tokenizer: Any, example: dict[str, Any], prompt: str = "auto",
           loss_on: str = "completion", number: int = 0,
           context: bool = False) -> tuple[list[int], list[int]]:
    """``(input ids, labels)`` of one example (labels -100 where no loss is taken); ``context``:
    only the prompt of the last assistant turn (what generation continues from), labels empty."""
    if "text" in example:
        ids = _tokens(tokenizer, example["text"], special=True) + _eos(tokenizer)
        return (ids[:0], []) if context else (ids, list(ids))
    turns = example["turns"]
    if _style(tokenizer, prompt, example["format"]) == "plain":
        if len(turns) != 2 or turns[0]["role"] != "user":
            raise TaskError(f"row {number}: a conversation of {len(turns)} turns (or with a "
                            "system turn) needs a chat template: use an instruct model, or "
                            "task.prompt=chat")
        query, answer = turns[0]["content"], turns[1]["content"]
        head = ALPACA_PROMPT.format(query=query) + "\n" if example["format"] == "alpaca" else query
        ids = _tokens(tokenizer, head, special=True)
        if context:
            return ids, []
        tail = _tokens(tokenizer, answer) + _eos(tokenizer)
        labels = ids if loss_on == "all" else [IGNORE] * len(ids)
        return ids + tail, labels + tail
    last = max(i for i, t in enumerate(turns) if t["role"] == "assistant")
    if context:
        head = tokenizer.apply_chat_template(
            [{"role": t["role"], "content": t["content"]} for t in turns[:last]],
            tokenize=False, add_generation_prompt=True)
        return _tokens(tokenizer, head), []
    answers = {"completion": [i for i, t in enumerate(turns)
                              if t["role"] == "assistant" and t["completion"]],
               "last": [last]}.get(loss_on) or [
        i for i, t in enumerate(turns) if t["role"] == "assistant"]
    try:
        pieces = chat_segments(tokenizer, turns, answers)
    except TemplateRewrites as err:
        fix = ("use task.loss_on=last" if loss_on != "last" else
               "use prompt-completion data with task.prompt=plain")
        raise TaskError(f"row {number}: the chat template rewrites earlier turns (turn "
                        f"{err.turn}); {fix}") from None
    ids: list[int] = []
    labels: list[int] = []
    for text, turn in pieces:
        piece = _tokens(tokenizer, text)
        ids += piece
        labels += piece if (turn is not None or loss_on == "all") else [IGNORE] * len(piece)
    return ids, labels


@register_task
class SftTask(GenerationTask):
    """Your own instruction or chat data (see the module docstring)."""

    key = "sft"
    summary = "your own instruction / chat data, loss on the answers: --dataset FILE|FOLDER|HUB_ID"
    metric = "loss"
    default_model = "embedded:smollm2"
    default_train = {"steps": 24, "batch_size": 8, "max_length": 256}
    default_lrs = (1e-5, 1e-4, 1e-3, 3e-3, 1e-2, 3e-2)
    Options = SftOptions
    records_data = True

    def __init__(self, **options: Any):
        Task.__init__(self, **options)  # the base's prompt choices are not sft's (chat|plain)
        o = self.options
        require_choice(o.format, FORMATS, "format")
        require_choice(o.prompt, _PROMPTS, "prompt")
        require_choice(o.loss_on, _LOSS_ON, "loss_on")
        require_choice(o.metric, _METRICS, "metric")
        require_positive(o.max_new_tokens, "max_new_tokens", 128)
        if o.max_length is not None:
            require_positive(o.max_length, "max_length", 256)
        extractor(o.extract)  # a bad pattern fails here, before any data is read
        self.fields = parse_map(o.fields, "fields")
        self.roles = parse_map(o.roles, "roles")
        self.metric = o.metric
        self.answer_end = answer_end_of(o.extract)  # type: ignore[method-assign]
        self.dropped = 0

    # ------------------------------------------------------------------ the objective

    @property
    def metric_name(self) -> str:
        return self.metric

    @property
    def direction(self) -> str:
        return "minimize" if self.metric == "loss" else "maximize"

    def diverged_score(self, vocab_size: int | None) -> float:
        """What a diverged trial records: for the loss, a uniform predictor's (ln of the
        vocabulary size); for exact match, nothing right (0)."""
        if self.metric != "loss":
            return 0.0
        if not vocab_size or vocab_size < 2:
            raise TaskError("the loss of a diverged trial needs the model's vocabulary size")
        return math.log(vocab_size)

    def extra_metrics(self, validation: float, test: float) -> dict[str, float]:
        """What a trial records beside the metric: for the loss, the perplexity (its exp)."""
        if self.metric != "loss":
            return {}
        return {f"{split}_perplexity": math.exp(min(value, 700.0)) if math.isfinite(value)
                else math.nan for split, value in (("validation", validation), ("test", test))}

    # ------------------------------------------------------------------ data

    def bind_model(self, path: str, gguf: str | None, max_length: int) -> None:
        """The tokenizer (a folder or hub id, and a GGUF file) and max length the sweep trains
        with, unless the options name them: the rows are rendered and cut with them."""
        if self.options.tokenizer is None:
            from pathlib import Path

            local = Path(path).expanduser()  # a folder: absolute, for workers anywhere
            self.options.tokenizer = str(local.resolve()) if local.exists() else path
            self.options.gguf_file = gguf
        if self.options.max_length is None:
            self.options.max_length = max_length

    def check_available(self) -> None:
        if not (self.options.dataset or self.options.data_dir or self.options.data_files):
            raise TaskError("sft needs data: --dataset FILE_OR_FOLDER_OR_HUB_ID (csv, json, "
                            "jsonl, parquet; or a folder of train.* / validation.* / test.*)")

    def load_tokenizer(self) -> Any:
        from transformers import AutoTokenizer

        if self.options.tokenizer is None:
            raise TaskError("sft renders its rows with the model's tokenizer: run it through "
                            "lorasweep run / tasks --check, or set task.tokenizer=MODEL_FOLDER")
        kwargs = {"gguf_file": self.options.gguf_file} if self.options.gguf_file else {}
        import contextlib
        import io

        with contextlib.redirect_stderr(io.StringIO()):  # a GGUF file's progress bar
            tokenizer = AutoTokenizer.from_pretrained(self.options.tokenizer, **kwargs)
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        return tokenizer

    def _rows(self, source: Source) -> Source:
        o = self.options
        splits, number = {}, 0
        for name, rows in source.splits.items():
            out = []
            for row in rows:
                number += 1
                example = to_example(row, o.format, self.fields, self.roles, o.system, number,
                                     source.label)
                out.append({**example, "number": number})
            splits[name] = out
        return dataclasses.replace(source, splits=splits)

    def _fit(self, tokenizer: Any, splits: list[tuple[str, list[dict]]]) -> dict[str, list]:
        """Every row rendered once (a template or role error stops here, before training);
        rows whose learned tokens ``max_length`` cuts away are dropped and counted."""
        limit = self.options.max_length
        lengths, kept, total = [], {}, 0
        for name, rows in splits:
            kept[name] = []
            for row in rows:
                total += 1
                ids, labels = render(tokenizer, row, self.options.prompt, self.options.loss_on,
                                     row["number"])
                lengths.append(len(ids))
                if not any(label != IGNORE for label in labels[1:limit]):
                    continue  # no learned token survives the cut (the first predicts nothing)
                kept[name].append(row)
        self.dropped = total - sum(len(rows) for rows in kept.values())
        if self.dropped > _CUT_SHARE * total:
            fits = sorted(lengths)[min(len(lengths) - 1, math.ceil(0.99 * len(lengths)) - 1)]
            raise TaskError(f"{self.dropped} of {total} rows lose their whole answer at "
                            f"max_length={limit} (over 1%): use --set train.max_length={fits} "
                            "(99% of the rows fit)")
        if self.dropped and not self.options.fingerprint:
            print(f"{self.key}: dropped {self.dropped} of {total} rows whose answer "
                  f"max_length={limit} cuts away", file=sys.stderr)
        return kept

    def load(self) -> TaskData:
        self.check_available()
        source = load_source(self.options, self.key)
        check_fingerprint(source, self.options)
        source = self._rows(source)
        train, validation, test, self.validation_rule = pick_splits(
            source, self.options, stratum=lambda r: "", text=_prompt_key)
        if self.options.max_length is None:
            self.options.max_length = self.default_train["max_length"]
        tokenizer = self.load_tokenizer()
        self.style = _style(tokenizer, self.options.prompt, train[0]["format"])
        splits = [("train", train), ("validation", validation)] + (
            [] if test is validation else [("test", test)])
        kept = self._fit(tokenizer, splits)
        self.source, self.tokenizer = source, tokenizer
        self.sizes = {name: len(kept.get(name, kept["validation"]))
                      for name in ("train", "validation", "test")}
        scored = self.limited(kept["validation"])
        return TaskData(train=kept["train"], validation=scored,
                        test=scored if test is validation else self.limited(kept["test"]))

    def recorded_options(self) -> dict[str, Any]:
        recorded: dict[str, Any] = {
            "fingerprint": self.source.fingerprint,
            "split_sizes": ",".join(f"{k}={v}" for k, v in self.sizes.items()),
            "tokenizer": self.options.tokenizer, "gguf_file": self.options.gguf_file,
            "max_length": self.options.max_length}
        if self.source.dataset:
            recorded["dataset"] = self.source.dataset
        return recorded

    def show_row(self, example: dict[str, Any]) -> str:
        """A training row as the model sees it (after :meth:`load`), cut at the max length,
        newlines as ``\\n``, every learned span in ``[[...]]``: why a loss mask is what it is."""
        ids, labels = render(self.tokenizer, example, self.options.prompt, self.options.loss_on,
                             example.get("number", 0))
        limit = self.options.max_length or len(ids)
        runs: list[tuple[bool, list[int]]] = []
        for token, label in zip(ids[:limit], labels[:limit], strict=True):
            learned = label != IGNORE
            if runs and runs[-1][0] == learned:
                runs[-1][1].append(token)
            else:
                runs.append((learned, [token]))
        text = "".join(("[[{}]]" if learned else "{}").format(self.tokenizer.decode(run))
                       for learned, run in runs)
        cut = f" (cut at max_length={limit}: {len(ids)} tokens)" if len(ids) > limit else ""
        return text.replace("\n", "\\n") + cut

    def preview_notes(self) -> list[str]:
        """Lines ``tasks --check`` adds: the rendering, the mask and the rows dropped."""
        return [f"rendering: {self.style}; loss on: {self.options.loss_on} (learned tokens in "
                f"[[...]]); max_length {self.options.max_length}; dropped {self.dropped} rows "
                "whose answer the max length cuts away"]

    def length(self, example: dict[str, Any]) -> int:
        if "text" in example:
            return len(example["text"])
        return sum(len(t["content"]) for t in example["turns"])

    # ------------------------------------------------------------------ model io

    def encode(self, tokenizer: Any, query: Any, answer: str | None = None,
               response_start: str = "") -> tuple[list[int], list[int]]:
        """For generation: ``query`` is the example; its prompt's ids (the turns before its
        last answer, with the generation prompt)."""
        ids, _ = render(tokenizer, query, self.options.prompt, self.options.loss_on,
                        query.get("number", 0), context=True)
        return ids + (_tokens(tokenizer, response_start) if response_start else []), []

    def generation_prompt(self, example: dict[str, Any]) -> tuple[Any, str]:
        return example, ""

    def collate(self, tokenizer: Any, examples: list[dict[str, Any]], max_length: int) -> dict:
        """Rendered rows, cut at ``max_length`` (keeping their start), right-padded; labels
        -100 outside the learned spans and on padding. The max length the rows were checked
        with (recorded by the sweep) wins: no row kept by :meth:`load` loses its answer here."""
        import torch

        max_length = self.options.max_length or max_length

        rows = [render(tokenizer, e, self.options.prompt, self.options.loss_on,
                       e.get("number", 0)) for e in examples]
        rows = [(ids[:max_length], labels[:max_length]) for ids, labels in rows]
        width = max(len(ids) for ids, _ in rows)
        pad = self.pad_id(tokenizer)
        input_ids, attention, labels = [], [], []
        for ids, learned in rows:
            fill = width - len(ids)
            input_ids.append(ids + [pad] * fill)
            attention.append([1] * len(ids) + [0] * fill)
            labels.append(learned + [IGNORE] * fill)
        return {"input_ids": torch.tensor(input_ids), "attention_mask": torch.tensor(attention),
                "labels": torch.tensor(labels)}

    # ------------------------------------------------------------------ scoring

    def reference(self, example: dict[str, Any]) -> str:
        """The answer an exact match compares with: the last assistant turn (or the text)."""
        if "text" in example:
            return example["text"]
        return [t for t in example["turns"] if t["role"] == "assistant"][-1]["content"]

    def score(self, examples: list[dict[str, Any]], texts: list[list[str]]) -> float:
        return exact_match_rate([t[0] for t in texts], [self.reference(e) for e in examples],
                                self.options.extract)

    def evaluate(self, model: Any, tokenizer: Any, examples: list[dict[str, Any]],
                 batch_size: int, max_length: int, autocast: Any) -> float:
        if self.metric == "exact_match":
            return super().evaluate(model, tokenizer, examples, batch_size, max_length, autocast)
        size = self.options.eval_batch_size or batch_size

        def batches() -> Any:  # counted on the trial's bar: evaluating k/N
            done = 0
            phase.report("evaluating", done, len(examples))
            for chunk in self.batches(examples, size):
                yield self.collate(tokenizer, chunk, max_length)
                done += len(chunk)
                phase.report("evaluating", done, len(examples))

        return mean_nll(model, batches(), autocast)

    def evaluate_with_loss(self, model: Any, tokenizer: Any, examples: list[dict[str, Any]],
                           batch_size: int, max_length: int, autocast: Any) -> tuple[float, float]:
        score = self.evaluate(model, tokenizer, examples, batch_size, max_length, autocast)
        return score, (score if self.metric == "loss" else math.nan)


def _prompt_key(row: dict[str, Any]) -> str:
    """What makes two rows the same problem (duplicates of held-out rows leave train)."""
    if "text" in row:
        return row["text"]
    return "\x00".join(t["content"] for t in row["turns"] if not t["completion"])
