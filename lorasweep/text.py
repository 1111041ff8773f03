"""How lorasweep writes numbers and words for people: one form everywhere.

* Learning rates: ``format_lr(1e-4) == "1e-4"``, ``format_lr(2.5e-4) == "2.5e-4"``,
  ``format_lr(0.001) == "1e-3"``: a mantissa with at most six significant digits, trailing zeros
  dropped, then ``e`` and the exponent without padding or ``+``; exponent 0 prints the number.
* Counts: ``plural(1, "learning rate") == "1 learning rate"``, ``plural(6, ...) == "6 learning
  rates"``.
* Types in errors: ``kind_name(int) == "an integer"``, ``kind_name("float") == "a number"``:
  ``time_min must be an integer, got 'soon'``.
* Near misses: ``did_you_mean("lora_ga", keys) == " (did you mean 'lora-ga'?)"``, or ``""``.
* Text from users or registries printed through rich: :func:`plain` escapes it, so that brackets
  such as aurora's ``[tanh(...) + spline(Ax)]`` print as written instead of being read as markup.
"""

from __future__ import annotations

import math
from typing import Any

__all__ = ["did_you_mean", "format_lr", "format_lrs", "kind_name", "plain", "plural"]

_KIND_NAMES = {"int": "an integer", "float": "a number", "str": "a string", "bool": "true or false"}


def format_lr(lr: float) -> str:
    """A learning rate in the one short scientific form used in every output."""
    lr = float(lr)
    if lr == 0 or not math.isfinite(lr):
        return f"{lr:g}"
    mantissa, exponent = f"{lr:.5e}".split("e")
    mantissa = mantissa.rstrip("0").rstrip(".")
    power = int(exponent)
    return mantissa if power == 0 else f"{mantissa}e{power}"


def format_lrs(lrs: list[float]) -> str:
    """A grid as the CLI takes it: ``1e-5,1e-4,1e-3``."""
    return ",".join(format_lr(lr) for lr in lrs)


def plural(count: int, word: str, many: str | None = None) -> str:
    """``count`` and ``word``, the word in plural unless the count is exactly one."""
    return f"{count} {word if count == 1 else (many or word + 's')}"


def plain(value: Any) -> str:
    """``value`` as text that rich prints literally (markup characters escaped)."""
    from rich.markup import escape

    return escape(str(value))


def kind_name(kind: type | str) -> str:
    """What a value of type ``kind`` (or its name) is called in an error message."""
    name = kind if isinstance(kind, str) else getattr(kind, "__name__", str(kind))
    return _KIND_NAMES.get(name, f"a {name}")


def did_you_mean(key: Any, known: Any) -> str:
    """`` (did you mean 'KEY'?)`` for the known key closest to ``key`` (``_``/``-`` and case
    alike), or ``""`` when none is close: the tail of an "unknown key" error."""
    import difflib

    if not isinstance(key, str):
        return ""
    keys = [str(k) for k in known]
    wanted = key.strip().lower().replace("_", "-")
    by_form = {k.lower().replace("_", "-"): k for k in keys}
    if wanted in by_form:
        return f" (did you mean {by_form[wanted]!r}?)"
    close = difflib.get_close_matches(wanted, list(by_form), n=1, cutoff=0.75)
    return f" (did you mean {by_form[close[0]]!r}?)" if close else ""
