"""What ``sft`` scores: answer extraction (``task.extract``), lm-evaluation-harness's
normalisation, exact match, and the mean negative log-likelihood per answer token.

``task.extract`` is ``full`` (the whole text), ``last_line`` (its last non-empty line),
``last_number`` (its last number, written as :mod:`.math_answer` reads numbers),
``marker:####`` (what follows the last ``####`` on its line) or ``regex:PATTERN`` (group 1 of the
first match, or the whole match when the pattern has no group). Both the prediction and the
reference go through the same extraction and :func:`normalise` (strip, casefold, drop ``,`` and
``$`` and a final ``.``, collapse spaces: lm-eval's ``ignore_case`` and ``regexes_to_ignore``).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from .base import TaskError
from .math_answer import _NUMBER, normalise_number

__all__ = ["answer_end_of", "exact_match_rate", "extractor", "mean_nll", "normalise"]

_IGNORED = re.compile(r"[,$]")


def normalise(text: str) -> str:
    """lm-eval's exact-match normalisation: ``" $1,234. "`` -> ``"1234"``, case folded."""
    text = " ".join(_IGNORED.sub("", text).split()).casefold()
    return text[:-1].rstrip() if text.endswith(".") else text


def _last_line(text: str) -> str | None:
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else None


def _last_number(text: str) -> str | None:
    numbers = _NUMBER.findall(text)
    return normalise_number(numbers[-1]) if numbers else None


def extractor(spec: str) -> Callable[[str], str | None]:
    """The extraction function that ``task.extract=spec`` names (None: no answer found)."""
    spec = str(spec)
    if spec == "full":
        return lambda text: text
    if spec == "last_line":
        return _last_line
    if spec == "last_number":
        return _last_number
    kind, _, value = spec.partition(":")
    if kind == "marker" and value:
        def after_marker(text: str) -> str | None:
            at = text.rfind(value)
            return None if at < 0 else text[at + len(value):].split("\n", 1)[0]
        return after_marker
    if kind == "regex" and value:
        try:
            pattern = re.compile(value)
        except re.error as err:
            raise TaskError(f"task.extract={spec!r}: not a regular expression ({err})") from None

        def by_regex(text: str) -> str | None:
            found = pattern.search(text)
            return None if found is None else found.group(1 if pattern.groups else 0)
        return by_regex
    raise TaskError(f"task.extract={spec!r} is not one of full, last_line, last_number, "
                    "marker:TEXT, regex:PATTERN (e.g. --set task.extract=marker:####)")


def answer_end_of(spec: str) -> Callable[[str], int | None]:
    """Where generation may stop: after the marker's line for ``marker:``, else at the end of
    the turn (None: not before)."""
    kind, _, value = str(spec).partition(":")
    if kind != "marker":
        return lambda text: None
    written = re.compile(re.escape(value) + r"[^\n]*\S[^\n]*\n")
    return lambda text: (m.end() if (m := written.search(text)) else None)


def exact_match_rate(predictions: list[str], references: list[str], spec: str) -> float:
    """The share of predictions whose extracted, normalised answer equals the reference's."""
    if not references:
        raise TaskError("exact match of an empty split")
    extract = extractor(spec)
    hits = 0
    for pred, gold in zip(predictions, references, strict=True):
        want, got = extract(gold), extract(pred)
        hits += want is not None and got is not None and normalise(got) == normalise(want)
    return hits / len(references)


def mean_nll(model: Any, batches: Any, autocast: Any) -> float:
    """The mean negative log-likelihood (nats) per learned token (labels not -100) over
    ``batches`` of model inputs: the summed cross-entropy divided by the token count."""
    import torch
    import torch.nn.functional as F

    device = next(model.parameters()).device
    total, count = 0.0, 0
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for batch in batches:
                batch = {k: v.to(device) for k, v in batch.items()}
                labels = batch.pop("labels")
                with autocast():
                    logits = model(**batch).logits
                shifted = labels[:, 1:]
                total += F.cross_entropy(logits[:, :-1].float().flatten(0, 1),
                                         shifted.flatten(), ignore_index=-100,
                                         reduction="sum").item()
                count += int((shifted != -100).sum())
    finally:
        model.train(was_training)
    if count == 0:
        raise TaskError("no answer token to score: every evaluated row lost its answer")
    return total / count
