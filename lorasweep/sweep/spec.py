"""From recipe data to a checked sweep: the task's defaults, ``--set`` overrides, and the checks
of names and options against the registries (tasks, variants, models, stores, searches).

:mod:`lorasweep.config` holds the dataclasses and the checks of their own values; this module,
one layer up, is where a sweep meets the registries:

- :func:`build_spec`: recipe data -> :class:`SweepSpec`, with the task's default model, grid,
  search and variants where the data names none (the task declares them: ``Task.default_*``);
- :func:`apply_overrides`: ``--set key=value`` onto recipe data;
- :func:`train_for`: the budget one task trains with: the task's default budget overlaid with the
  settings the sweep gave (``train_for(spec, t)``, for each ``t`` in ``sweep_tasks(spec)``);
- :func:`check_sweep`: ``spec.validate()`` then every name and option against its registry; a
  problem is a :class:`SweepError` (a ``ConfigError``: one line naming it and the fix).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import yaml

from .._values import as_list, coerce_fields, mapping_of
from ..config import (
    DEFAULT_LRS,
    DEFAULT_VARIANT,
    ConfigError,
    SweepSpec,
    TrainConfig,
    VariantSpec,
    overlay_train,
)

__all__ = ["SweepError", "apply_overrides", "build_spec", "check_registries", "check_sweep",
           "offline_model_hint", "resolve_variant", "sweep_tasks", "task_class", "train_for"]


class SweepError(ConfigError):
    """A sweep's input that a registry or the study store refuses (one line: problem and fix)."""


def task_class(key: Any) -> Any:
    """The task class (the first member for a group) whose defaults apply; None if unknown."""
    from ..tasks import expand_tasks_safe, find_task

    members = expand_tasks_safe(key) if isinstance(key, str) else []
    return find_task(members[0]) if members else None


def sweep_tasks(spec: SweepSpec) -> list[str]:
    """The task keys ``spec`` runs (a group such as ``glue`` expands to its members)."""
    from ..tasks import expand_tasks

    return expand_tasks(spec.task)


def train_for(spec: SweepSpec, task: str) -> TrainConfig:
    """The training budget of one task of ``spec`` (a group's tasks differ in size): ``spec.train``
    when it is a :class:`TrainConfig`, otherwise the task's default budget overlaid with it."""
    if isinstance(spec.train, TrainConfig):
        return spec.train
    cls = task_class(task)
    budget = dict(cls.default_train) if cls is not None else {}
    try:
        config = TrainConfig(**overlay_train(budget, spec.train))
    except TypeError as err:
        raise SweepError(f"bad train settings: {err}") from None
    coerce_fields(config, "train.")  # "50" from a quoted YAML value becomes 50 in every copy
    return config


def _default_variants(data: dict[str, Any]) -> list[str]:
    """The variants a sweep that names none runs: its task's, else LoRA."""
    cls = task_class(data.get("task", SweepSpec.task))
    return list(cls.default_variants) if cls is not None else [DEFAULT_VARIANT]


def build_spec(data: dict[str, Any]) -> SweepSpec:
    """Build from recipe data; the task's own defaults fill model, lrs, search and variants (and,
    through :func:`train_for`, the training budget). The task's search goes with its grid: a
    sweep that names its own learning rates gets the grid over them unless it names a search."""
    data = dict(data)
    cls = task_class(data.get("task", SweepSpec.task))
    if cls is not None:
        data.setdefault("model", cls.default_model or SweepSpec.model)
        if "lrs" not in data:
            data["lrs"] = list(cls.default_lrs or DEFAULT_LRS)
            data.setdefault("search", cls.default_search)
    data.setdefault("variants", _default_variants(data))
    return SweepSpec.from_dict(data)


def resolve_variant(variant: VariantSpec) -> None:
    """Check the key and options of a validated ``variant`` against the variant registry, in
    place: options coerced, and only those that differ from the defaults kept (so one
    configuration gets one tag)."""
    from ..variants import VariantError, get_variant_class

    try:
        cls = get_variant_class(variant.key)
        resolved = cls(variant.rank, variant.alpha, variant.dropout, **variant.options)
    except VariantError as err:
        raise SweepError(str(err)) from None
    defaults = cls.option_defaults()
    variant.options = {k: v for k, v in dataclasses.asdict(resolved.options).items()
                       if k in variant.options and v != defaults[k]}


def offline_model_hint(spec: SweepSpec, task: str) -> str:
    """When a task's data cannot come from the Hub, the model may not either: the same line
    names the offline model too, so the fix takes one round, not two (data, then model)."""
    from pathlib import Path

    from ..tasks import find_task
    from ..train.model import embedded_for, hub_model_cached

    model = spec.model
    if model.startswith("embedded:") or Path(model).expanduser().exists() or hub_model_cached(model):
        return ""
    offline = embedded_for(getattr(find_task(task), "model_kind", None))
    instead = f"--model {offline} (shipped in a package, no network) or " if offline else "--model "
    return (f"; the model {model} is not in the local cache either: also pass {instead}"
            "a folder with a saved model")


def check_registries(spec: SweepSpec) -> SweepSpec:
    """Names and options of a ``spec`` whose own values are valid, against the registries."""
    from pathlib import Path

    from ..tasks import HubDataError, TaskError, expand_tasks, get_task
    from ..train.model import ModelError, ModelOptions, check_model, resolve_model
    from ..train.trackers import check_trackers
    from .search import SearchError, check_window, lattice, parse_options, schedule
    from .store import StorageError, check_storage
    from .transfer import REFERENCE, no_reference
    from .urls import default_storage_url, store_file

    check_trackers(spec.log)  # cheap: a missing tracker package stops here
    try:
        parse_options(spec.search_options)
        if spec.search in ("adaptive", "transfer"):  # its budget must pay for its rungs
            schedule(len(lattice(spec.lrs, 0)[0]), len(spec.seeds), spec.search_options)
        if spec.search == "transfer":  # and a variant's window, within its own budget
            check_window(len(lattice(spec.lrs, 0)[0]), spec.search_options)
        check_storage(spec.storage)  # a bad URL, path or store file stops here
        if spec.search == "transfer" and all(v.key != REFERENCE for v in spec.variants):
            file = store_file(spec.storage or default_storage_url())
            if file is not None and not Path(file).exists():  # a new store has no LoRA to reuse
                raise SweepError(no_reference(sweep_tasks(spec)[0]))
        for task in expand_tasks(spec.task):
            try:
                checked = get_task(task, **spec.task_options)
            except HubDataError as err:
                raise TaskError(str(err) + offline_model_hint(spec, task)) from None
            if checked.records_data:  # the user's data: what it resolved to goes in the study
                bind = getattr(checked, "bind_model", None)  # a task that renders with the model
                if bind is not None:
                    bind(*resolve_model(spec.model), train_for(spec, task).max_length)
                checked.load()
                spec.task_options = {**spec.task_options, **checked.recorded_options()}
        check_model(spec.model)
        ModelOptions.parse(spec.model_options)
    except (SearchError, StorageError, TaskError, ModelError) as err:
        raise SweepError(str(err)) from None
    if not isinstance(spec.train, TrainConfig):  # a TrainConfig was checked by spec.validate()
        for task in sweep_tasks(spec):
            train_for(spec, task).validate()
    for variant in spec.variants:  # imports torch: after the cheap checks
        resolve_variant(variant)
    tags = [v.tag for v in spec.variants]
    if len(set(tags)) != len(tags):
        raise SweepError(f"the same variant configuration is listed twice: {tags}")
    return spec


def check_sweep(spec: SweepSpec) -> SweepSpec:
    """``spec.validate()``, then its names and options against the registries."""
    return check_registries(spec.validate())


def apply_overrides(data: dict[str, Any], assignments: list[str]) -> dict[str, Any]:
    """Apply ``--set key=value`` overrides to recipe data (dotted keys, YAML-typed values).

    ``train.steps=50``, ``task.eval_limit=100`` (task options), ``model.dtype=bf16`` (model
    options), ``launcher.partition=gpu`` (launcher options), ``variant.ratio=8`` (an option of
    every listed variant), ``rank=4``, ``target_modules=query,value``.
    """
    data = dict(data)
    for assignment in assignments:
        key, sep, raw = assignment.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set expects key=value, got {assignment!r} (e.g. --set train.steps=50)")
        key = key.strip()
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError:
            raise ConfigError(
                f"--set {key!r}: value {raw!r} is not valid YAML; quote it (e.g. --set name=\"x\")"
            ) from None
        head, _, rest = key.partition(".")
        if head == "train" and rest:
            data["train"] = {**mapping_of(data, "train"), rest: value}
        elif head == "task" and rest:
            data["task_options"] = {**mapping_of(data, "task_options"), rest: value}
        elif head == "model" and rest:
            data["model_options"] = {**mapping_of(data, "model_options"), rest: value}
        elif head == "search" and rest:
            data["search_options"] = {**mapping_of(data, "search_options"), rest: value}
        elif head == "launcher" and rest:
            data["launcher_options"] = {**mapping_of(data, "launcher_options"), rest: value}
        elif head == "log" and rest:
            data["log_options"] = {**mapping_of(data, "log_options"), rest: value}
        elif head == "variant" and rest:
            variants = [dict(v) if isinstance(v, dict) else {"key": v}
                        for v in as_list(data.get("variants", _default_variants(data)))]
            spec_fields = {f.name for f in dataclasses.fields(VariantSpec)} - {"key", "options"}
            for v in variants:
                if rest in spec_fields:  # variant.rank=4: a setting, not a variant option
                    v[rest] = value
                else:  # an option: the override wins over one written inline in the recipe
                    v.pop(rest, None)
                    v["options"] = {**(v.get("options") or {}), rest: value}
            data["variants"] = variants
        elif not rest:
            data[key] = value
        else:
            raise ConfigError(
                f"unknown override {key!r}: use train.X, task.X, model.X, variant.X, search.X, "
                "launcher.X, log.X or a top-level key"
            )
    return data
