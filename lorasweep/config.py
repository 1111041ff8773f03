"""Sweep configuration: the dataclasses a sweep and a trial are made of, and their own checks.

Config flows one way. A recipe (or the CLI's flags) becomes a :class:`SweepSpec`; each trial then
gets a :class:`TrialSpec`: plain, picklable data, written into its run folder. This module is the
bottom layer of the package: it knows no registry. Its checks (``validate``) are those of the
fields' own values (a positive step count, a finite learning rate, a known pruner); names and
options are checked against the task, variant, model and store registries one layer up
(:func:`lorasweep.sweep.spec.check_sweep`), and the task's defaults filled in there too
(:func:`lorasweep.sweep.spec.build_spec`). Every problem is raised as :class:`ConfigError` with
one line that names the problem and the fix, before anything touches the study store.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any, ClassVar

from ._tags import variant_tag
from ._values import ConfigError, check_lrs, check_seeds, coerce_fields, parse_floats, parse_ints
from ._values import as_list as _as_list
from ._values import number as _number
from .paths import RUNS_DIR
from .recipe import load_recipe

__all__ = [
    "DEFAULT_LRS",
    "DEFAULT_MODEL",
    "DEFAULT_SEARCH",
    "DEFAULT_VARIANT",
    "LOG_OPTIONS",
    "PRUNERS",
    "SEARCHES",
    "TRY_EVAL_LIMIT",
    "TRY_SUFFIX",
    "TRY_TRAIN",
    "ConfigError",
    "SweepSpec",
    "TrainConfig",
    "TrialSpec",
    "VariantSpec",
    "load_recipe",
    "overlay_train",
    "parse_floats",
    "parse_ints",
    "rung_step",
]

#: Optuna pruners a sweep may use; ``none`` (the default): every grid point runs to the end.
PRUNERS = ("none", "median", "successive-halving")
#: grid: every (lr, seed); adaptive: successive halving over the grid's LRs (sweep/search.py);
#: transfer: LoRA's adaptive search, then each variant's around LoRA's LR x its prior shift.
SEARCHES = ("grid", "adaptive", "transfer")
#: What a sweep uses when neither it nor its task says otherwise (``Task`` reads these too).
DEFAULT_VARIANT = "lora"
DEFAULT_SEARCH = SEARCHES[0]
#: The embedded default model and grid (the ``sentiment`` task declares them as its own): the
#: grid spans, three times apart, the peaks of LoRA+ (1e-3), LoRA (3e-3) and AdaLoRA (3e-2)
#: on that task, each with collapse below and divergence above.
DEFAULT_MODEL = "embedded:minilm"
DEFAULT_LRS = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1)

#: ``run --try``: a study task tried small, to see it run (and fit) before the real sweep. Its
#: sweep's name ends in TRY_SUFFIX, so its trials never enter a real sweep's report; flags and
#: ``--set`` still win over these.
TRY_TRAIN: dict[str, Any] = {"steps": 4, "batch_size": 4, "grad_accum": 1, "max_length": 128,
                             "estimation_batches": 2, "eval_every": 0}
TRY_EVAL_LIMIT = 16  # evaluation examples per split
TRY_SUFFIX = "-try"


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
                                       "batch_size": "--batch-size 16",
                                       "max_length": "--max-length 256",
                                       "grad_accum": "--grad-accum 4"})
        if self.steps is not None and self.steps <= 0:
            raise ConfigError(f"steps must be positive, got {self.steps}: pass e.g. --steps 100")
        if self.epochs is not None and self.epochs <= 0:
            raise ConfigError(f"epochs must be positive, got {self.epochs}: pass e.g. --epochs 1")
        flags = {"batch_size": "--batch-size 16", "grad_accum": "--grad-accum 4",
                 "max_length": "--max-length 256"}
        for name, example in flags.items():
            if getattr(self, name) <= 0:
                raise ConfigError(f"train.{name} must be positive, got {getattr(self, name)}: "
                                  f"pass e.g. {example}")
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

    key: str = DEFAULT_VARIANT
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
        """Its own values (numbers, a mapping of options, module names); the key and the options
        are checked against the variant registry by ``sweep.spec.resolve_variant``."""
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
        if self.target_modules is not None:
            self.target_modules = sorted(set(self.target_modules))


def _tracker_names(value: Any) -> list[str]:
    """``"tensorboard,mlflow"`` or a list -> the tracker names (``none``: no tracker)."""
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(x, str) for x in items):
        raise ConfigError(f"log must name trackers, e.g. --log tensorboard, got {value!r}")
    names = [x.strip() for x in items if x.strip() and x.strip() != "none"]
    return list(dict.fromkeys(names))


#: ``--set log.X=V`` (a recipe's ``log: {X: V}``) -> an example, for the error that lists them.
LOG_OPTIONS = {"every": "--set log.every=10", "project": "--set log.project=my-project",
               "artifacts": "--set log.artifacts=true"}


def _log_options(options: dict[str, Any]) -> dict[str, Any]:
    """The trackers' options, checked: ``every`` (steps between step records, > 0), ``project``
    (W&B's project, MLflow's experiment ``PROJECT/SWEEP``), ``artifacts`` (a finished trial's
    adapter as an artifact)."""
    checked = {}
    for key, value in options.items():
        if key not in LOG_OPTIONS:
            raise ConfigError(f"unknown log option {key!r}: known are {', '.join(LOG_OPTIONS)} "
                              f"(e.g. {LOG_OPTIONS['every']})")
        if key == "every":
            value = _number(value, int, "log.every", LOG_OPTIONS["every"])
            if value <= 0:
                raise ConfigError(f"log.every must be positive, got {value}: e.g. --set log.every=10")
        elif key == "project":
            if not isinstance(value, str) or not value.strip() or any(c in value for c in "/\\#?%: "):
                raise ConfigError(f"log.project must be a name without '/', '\\', '#', '?', '%', "
                                  f"':' or spaces, got {value!r}: e.g. {LOG_OPTIONS['project']}")
        elif not isinstance(value, bool):
            raise ConfigError(f"log.artifacts must be true or false, got {value!r}: e.g. "
                              f"{LOG_OPTIONS['artifacts']}")
        checked[key] = value
    return checked


@dataclasses.dataclass
class SweepSpec:
    """A whole sweep: model x task x variants x learning rates x seeds.

    Built in code, it is a grid of LoRA over the embedded default's learning rates; built from a
    recipe or the CLI (:func:`lorasweep.sweep.spec.build_spec`), what is not given is the task's
    (the embedded default: LoRA, LoRA+ and AdaLoRA, adaptive search).
    """

    name: str = "default"
    model: str = DEFAULT_MODEL
    task: str = "sentiment"
    variants: list[VariantSpec] = dataclasses.field(default_factory=lambda: [VariantSpec()])
    lrs: list[float] = dataclasses.field(default_factory=lambda: list(DEFAULT_LRS))
    seeds: list[int] = dataclasses.field(default_factory=lambda: [0])
    #: The training budget as given: a :class:`TrainConfig` (every task of the sweep trains with
    #: it as it is), or the settings given explicitly (recipe, flags, ``--set train.X``), which
    #: overlay each task's own default budget (a group's tasks differ in size). One owner: the
    #: budget a task trains with is ``sweep.spec.train_for(spec, task)``.
    train: TrainConfig | dict[str, Any] = dataclasses.field(default_factory=dict)
    task_options: dict[str, Any] = dataclasses.field(default_factory=dict)
    model_options: dict[str, Any] = dataclasses.field(default_factory=dict)
    storage: str | None = None
    pruner: str = "none"
    search: str = DEFAULT_SEARCH  # one of SEARCHES
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
    #: Experiment trackers the trials log to (``--log tensorboard``, a recipe's ``log:``) and
    #: their options (``--set log.every=10``). Not part of a study: a rerun may change them.
    log: list[str] = dataclasses.field(default_factory=list)
    log_options: dict[str, Any] = dataclasses.field(default_factory=dict)

    def validate(self) -> SweepSpec:
        """Check its own values, cheapest first; raise ConfigError on the first problem.

        Names and options are checked against the registries (and the training budget against
        each task's) by :func:`lorasweep.sweep.spec.check_sweep`, which calls this first."""
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
        if self.search not in SEARCHES:
            raise ConfigError(f"unknown search {self.search!r}: choose grid, adaptive or transfer (--search)")
        if self.pruner not in PRUNERS:
            raise ConfigError(f"unknown pruner {self.pruner!r}: choose {', '.join(PRUNERS)}")
        if self.workers <= 0:
            raise ConfigError(f"workers must be positive, got {self.workers}: pass e.g. --workers 2 "
                              "(or --set workers=2)")
        self.max_retries = _number(self.max_retries, int, "max_retries", "--set max_retries=2")
        if self.max_retries < 0:
            raise ConfigError(f"max_retries must be >= 0, got {self.max_retries}: e.g. --set max_retries=2")
        self.log = _tracker_names(self.log)
        self.log_options = _log_options(self.log_options)
        if isinstance(self.train, TrainConfig):
            self.train.validate()
        for variant in self.variants:
            variant.validate()
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SweepSpec:
        """Build from recipe data as it is (what is absent: the dataclass's defaults; the task's
        defaults are filled in by :func:`lorasweep.sweep.spec.build_spec`)."""
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
        if isinstance(data.get("log"), dict):  # recipe: `log: {trackers: [mlflow], project: x}`
            log = dict(data["log"])
            data["log"] = log.pop("trackers", [])
            data["log_options"] = {**log, **(data.get("log_options") or {})}
        if "log" in data:
            data["log"] = _tracker_names(data["log"])
        if not isinstance(data.get("log_options", {}), dict):
            raise ConfigError("log options must be a mapping: e.g. --set log.every=10")
        variants = [_variant_from(v, shared) for v in _as_list(data.pop("variants", [DEFAULT_VARIANT]))]
        if "lrs" in data:
            data["lrs"] = [_number(x, float, "learning rate", "lrs: [1e-5, 1e-4]")
                           for x in _as_list(data["lrs"])]
        if "seeds" in data:
            data["seeds"] = [_number(x, int, "seed", "seeds: [0, 1]") for x in _as_list(data["seeds"])]
        train = data.pop("train", None) or {}
        if isinstance(train, TrainConfig):
            train = dataclasses.asdict(train)
        if not isinstance(train, dict):
            raise ConfigError(f"recipe key 'train' must be a mapping, got {train!r}")
        fields = {f.name for f in dataclasses.fields(TrainConfig)}
        unknown = sorted(set(train) - fields, key=str)
        if unknown:
            raise ConfigError(
                f"unknown train setting {unknown[0]!r}: known are {', '.join(sorted(fields))}"
            )
        return cls(**data, variants=variants, train=dict(train))


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
    #: Fraction of the training schedule this trial runs (the adaptive search's rungs < 1).
    budget: float = 1.0
    #: The class the task key resolved to when the study was made (``module:Class`` for a task
    #: from the user's package; blank for a built-in key): every worker imports the same class.
    task_class: str = ""
    #: What the study optimizes, and what a diverged trial of it records (the study's, resolved
    #: once from the task instance when the sweep was checked; None: the task's own, as specs
    #: stored before a study recorded it read).
    direction: str = "maximize"
    diverged_score: float | None = None

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


def overlay_train(base: dict[str, Any], given: dict[str, Any]) -> dict[str, Any]:
    """Train settings ``given`` over ``base``; an epoch budget given without steps replaces
    ``base``'s step budget (a step count wins over epochs in :class:`TrainConfig`)."""
    merged = dict(base)
    if "epochs" in given and "steps" not in given:
        merged.pop("steps", None)
    return {**merged, **given}


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


def rung_step(steps: int, fidelity: float) -> int:
    """The step a trial of ``fidelity`` (a fraction of a ``steps``-step schedule) stops after:
    the schedule's end at fidelity 1, else the nearest step, at least 1."""
    return steps if fidelity >= 1.0 else max(1, min(steps, round(steps * fidelity)))
