"""One Optuna study per (sweep, task, model, variant configuration); the grid as enqueued trials.

A grid point is ``(lr, seed)``. Each is enqueued once as a WAITING trial carrying the user attr
``grid_point``; workers pop WAITING trials atomically (Optuna's ``ask``). Syncing the grid again
(every ``lorasweep run``) enqueues only the points that have no finished, waiting or live trial,
holding the study's lock, so no grid point ever completes twice, whatever runs at the same time.
Within a run, workers retry a failed or lost point (:func:`requeue_failed`) up to the sweep's
``max_retries`` times; a new run gives every point that is still missing a fresh budget.

What every trial of a study shares is stored once, as its TrialSpec template
(:data:`TEMPLATE_ATTR`, written and read by ``TrialSpec``'s own ``template``/``from_dict``).
"""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path
from typing import Any

from .. import __version__
from ..config import SweepSpec, TrialSpec, VariantSpec
from .heartbeat import LOST_REASON, fail_stale
from .lock import study_lock
from .objective import Objective, objective_of, study_objective
from .search import PLANNED, grid_point
from .spec import SweepError, sweep_tasks, train_for
from .states import STOPPED_ATTR, by_point, count_states, failures
from .store import STORE_VERSION, STORE_VERSION_ATTR
from .template import TEMPLATE_ATTR, trial_template
from .transfer import REFERENCE, REFERENCE_ATTR, no_reference, reference_of

#: A study's user attribute: the trackers its trials log to (``--log``) and their options,
#: written by every run (a rerun may add or drop one) and read by every worker.
LOG_ATTR = "log"

__all__ = [
    "LOG_ATTR",
    "NOT_RETRIED",
    "STOPPED_ATTR",
    "TEMPLATE_ATTR",
    "GridSync",
    "fail_reason",
    "grid_point",
    "grid_state",
    "locked",
    "make_pruner",
    "objective_name",
    "requeue_failed",
    "retry_point",
    "study_name",
    "study_run_root",
    "sync_sweep",
    "trial_template",
]

_SEARCH_SPACE_KEYS = ("lr", "seed")
#: Failures that say nothing about the trial itself: a new run enqueues them again at once.
NOT_RETRIED = ("interrupted", "cancelled")


def _template(spec: SweepSpec, task: str, variant: VariantSpec,
              objective: Objective | None = None) -> dict[str, Any]:
    from ..tasks import task_ref

    ref = task_ref(task)  # a built-in's is its key: left blank, as stores before plugins had it
    objective = objective or Objective()
    return TrialSpec.template(sweep=spec.name, model=spec.model, task=task,
                              task_class=ref if ":" in ref else "",
                              task_options=spec.task_options, model_options=spec.model_options,
                              variant=variant, train=train_for(spec, task),
                              direction=objective.direction, diverged_score=objective.worst)


def study_name(spec: SweepSpec, variant: VariantSpec, task: str | None = None) -> str:
    return f"{spec.name}|{task or sweep_tasks(spec)[0]}|{spec.model}|{variant.tag}"


def make_pruner(name: str | None):
    """The Optuna pruner recorded for a study (``none`` when the study predates the setting)."""
    import optuna

    return {"median": optuna.pruners.MedianPruner, "successive-halving":
            optuna.pruners.SuccessiveHalvingPruner}.get(name or "none", optuna.pruners.NopPruner)()


def _model_folder(model: str) -> str:
    """A model as one folder name: ``meta-llama--Llama-3.1-8B``, ``embedded-minilm``; a local
    folder as its name plus a short hash of its absolute path (two ``tiny`` folders differ)."""
    path = Path(model).expanduser()
    if model.startswith((".", "/", "~")) or path.exists():
        digest = hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:6]
        return f"{path.resolve().name}-{digest}"
    return model.replace("/", "--").replace(":", "-")


def study_run_root(runs_dir: str, sweep: str, task: str, model: str, tag: str) -> str:
    """The absolute folder of one study's runs: ``RUNS/SWEEP/TASK/MODEL/VARIANT-TAG``; each grid
    point's run lives below it in a folder named by the grid point (``lr=1e-3,seed=0``)."""
    return str(Path(runs_dir).expanduser().resolve() / sweep / task / _model_folder(model) / tag)


def fail_reason(trial: Any) -> str | None:
    """Why a FAIL trial failed; a trial failed by Optuna's heartbeat carries no reason itself."""
    reason = trial.user_attrs.get("fail_reason")
    return reason if reason is not None or trial.user_attrs.get("stray") else LOST_REASON


@dataclasses.dataclass
class GridSync:
    study: str
    variant: str
    enqueued: int = 0
    done: int = 0
    waiting: int = 0
    running: int = 0
    #: Adaptive search: trials it will still propose, estimated (grid: always 0).
    planned: int = 0
    missing: int = 0  # counted only by :func:`grid_state`: neither done, waiting nor running

    @property
    def total(self) -> int:
        return self.enqueued + self.done + self.waiting + self.running + self.missing


def locked(study: Any, url: str, storage: Any):
    """The study's lock: read-then-write on its trials is one step for every process."""
    return study_lock(storage, url, study.study_name)


def retry_point(study: Any, trial: Any) -> None:
    """Enqueue a failed trial's grid point again, at once (a worker stopped by a signal: the
    retry, on whatever worker, resumes from the point's checkpoint). Call it holding
    :func:`locked`; a stop is not the trial's fault, so it keeps its retry budget (``attempt``)."""
    _enqueue(study, trial, trial.user_attrs["grid_point"], int(trial.user_attrs.get("attempt", 0)))


def _enqueue(study: Any, trial: Any, point: str, attempt: int) -> None:
    """Enqueue ``point`` again with ``trial``'s parameters; ``retry`` counts its failures so far."""
    failed = failures(study.get_trials(deepcopy=False))[point]
    params = {"lr": float(trial.params["lr"]), "seed": int(trial.params["seed"])}
    study.enqueue_trial(params, user_attrs={"grid_point": point, "attempt": attempt, "retry": failed})


def requeue_failed(study: Any, storage: Any, max_retries: int) -> int:
    """Enqueue again the points whose latest trial failed, up to ``max_retries`` retries each.

    Call it holding :func:`locked`. Lost trials (stale heartbeat) are failed first. A point whose
    trial failed ``max_retries + 1`` times in a row stays FAIL with its error recorded; one
    interrupted or cancelled by the user waits for the next run. Returns how many it enqueued.
    """
    from optuna.trial import TrialState

    fail_stale(study, storage)
    enqueued = 0
    for point, trials in by_point(study.get_trials(deepcopy=False)).items():
        last = max(trials, key=lambda t: t.number)
        if last.state != TrialState.FAIL or fail_reason(last) in NOT_RETRIED:
            continue
        attempt = int(last.user_attrs.get("attempt", 0))
        if attempt < max_retries:
            _enqueue(study, last, point, attempt + 1)
            enqueued += 1
    return enqueued


def _sync_study(study: Any, spec: SweepSpec, variant: VariantSpec, enqueue: bool = True) -> GridSync:
    points = by_point(study.get_trials(deepcopy=False))
    sync = GridSync(study=study.study_name, variant=variant.tag)
    for seed in spec.seeds:
        for lr in spec.lrs:
            point = grid_point(lr, seed)
            seen = count_states(points.get(point, []))
            if seen["complete"] or seen["pruned"]:
                sync.done += 1
            elif seen["waiting"]:
                sync.waiting += 1
            elif seen["running"]:
                sync.running += 1
            elif not enqueue:
                sync.missing += 1
            else:  # new, or failed in an earlier run: a new run gives it a fresh retry budget
                study.enqueue_trial({"lr": float(lr), "seed": int(seed)}, user_attrs={
                    "grid_point": point, "attempt": 0, "retry": seen["failed"]})
                sync.enqueued += 1
    return sync


def _check_same_settings(study: Any, spec: SweepSpec, task: str, variant: VariantSpec,
                         objective: Objective) -> None:
    """A sweep's trials must be comparable: refuse to mix training budgets in one study."""
    stored = objective_of(study.user_attrs)
    if stored.direction != objective.direction:
        raise SweepError(
            f"sweep {spec.name!r} already ran on {task} to {stored.direction} "
            f"{objective_name(stored.metric or 'score')} (now: {objective.direction} "
            f"{objective_name(objective.metric or 'score')}): keep its metric, or pass "
            "--sweep NAME to start a new sweep with this one"
        )
    stored_pruner = study.user_attrs.get("pruner")
    if stored_pruner is not None and stored_pruner != spec.pruner:
        raise SweepError(
            f"sweep {spec.name!r} already ran with --pruner {stored_pruner}: pass --pruner "
            f"{stored_pruner}, or a new --sweep NAME for --pruner {spec.pruner}"
        )
    stored_template, template = trial_template(study.user_attrs), _template(spec, task, variant)
    for key, prefix in (("train", "train"), ("task_options", "task"), ("model_options", "model")):
        stored, value = stored_template.get(key), template[key]
        if key == "train" and stored is not None:  # bookkeeping, not a result-changing setting
            stored, value = ({k: v for k, v in d.items() if k != "checkpoint_every"}
                             for d in (stored, value))
        if stored is not None and stored != value:
            changed = sorted(k for k in set(stored) | set(value) if stored.get(k) != value.get(k))
            was = ", ".join(f"{prefix}.{k}={_shown(stored.get(k))} (now {_shown(value.get(k))})"
                            for k in changed)
            raise SweepError(
                f"sweep {spec.name!r} already ran with {was}: keep those settings, or pass "
                f"--sweep NAME to start a new sweep with these"
            )


def _shown(value: Any) -> str:
    return "unset" if value is None else str(value)


def _sync_adaptive(study: Any, storage: Any, storage_url: str, variant: VariantSpec) -> GridSync:
    """Retry what failed, then enqueue the search's next proposals (see ``adaptive.propose``)."""
    from .adaptive import propose

    fail_stale(study, storage)
    result = propose(study, storage, storage_url, retry_failed=10**9)  # a rerun retries failures
    counts = count_states(study.get_trials(deepcopy=False))
    sync = GridSync(study=study.study_name, variant=variant.tag, enqueued=result.enqueued,
                    done=counts["complete"] + counts["pruned"], waiting=counts["waiting"],
                    running=counts["running"])
    sync.waiting -= result.enqueued
    # the rungs' trials not enqueued yet (promotions wait for the rung below)
    sync.planned = max(0, result.plan.trials - sync.done - counts["waiting"] - sync.running)
    return sync


def objective_name(metric: str, best: bool = False) -> str:
    """The name of a study's objective, as Optuna tools show it: ``validation_<metric>``, or
    ``best_validation_<metric>`` for tasks whose objective is the best validation score."""
    return f"{'best_' if best else ''}validation_{metric}"


def _objectives(spec: SweepSpec, tasks: list[str]) -> dict[str, Objective]:
    """Each task's objective, from the task instance with the sweep's options (once per task)."""
    from ..tasks import TaskError, make_task

    out = {}
    for task in tasks:
        try:
            instance = make_task(task, **spec.task_options)
        except TaskError as err:
            raise SweepError(str(err)) from None
        out[task] = study_objective(instance, spec.model, spec.model_options)
    return out


def _name_objective(study: Any, task: str, objective: Objective) -> None:
    """Write the objective's name where optuna-dashboard and ``optuna`` read it."""
    import warnings

    from ..tasks import find_task

    cls = find_task(task)
    names = [objective_name(objective.metric or "score",
                            cls is not None and cls.objective == "best")]
    if study.user_attrs.get("objective") != names[0]:  # read by the report and status
        study.set_user_attr("objective", names[0])
    if study.metric_names != names:
        with warnings.catch_warnings():  # set_metric_names is experimental in Optuna
            warnings.simplefilter("ignore")
            study.set_metric_names(names)


def _transfer_pairs(spec: SweepSpec, storage: Any, existing: set[str],
                    pairs: list[tuple[str, VariantSpec]]
                    ) -> tuple[list[tuple[str, VariantSpec]], dict[str, dict[str, Any]]]:
    """The transfer search's studies, LoRA's first on each task, and each task's reference:
    this sweep's LoRA study, unless it has none yet and another sweep of the store tuned LoRA on
    the same task, model and training settings (then reused: this sweep's LoRA does not run)."""
    references, out = {}, []
    for task in sweep_tasks(spec):
        lora = next((v for v in spec.variants if v.key == REFERENCE), None)
        own = study_name(spec, lora, task) if lora is not None else None
        reused = None if own in existing else reference_of(
            storage, spec.name, task, spec.model, _template(spec, task, VariantSpec())["train"])
        if reused is None and lora is None:
            raise SweepError(no_reference(task))
        references[task] = ({"study": reused[0], "reused": True} if reused
                            else {"study": own, "reused": False})
        here = [(t, v) for t, v in pairs if t == task and not (reused and v.key == REFERENCE)]
        out += sorted(here, key=lambda p: p[1].key != REFERENCE)
    return out, references


def grid_state(spec: SweepSpec, storage: Any) -> list[GridSync]:
    """Where each study's grid stands, enqueueing nothing (lost trials are failed first, so
    ``running`` counts only trials whose worker is alive). An adaptive search's points are never
    all enqueued: for it only ``running`` is counted."""
    import optuna

    out = []
    existing = set(optuna.get_all_study_names(storage))
    for task in sweep_tasks(spec):
        for variant in spec.variants:
            name = study_name(spec, variant, task)
            if name not in existing and spec.search == "transfer":
                continue  # a LoRA reused from another sweep
            study = optuna.load_study(study_name=name, storage=storage)
            fail_stale(study, storage)
            if spec.search in PLANNED:
                running = count_states(study.get_trials(deepcopy=False))["running"]
                out.append(GridSync(study=study.study_name, variant=variant.tag, running=running))
            else:
                out.append(_sync_study(study, spec, variant, enqueue=False))
    return out


def sync_sweep(spec: SweepSpec, storage: Any, storage_url: str | None = None) -> list[GridSync]:
    """Create (or reopen) the sweep's studies and enqueue what is missing. Returns per-study counts.

    Grid search enqueues every missing (lr, seed); adaptive search enqueues its first proposals
    (workers propose the rest as results come in). Each study's read-then-enqueue holds the
    study's lock (see :mod:`.lock`): processes that sync the same sweep at the same instant
    enqueue every grid point once between them.
    """
    import optuna

    from .store import default_storage_url

    storage_url = storage_url or spec.storage or default_storage_url()

    existing = set(optuna.get_all_study_names(storage))
    pairs = [(task, variant) for task in sweep_tasks(spec) for variant in spec.variants]
    references: dict[str, dict[str, Any]] = {}
    if spec.search == "transfer":
        pairs, references = _transfer_pairs(spec, storage, existing, pairs)
    objectives = _objectives(spec, sorted({task for task, _ in pairs}))
    for task, variant in pairs:  # check every study before writing to any
        name = study_name(spec, variant, task)
        if name in existing:
            _check_same_settings(optuna.load_study(study_name=name, storage=storage), spec, task,
                                 variant, objectives[task])
    syncs = []
    for task, variant in pairs:
        name = study_name(spec, variant, task)
        objective = objectives[task]
        study = optuna.create_study(study_name=name, storage=storage, direction=objective.direction,
                                    load_if_exists=True, pruner=make_pruner(spec.pruner))
        attrs = {
            "sweep": spec.name,
            "task": task,
            "task_group": spec.task if spec.task != task else None,
            "model": spec.model,
            "variant": variant.key,
            "variant_tag": variant.tag,
            TEMPLATE_ATTR: _template(spec, task, variant, objective),
            "runs_dir": str(Path(spec.runs_dir).expanduser().resolve()),
            "pruner": spec.pruner,
            "search": spec.search,
            "search_options": spec.search_options,
            **objective.attrs(),  # direction, metric name, the diverged trial's score
            "lrs": [float(lr) for lr in spec.lrs],
            "seeds": [int(seed) for seed in spec.seeds],
            STORE_VERSION_ATTR: STORE_VERSION,
            "lorasweep_version": __version__,
            "max_retries": spec.max_retries,
            STOPPED_ATTR: None,  # a new run tries again a study an earlier run stopped
            LOG_ATTR: {"backends": list(spec.log), **spec.log_options},
        }
        if task in references and variant.key != REFERENCE:
            attrs[REFERENCE_ATTR] = references[task]
        _name_objective(study, task, objective)
        if "run_root" not in study.user_attrs:  # fixed once: a study's runs never move
            study.set_user_attr("run_root", study_run_root(
                spec.runs_dir, spec.name, task, spec.model, variant.tag))
        for key, value in attrs.items():
            if study.user_attrs.get(key) != value:
                study.set_user_attr(key, value)
        if spec.search in PLANNED:
            syncs.append(_sync_adaptive(study, storage, storage_url, variant))
        else:
            with locked(study, storage_url, storage):
                fail_stale(study, storage)
                syncs.append(_sync_study(study, spec, variant))
    if spec.log:  # once, before any worker starts (MLflow's parent run per study)
        from ..train.trackers import prepare
        from .urls import mask_secrets

        prepare(spec.log, spec.name, [study_name(spec, v, t) for t, v in pairs], mask_secrets,
                spec.log_options)
    return syncs
