"""Module types: the same wrapped module in every block, for variants whose layers of one
type share tensors (RaSA, DenseLoRA, RandLoRA)."""

from __future__ import annotations

from torch import nn

from ._options import VariantError

__all__ = ["module_type", "module_types"]


def module_type(name: str) -> str:
    """The type of a wrapped module: its name with the block indices starred, e.g.
    ``bert.encoder.layer.3.attention.self.query`` -> ``bert.encoder.layer.*.attention.self.query``
    (the same module in every block). The last component stays as it is: the children of an
    ``nn.Sequential`` are named by their index and are different modules."""
    *path, leaf = name.split(".")
    return ".".join(["*" if part.isdigit() else part for part in path] + [leaf])


def module_types(targets: dict[str, nn.Linear], key: str) -> dict[str, list[str]]:
    """Group target layers by :func:`module_type`, in module order; for variants whose layers of
    one type share tensors, so the layers of a type must have one shape."""
    groups: dict[str, list[str]] = {}
    for name in targets:
        groups.setdefault(module_type(name), []).append(name)
    for kind, names in groups.items():
        shapes = {(targets[n].in_features, targets[n].out_features) for n in names}
        if len(shapes) > 1:
            found = ", ".join(f"{i}->{o}" for i, o in sorted(shapes))
            raise VariantError(
                f"{key} shares tensors between the layers of one module type, but the layers "
                f"{kind} have different shapes ({found}): target modules of one shape each"
            )
    return groups
