"""Typed values from YAML and the command line: numbers, typed dataclass fields, LRs and seeds.

Recipes and ``--set`` overrides are YAML, so any setting may arrive as any type: ``steps: many``,
``workers: two``, ``lr: .inf``. These helpers turn a value into the type its field declares, or
raise :class:`ConfigError` with one line naming the setting and an example. ``ConfigError`` is
defined here, at the bottom of the package, so every layer above can raise it (``config``
re-exports it).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

__all__ = ["ConfigError", "MAX_LR", "MAX_SEED", "check_lrs", "check_seeds", "coerce_fields", "number",
           "parse_floats", "parse_ints", "as_list", "mapping_of"]

#: Learning rates above this are refused unless ``--allow-any-lr`` (no optimizer step of a LoRA
#: fine-tune wants more; 1e5 is a typo for 1e-5).
MAX_LR = 10.0
#: Seeds are stored as integers in [0, MAX_SEED) (Optuna's integer search space of the grid).
MAX_SEED = 2**31


class ConfigError(ValueError):
    """Bad input: the message is one line naming the problem and the fix."""


def _error(message: str) -> Exception:
    return ConfigError(message)


def number(value: Any, kind: type, what: str, example: str) -> Any:
    """``value`` as an int or float (numeric strings too), or a ConfigError naming it.

    Floats must be finite; an int must be a whole number (``2.0`` is accepted as ``2``).
    """
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise _error(f"{what} must be a number, got {_shown(value)}: e.g. {example}")
    try:
        number_ = float(value) if kind is float or isinstance(value, float) else int(value)
    except (TypeError, ValueError, OverflowError):
        raise _error(f"{what} must be a number, got {_shown(value)}: e.g. {example}") from None
    if isinstance(number_, float) and not math.isfinite(number_):
        raise _error(f"{what} must be a finite number, got {_shown(value)}: e.g. {example}")
    if kind is int:
        if number_ != int(number_):
            raise _error(f"{what} must be an integer, got {_shown(value)}: e.g. {example}")
        return int(number_)
    return float(number_)


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def coerce_fields(obj: Any, prefix: str, examples: dict[str, str] | None = None) -> None:
    """Give each field of dataclass ``obj`` its declared type (int, float, str, bool; or None
    where the annotation allows it), in place; a ConfigError for a value that cannot be one."""
    examples = examples or {}
    for field in dataclasses.fields(obj):
        kinds = {k.strip() for k in str(field.type).split("|")}
        value = getattr(obj, field.name)
        name = f"{prefix}{field.name}"
        example = examples.get(field.name, f"--set {name}=...")
        if value is None and "None" in kinds:
            continue
        if dataclasses.is_dataclass(value) and type(value).__name__ in kinds:
            continue  # a settings object (e.g. a TrainConfig): it checks its own fields
        if "int" in kinds:
            setattr(obj, field.name, number(value, int, name, example))
        elif "float" in kinds:
            setattr(obj, field.name, number(value, float, name, example))
        elif "bool" in kinds and not isinstance(value, bool):
            raise _error(f"{name} must be true or false, got {_shown(value)}")
        elif "str" in kinds and not isinstance(value, str):
            raise _error(f"{name} must be a string, got {_shown(value)}: e.g. {example}")
        elif any(k.startswith("dict") for k in kinds):
            if not isinstance(value, dict):
                raise _error(f"{name} must be a mapping of settings, got {_shown(value)}")
            bad = [k for k in value if not isinstance(k, str)]
            if bad:
                raise _error(f"{name}: setting names must be words, got {_shown(bad[0])}")


def check_lrs(lrs: Any, allow_any: bool = False) -> list[float]:
    """Learning rates: positive, finite, and in (0, MAX_LR] unless ``allow_any``."""
    if not isinstance(lrs, list) or not lrs:
        raise _error("the learning-rate grid is empty: pass e.g. --lrs 1e-4,1e-3")
    checked = []
    for lr in lrs:
        value = number(lr, float, "learning rate", "--lrs 1e-4,1e-3")
        if value <= 0:
            raise _error(f"learning rate {_shown(lr)} must be a positive number: e.g. --lrs 1e-4,1e-3")
        if value > MAX_LR and not allow_any:
            raise _error(f"learning rate {value:g} is above {MAX_LR:g}: fix --lrs (e.g. 1e-5, not "
                         "1e5), or pass --allow-any-lr if you mean it")
        checked.append(value)
    return checked


def check_seeds(seeds: Any) -> list[int]:
    """Seeds: integers in [0, 2^31)."""
    if not isinstance(seeds, list) or not seeds:
        raise _error("the seed list is empty: pass e.g. --seeds 0")
    checked = []
    for seed in seeds:
        value = number(seed, int, "seed", "--seeds 0,1,2")
        if not 0 <= value < MAX_SEED:
            raise _error(f"seed {value} must be a non-negative integer below 2^31: e.g. --seeds 0,1,2")
        checked.append(value)
    return checked


def parse_floats(text: str, what: str = "learning rate") -> list[float]:
    """``"1e-5,1e-4"`` -> ``[1e-5, 1e-4]``, with a clear error for a malformed list."""
    values = []
    for part in text.split(","):
        part = part.strip()
        try:
            values.append(float(part))
        except ValueError:
            raise _error(
                f"malformed {what} list {text!r}: {part!r} is not a number (e.g. --lrs 1e-5,1e-4,1e-3)"
            ) from None
    return values


def parse_ints(text: str, what: str = "seed") -> list[int]:
    try:
        return [int(p) for p in text.split(",") if p.strip()]
    except ValueError:
        raise _error(f"malformed {what} list {text!r}: use integers, e.g. --seeds 0,1,2") from None


def as_list(value: Any) -> list:
    """``"a, b"`` -> ``["a", "b"]``; a list or tuple as a list; anything else as ``[value]``."""
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    return list(value) if isinstance(value, (list, tuple)) else [value]


def mapping_of(data: dict[str, Any], key: str) -> dict[str, Any]:
    """``data[key]`` (a settings section such as ``train``), or {} when absent; a ConfigError
    when it is not a mapping."""
    value = data.get(key) or {}
    if not isinstance(value, dict):
        raise _error(f"recipe key {key!r} must be a mapping, got {value!r}")
    return value
