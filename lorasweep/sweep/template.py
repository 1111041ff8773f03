"""What every trial of a study shares, stored once as the study's TrialSpec template."""

from __future__ import annotations

from typing import Any

__all__ = ["TEMPLATE_ATTR", "trial_template"]

#: The study attribute that holds what its trials share: :meth:`TrialSpec.template`.
TEMPLATE_ATTR = "trial_template"
#: Store version 1 kept the template's fields as attributes of their own (template field -> key).
_V1_TEMPLATE = {"sweep": "sweep", "model": "model", "task": "task", "task_options": "task_options",
                "model_options": "model_options", "variant": "variant_spec", "train": "train"}


def trial_template(attrs: dict[str, Any]) -> dict[str, Any]:
    """The TrialSpec template of a study (its user attributes ``attrs``), for
    :meth:`TrialSpec.from_dict`; a study written by store version 1 has it in separate keys."""
    if TEMPLATE_ATTR in attrs:
        return attrs[TEMPLATE_ATTR]
    return {field: attrs[key] for field, key in _V1_TEMPLATE.items() if key in attrs}
