"""Variant options: the error type of bad variant input, the shared option dataclasses, and
the parsing of option values given as text (CLI, YAML) into their declared types."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import torch
from torch import nn

from ..text import kind_name

__all__ = [
    "A_INITS",
    "AInitOptions",
    "NoOptions",
    "VariantError",
    "init_lora_A",
    "parse_options",
]


class VariantError(ValueError):
    """A variant key, option or target that cannot be used."""


@dataclasses.dataclass
class NoOptions:
    """Variants without options of their own."""


#: How a random ``A`` starts: "kaiming" (Kaiming-uniform ``U(±1/sqrt(in))``, peft's) or
#: "gaussian" (``N(0, 1/in)``, what the study's reference code draws whatever it is asked).
A_INITS = ("kaiming", "gaussian")


@dataclasses.dataclass
class AInitOptions:
    """Variants whose ``A`` starts random: ``a_init`` chooses its distribution (same mean 0;
    the Gaussian's std ``1/sqrt(in)`` is ``sqrt(3)`` times the Kaiming-uniform's)."""

    a_init: str = "kaiming"

    def validate(self) -> None:
        if self.a_init not in A_INITS:
            raise VariantError(f"a_init must be kaiming or gaussian, got {self.a_init!r}")


@torch.no_grad()
def init_lora_A(tensor: torch.Tensor, options: Any, fan_in: int | None = None) -> None:
    """Fill a random ``A`` (``rows × fan_in``, or any view with the fan-in last) per the
    variant's ``a_init`` option: Kaiming-uniform (``a = sqrt(5)``: bound ``1/sqrt(fan_in)``)
    or the reference code's ``N(0, 1/fan_in)``. ``fan_in`` defaults to the last dimension."""
    if getattr(options, "a_init", "kaiming") == "gaussian":
        nn.init.normal_(tensor, 0.0, (fan_in or tensor.shape[-1]) ** -0.5)
    else:
        nn.init.kaiming_uniform_(tensor, a=math.sqrt(5))


def parse_options(options_class: type, key: str, options: dict[str, Any]) -> Any:
    """Build ``options_class`` from ``options``, naming unknown options and the known ones,
    turning text into each option's declared type and running its ``validate``."""
    fields = {f.name: f for f in dataclasses.fields(options_class)}
    unknown = sorted(set(options) - set(fields), key=str)
    if unknown:
        known = ", ".join(sorted(fields)) or "none"
        raise VariantError(
            f"unknown option {unknown[0]!r} for variant {key!r} (its options: {known})"
        )
    typed = {}
    for name, value in options.items():
        typed[name] = _coerce(value, fields[name].type, f"{key} option {name}")
    parsed = options_class(**typed)
    validate = getattr(parsed, "validate", None)
    if validate is not None:
        validate()
    return parsed


def _coerce(value: Any, annotation: Any, what: str) -> Any:
    """Turn CLI strings into the option's declared type (int, float, bool, str)."""
    kind = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", "")
    if not isinstance(value, str):
        if kind == "float" and isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        expected = {"int": int, "float": float, "bool": bool, "str": str}.get(kind)
        wrong_bool = isinstance(value, bool) and kind in ("int", "float")
        if expected is not None and (wrong_bool or not isinstance(value, expected)):
            raise VariantError(f"{what} must be {kind_name(kind)}, got {value!r}")
        return value
    try:
        if kind == "int":
            return int(value)
        if kind == "float":
            return float(value)
        if kind == "bool":
            if value.lower() in ("1", "true", "yes", "on"):
                return True
            if value.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(value)
    except ValueError:
        raise VariantError(f"{what} must be {kind_name(kind)}, got {value!r}") from None
    return value
