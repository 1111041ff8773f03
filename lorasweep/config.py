"""Sweep configuration: recipe YAML -> validated dataclasses -> overrides -> TrialSpec.

Config flows one way. A recipe (or the CLI's flags) becomes a :class:`SweepSpec`; every problem
is found here, before anything touches the study store, and raised as :class:`ConfigError` with
one line that names the problem and the fix. Each trial then gets a :class:`TrialSpec`: plain,
picklable data, written into its run folder.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any, ClassVar

import yaml

from ._tags import variant_tag
from ._values import as_list as _as_list
from ._values import check_lrs, check_seeds, coerce_fields, parse_floats, parse_ints
from ._values import mapping_of as _mapping
from ._values import number as _number
from .paths import RUNS_DIR
from .recipe import load_recipe

__all__ = [
    "DEFAULT_LRS",
    "PRUNERS",
    "ConfigError",
    "SweepSpec",
    "TrainConfig",
    "TrialSpec",
    "VariantSpec",
    "apply_overrides",
    "load_recipe",
    "parse_floats",
    "parse_ints",
]

#: Optuna pruners a sweep may use; ``none`` (the default): every grid point runs to the end.
PRUNERS = ("none", "median", "successive-halving")
#: The embedded default grid: spans collapse (too low), the peak and divergence (too high).
DEFAULT_LRS = (1e-5, 1e-4, 1e-3, 3e-3, 5e-3, 1e-2)


class ConfigError(ValueError):
    """Bad input: the message is one line naming the problem and the fix."""


@dataclasses.dataclass
class TrainConfig:
    """The one training loop's settings (the learning rate and seed come from the grid)."""

    steps: int | None = None  # optimizer steps; wins over epochs
    epochs: float | None = None
    batch_size: int = 32
    grad_accum: int = 1
    weight_decay: float = 0.0
    warmup_ratio: float = 0.06
    schedule: str = "cosine"  # cosine | linear | constant
    max_grad_norm: float = 1.0
    eval_every: int = 0  # 0: at the end only
    max_length: int = 64
    estimation_batches: int = 64  # batches given to prepare (data-driven inits use them all)
    precision: str = "auto"  # auto (bf16 autocast on CUDA, fp32 on CPU) | fp32 | bf16
    device: str = "auto"
    #: Steps between checkpoints of the whole training state; None: about every 10 minutes of
    #: training; 0: no checkpoints (a killed trial restarts from step 0).
    checkpoint_every: int | None = None

    def validate(self) -> None:
        coerce_fields(self, "train.", {"steps": "--steps 100", "epochs": "--epochs 1",
                                       "batch_size": "--batch-size 16"})
        if self.steps is not None and self.steps <= 0:
            raise ConfigError(f"steps must be positive, got {self.steps}: pass e.g. --steps 100")
        if self.epochs is not None and self.epochs <= 0:
            raise ConfigError(f"epochs must be positive, got {self.epochs}: pass e.g. --epochs 1")
        for name in ("batch_size", "grad_accum", "max_length"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"train.{name} must be positive, got {getattr(self, name)}")
        if self.eval_every < 0 or self.estimation_batches < 0:
            raise ConfigError("train.eval_every and train.estimation_batches must be >= 0")
        if not 0 <= self.warmup_ratio < 1:
            raise ConfigError(f"train.warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        if self.schedule not in ("cosine", "linear", "constant"):
            raise ConfigError(
                f"train.schedule must be cosine, linear or constant, got {self.schedule!r}"
            )
        if self.precision not in ("auto", "fp32", "bf16"):
            raise ConfigError(f"train.precision must be auto, fp32 or bf16, got {self.precision!r}")
        every = self.checkpoint_every
        if every is not None and (isinstance(every, bool) or not isinstance(every, int) or every < 0):
            raise ConfigError(
                f"train.checkpoint_every must be a whole number of steps >= 0 (0: off), got "
                f"{every!r}: e.g. --set train.checkpoint_every=200"
            )
        if not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", self.device):
            raise ConfigError(f"train.device must be auto, cpu, cuda, cuda:N or mps, got {self.device!r}")


@dataclasses.dataclass
class VariantSpec:
    """One variant configuration: a registry key and its settings."""

    key: str = "lora"
    rank: int = 8
    alpha: float = 16.0
    dropout: float = 0.0
    target_modules: list[str] | None = None
    options: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def tag(self) -> str:
        """``loraplus-r8-a16-ratio8``: after :meth:`validate`, options are resolved (coerced, and
        only those that differ from the defaults), so one configuration gets one tag and study."""
        return variant_tag(self.key, self.rank, self.alpha, self.dropout, self.options,
                           self.target_modules)

    def validate(self) -> None:
        from .variants import VariantError, get_variant_class

        self.rank = _number(self.rank, int, f"{self.key} rank", "--rank 8")
        self.alpha = _number(self.alpha, float, f"{self.key} alpha", "--alpha 16")
        self.dropout = _number(self.dropout, float, f"{self.key} dropout", "--set variant.dropout=0.05")
        if not isinstance(self.options, dict) or not all(isinstance(k, str) for k in self.options):
            raise ConfigError(f"options of variant {self.key!r} must be a mapping of names, got {self.options!r}")
        targets = self.target_modules
        if targets is not None and (not isinstance(targets, list) or not targets
                                    or not all(isinstance(t, str) and t for t in targets)):
            raise ConfigError(f"target_modules must be module names, got {targets!r}: "
                              "e.g. --set target_modules=query,value")
        try:
            cls = get_variant_class(self.key)
            resolved = cls(self.rank, self.alpha, self.dropout, **self.options)
        except VariantError as err:
            raise ConfigError(str(err)) from None
        defaults = cls.option_defaults()
        self.options = {k: v for k, v in dataclasses.asdict(resolved.options).items()
                        if k in self.options and v != defaults[k]}
        if self.target_modules is not None:
            self.target_modules = sorted(set(self.target_modules))


@dataclasses.dataclass
class SweepSpec:
    """A whole sweep: model x task x variants x learning rates x seeds."""

    name: str = "default"
    model: str = "embedded:minilm"
    task: str = "sentiment"
    variants: list[VariantSpec] = dataclasses.field(default_factory=lambda: [VariantSpec()])
    lrs: list[float] = dataclasses.field(default_factory=lambda: list(DEFAULT_LRS))
    seeds: list[int] = dataclasses.field(default_factory=lambda: [0])
    train: TrainConfig = dataclasses.field(default_factory=lambda: TrainConfig(steps=80))
    task_options: dict[str, Any] = dataclasses.field(default_factory=dict)
    model_options: dict[str, Any] = dataclasses.field(default_factory=dict)
    #: The train settings the recipe/CLI gave explicitly. When set, each task of a group gets its
    #: own default budget overlaid with these (``train_for``); ``train`` is the first task's.
    train_settings: dict[str, Any] | None = None
    storage: str | None = None
    pruner: str = "none"
    #: grid: every (lr, seed); adaptive: a bracket then a climb over the grid's LRs (sweep/search.py)
    search: str = "grid"
    search_options: dict[str, Any] = dataclasses.field(default_factory=dict)
    launcher: str = "inline"
    #: The launcher's options (``--set launcher.X=V``, or a recipe's ``launcher:`` mapping).
    launcher_options: dict[str, Any] = dataclasses.field(default_factory=dict)
    workers: int = 1
    #: In-run retries of a point whose trial failed or whose worker was lost (then it stays FAIL).
    max_retries: int = 2
    runs_dir: str = str(RUNS_DIR)
    #: Learning rates above 10 are refused as typos unless this is set (``--allow-any-lr``).
    allow_any_lr: bool = False

    def validate(self) -> SweepSpec:
        """Check everything, cheapest first; raise ConfigError on the first problem."""
        coerce_fields(self, "", {"workers": "--workers 2", "name": "--sweep NAME",
                                 "model": "--model embedded:minilm", "task": "--task sentiment"})
        if not self.name or any(c in self.name for c in "/:| "):
            raise ConfigError(
                f"sweep name {self.name!r} must be a non-empty word without '/', ':', '|' or spaces"
            )
        self.lrs = check_lrs(self.lrs, self.allow_any_lr)
        self.seeds = check_seeds(self.seeds)
        if not self.variants:
            raise ConfigError("no variant given: pass e.g. --variant lora,dora")
        if self.search not in ("grid", "adaptive"):
            raise ConfigError(f"unknown search {self.search!r}: choose grid or adaptive (--search)")
        from .sweep.search import SearchError, parse_options

        try:
            parse_options(self.search_options)
        except SearchError as err:
            raise ConfigError(str(err)) from None
        self._validate_launcher()
        if self.pruner not in PRUNERS:
            raise ConfigError(f"unknown pruner {self.pruner!r}: choose {', '.join(PRUNERS)}")
        if self.workers <= 0:
            raise ConfigError(f"workers must be positive, got {self.workers}")
        from .sweep.store import StorageError, check_storage

        try:  # a bad URL, path or store file stops here, before anything is written
            check_storage(self.storage)
        except StorageError as err:
            raise ConfigError(str(err)) from None
        self.max_retries = _number(self.max_retries, int, "max_retries", "--set max_retries=2")
        if self.max_retries < 0:
            raise ConfigError(f"max_retries must be >= 0, got {self.max_retries}: e.g. --set max_retries=2")
        from .tasks import TaskError, expand_tasks, get_task
        from .train.model import ModelError, ModelOptions, check_model

        try:
            for task in expand_tasks(self.task):
                get_task(task, **self.task_options)
            check_model(self.model)
            ModelOptions.parse(self.model_options)
        except (TaskError, ModelError) as err:
            raise ConfigError(str(err)) from None
        for task in self.tasks:
            self.train_for(task).validate()
        for variant in self.variants:  # imports torch: after the cheap checks
            variant.validate()
        tags = [v.tag for v in self.variants]
        if len(set(tags)) != len(tags):
            raise ConfigError(f"the same variant configuration is listed twice: {tags}")
        return self

    def _validate_launcher(self) -> None:
        from .launch.base import LauncherError, get_launcher_class

        try:
            get_launcher_class(self.launcher).parse_options(self.launcher_options)
        except LauncherError as err:
            raise ConfigError(str(err)) from None
        if self.launcher == "slurm":
            storage = self.storage or "sqlite:///"
            if storage.startswith("sqlite"):
                raise ConfigError(
                    "--launcher slurm cannot use a SQLite store (SQLite on network file systems "
                    "corrupts, and loses workers at 32 processes even on a local disk): pass "
                    "--storage journal:/shared/path/sweep.journal or a PostgreSQL URL"
                )

    def train_for(self, task: str) -> TrainConfig:
        """The training budget of one task of this sweep (a group's tasks differ in size)."""
        if self.train_settings is None:
            return self.train
        return _budget(_task_class(task), self.train_settings)

    @property
    def tasks(self) -> list[str]:
        """The task keys this sweep runs (a group such as ``glue`` expands to its members)."""
        from .tasks import expand_tasks

        return expand_tasks(self.task)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SweepSpec:
        """Build from recipe data; the task's own defaults fill model, lrs and train budget."""
        data = dict(data)
        known = {f.name for f in dataclasses.fields(cls)} | {"rank", "alpha", "target_modules",
                                                             "data_dir"}
        unknown = sorted(set(data) - known, key=str)
        if unknown:
            raise ConfigError(
                f"unknown recipe key {unknown[0]!r}: known keys are {', '.join(sorted(known))}"
            )
        if data.get("data_dir") is not None:  # the task's local data: task_options.data_dir
            folder = str(Path(str(data.pop("data_dir"))).expanduser().resolve())
            data["task_options"] = {**(data.get("task_options") or {}), "data_dir": folder}
        data.pop("data_dir", None)
        shared = {k: data.pop(k) for k in ("rank", "alpha", "target_modules") if k in data}
        launcher = data.get("launcher")
        if isinstance(launcher, dict):  # recipe: `launcher: {key: slurm, partition: gpu, ...}`
            launcher = dict(launcher)
            data["launcher"] = launcher.pop("key", cls.launcher)
            data["launcher_options"] = {**launcher, **(data.get("launcher_options") or {})}
        elif launcher is not None and not isinstance(launcher, str):
            raise ConfigError(f"recipe key 'launcher' must be a name or a mapping with 'key', got {launcher!r}")
        if not isinstance(data.get("launcher_options", {}), dict):
            raise ConfigError("launcher options must be a mapping: e.g. --set launcher.partition=gpu")
        task_cls = _task_class(data.get("task", cls.task))
        default_variants = list(task_cls.default_variants) if task_cls is not None else ["lora"]
        variants = [_variant_from(v, shared) for v in _as_list(data.pop("variants", default_variants))]
        if "lrs" in data:
            data["lrs"] = [_number(x, float, "learning rate", "lrs: [1e-5, 1e-4]")
                           for x in _as_list(data["lrs"])]
        if "seeds" in data:
            data["seeds"] = [_number(x, int, "seed", "seeds: [0, 1]") for x in _as_list(data["seeds"])]
        settings = data.pop("train_settings", None)  # present when data came from to_dict()
        if settings is not None and not isinstance(settings, dict):
            raise ConfigError(f"recipe key 'train_settings' must be a mapping, got {settings!r}")
        train = data.pop("train", None) or {}
        if not isinstance(train, dict):
            raise ConfigError(f"recipe key 'train' must be a mapping, got {train!r}")
        fields = {f.name for f in dataclasses.fields(TrainConfig)}
        unknown = sorted(set(train) - fields, key=str)
        if unknown:
            raise ConfigError(
                f"unknown train setting {unknown[0]!r}: known are {', '.join(sorted(fields))}"
            )
        if task_cls is not None:
            data.setdefault("model", task_cls.default_model or cls.model)
            data.setdefault("search", task_cls.default_search)
            if task_cls.default_lrs:
                data.setdefault("lrs", list(task_cls.default_lrs))
        return cls(**data, variants=variants, train=_budget(task_cls, train),
                   train_settings=dict(train if settings is None else settings))


@dataclasses.dataclass(frozen=True)
class TrialSpec:
    """Everything one trial needs, as plain data (picklable, written to the run folder).

    A study stores what its trials share once, as a template (:meth:`template`: every field but
    :attr:`TRIAL_FIELDS`); a worker makes a trial's spec from it and that trial's own fields
    (:meth:`from_dict`).
    """

    sweep: str
    study: str
    storage: str
    trial_number: int
    model: str
    task: str
    task_options: dict[str, Any]
    model_options: dict[str, Any]
    variant: VariantSpec
    lr: float
    seed: int
    train: TrainConfig
    run_dir: str
    #: Fraction of the training budget this trial runs (the adaptive search's short probes < 1).
    budget: float = 1.0

    #: The fields each trial sets itself; the others are its study's, the same for every trial.
    TRIAL_FIELDS: ClassVar[tuple[str, ...]] = ("study", "storage", "trial_number", "lr", "seed",
                                               "run_dir", "budget")

    def to_dict(self) -> dict[str, Any]:
        """Plain data, JSON-serialisable as is (``config.json``, the trial's ``config``)."""
        return dataclasses.asdict(self)

    @classmethod
    def template(cls, **shared: Any) -> dict[str, Any]:
        """What every trial of one study shares, as :meth:`to_dict` writes it: ``shared`` gives
        each field but :attr:`TRIAL_FIELDS`, which the template leaves out."""
        blank = {"study": "", "storage": "", "trial_number": 0, "lr": 0.0, "seed": 0, "run_dir": ""}
        data = cls(**shared, **blank).to_dict()
        return {k: v for k, v in data.items() if k not in cls.TRIAL_FIELDS}

    @classmethod
    def from_dict(cls, data: dict[str, Any], **fields: Any) -> TrialSpec:
        """The spec :meth:`to_dict` wrote, ``fields`` added or replacing its own (a study's
        :meth:`template` plus one trial's fields). A key that is no field (of the spec, its
        ``variant`` or ``train``) or a missing field is a ConfigError naming it; what was added
        after specs were first stored reads as its default when absent (``model_options``: {},
        ``budget``: 1.0, a ``train`` or ``variant`` setting)."""
        data = {**data, **fields}
        data.setdefault("model_options", {})  # stores written before model options existed
        _check_keys(cls, data, "trial spec")
        missing = [f.name for f in dataclasses.fields(cls)
                   if f.name not in data and f.default is dataclasses.MISSING]
        if missing:
            raise ConfigError(f"trial spec lacks {', '.join(missing)}: it was not written by "
                              "TrialSpec.to_dict or TrialSpec.template")
        for name, kind in (("variant", VariantSpec), ("train", TrainConfig)):
            if not isinstance(data[name], dict):
                raise ConfigError(f"trial spec {name} must be a mapping, got {data[name]!r}")
            _check_keys(kind, data[name], f"trial spec {name}")
            data[name] = kind(**data[name])
        return cls(**data)


def _check_keys(cls: type, data: dict[str, Any], what: str) -> None:
    """Refuse a key of ``data`` that is no field of dataclass ``cls``, naming it."""
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - fields, key=str)
    if unknown:
        raise ConfigError(f"{what} has the unknown key {unknown[0]!r} (known: "
                          f"{', '.join(sorted(fields))}): was it written by a newer lorasweep? "
                          "upgrade lorasweep")


def _budget(task_cls: Any, given: dict[str, Any]) -> TrainConfig:
    """A task's default budget overlaid with the settings given explicitly."""
    budget = dict(task_cls.default_train) if task_cls is not None else {"steps": SweepSpec().train.steps}
    if "epochs" in given and "steps" not in given:
        budget.pop("steps", None)  # an explicit epoch budget replaces a default step budget
    try:
        config = TrainConfig(**{**budget, **given})
    except TypeError as err:
        raise ConfigError(f"bad train settings: {err}") from None
    coerce_fields(config, "train.")  # "50" from a quoted YAML value becomes 50 in every copy
    return config


def _task_class(key: Any):
    """The task class (first member for a group) whose defaults apply; None if unknown."""
    from .tasks import expand_tasks_safe, task_registry

    members = expand_tasks_safe(key) if isinstance(key, str) else []
    return task_registry().get(members[0]) if members else None


def _variant_from(item: Any, shared: dict[str, Any]) -> VariantSpec:
    if isinstance(item, str):
        item = {"key": item}
    if not isinstance(item, dict) or "key" not in item:
        raise ConfigError(f"a variant entry must be a key or a mapping with 'key', got {item!r}")
    fields = {f.name for f in dataclasses.fields(VariantSpec)}
    merged = {**shared, **item}
    options = merged.pop("options", {}) or {}
    if not isinstance(options, dict):
        raise ConfigError(f"options of variant {item['key']!r} must be a mapping, got {options!r}")
    options = dict(options)
    options.update({k: merged.pop(k) for k in list(merged) if k not in fields})
    if isinstance(merged.get("target_modules"), str):
        merged["target_modules"] = _as_list(merged["target_modules"])
    return VariantSpec(**merged, options=options)


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
            data["train"] = {**_mapping(data, "train"), rest: value}
        elif head == "task" and rest:
            data["task_options"] = {**_mapping(data, "task_options"), rest: value}
        elif head == "model" and rest:
            data["model_options"] = {**_mapping(data, "model_options"), rest: value}
        elif head == "search" and rest:
            data["search_options"] = {**_mapping(data, "search_options"), rest: value}
        elif head == "launcher" and rest:
            data["launcher_options"] = {**_mapping(data, "launcher_options"), rest: value}
        elif head == "variant" and rest:
            task_cls = _task_class(data.get("task", SweepSpec.task))
            default = list(task_cls.default_variants) if task_cls is not None else ["lora"]
            variants = [dict(v) if isinstance(v, dict) else {"key": v}
                        for v in _as_list(data.get("variants", default))]
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
                "launcher.X or a top-level key"
            )
    return data
