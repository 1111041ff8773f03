"""MLflow: one experiment per sweep, one parent run per study, a child run per grid point.

The tracking URI is ``MLFLOW_TRACKING_URI``, else ``sqlite:///lorasweep-out/mlflow.db`` (no
network; MLflow 3.13+ refuses a plain file store). The experiment is ``<project>/<sweep>``: the
project ``log.project`` (the sweep's grouping is kept inside it), else ``MLFLOW_EXPERIMENT_NAME``
names the whole experiment, else ``lorasweep/<sweep>``. An experiment made on an SQLite store keeps
its artifacts beside the database (``mlartifacts/``). Each run carries the trial's provenance as
tags (``lorasweep.sweep``, ``.study``, ``.variant``, ``.task``, ``.model``, ``.lr``, ``.seed``,
``.search``, ``.version``); with ``log.artifacts`` a completed trial's adapter is logged under
``adapter/``. Runs are found by their tags (``lorasweep.study``,
``lorasweep.point``), so a resumed trial (a preemption's retry, an adaptive search's next rung)
continues its point's run: steps the run already has are not logged again (MLflow would keep
both). The parent runs are made by the launcher before any worker starts (:func:`prepare`), so
workers sharing an SQLite store do not race to make them. Only :class:`MlflowClient` is used: no
global active run, no autologging, nothing of the command line.
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import Any

from ...config import TrialSpec
from ...paths import OUTPUT_DIR
from . import scalars

__all__ = ["MlflowSink", "experiment_name", "make_sink", "prepare", "provenance_tags",
           "tracking_uri", "where"]

_STUDY, _POINT, _PARENT = "lorasweep.study", "lorasweep.point", "mlflow.parentRunId"


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{(OUTPUT_DIR / 'mlflow.db').resolve()}"


def experiment_name(sweep: str, options: dict[str, Any] | None = None) -> str:
    """``PROJECT/SWEEP`` with ``log.project``, else ``MLFLOW_EXPERIMENT_NAME``, else
    ``lorasweep/SWEEP``."""
    project = (options or {}).get("project")
    if project:
        return f"{project}/{sweep}"
    return os.environ.get("MLFLOW_EXPERIMENT_NAME") or f"lorasweep/{sweep}"


def where(sweep: str, label: Any = str, options: dict[str, Any] | None = None) -> str:
    """The closing line: the tracking URI (a password masked by ``label``) and experiment."""
    return f"mlflow: experiment {experiment_name(sweep, options)} at {label(tracking_uri())}"


def _client():
    from mlflow.tracking import MlflowClient

    if "MLFLOW_TRACKING_URI" not in os.environ:
        OUTPUT_DIR.mkdir(exist_ok=True)
    return MlflowClient(tracking_uri=tracking_uri())


def _experiment(client: Any, sweep: str, options: dict[str, Any]) -> str:
    name = experiment_name(sweep, options)
    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    uri = tracking_uri()
    where = None
    if uri.startswith("sqlite:///"):  # the artifacts beside the database, not in the cwd
        where = (Path(uri[len("sqlite:///"):]).resolve().parent / "mlartifacts").as_uri()
    return client.create_experiment(name, artifact_location=where)


def _find(client: Any, experiment: str, **tags: str) -> Any:
    query = " and ".join(f"tags.`{k}` = '{v}'" for k, v in tags.items())
    runs = client.search_runs([experiment], filter_string=query, max_results=1,
                              order_by=["attributes.start_time ASC"])
    return runs[0] if runs else None


def _parent(client: Any, experiment: str, study: str) -> str:
    run = _find(client, experiment, **{_STUDY: study, "lorasweep.kind": "study"})
    if run is not None:
        return run.info.run_id
    name = "/".join(study.split("|")[1:4]) or study  # TASK/MODEL/VARIANT-TAG
    return client.create_run(experiment, run_name=name,
                             tags={_STUDY: study, "lorasweep.kind": "study"}).info.run_id


def prepare(sweep: str, studies: list[str], options: dict[str, Any] | None = None) -> None:
    """The sweep's experiment and a parent run per study, made once before the workers start."""
    client = _client()
    experiment = _experiment(client, sweep, options or {})
    for study in studies:
        _parent(client, experiment, study)


def provenance_tags(spec: TrialSpec, search: str) -> dict[str, str]:
    """The trial's provenance as run tags (searchable: ``tags.`lorasweep.lr` = '0.001'``)."""
    from ... import __version__

    return {"lorasweep.sweep": spec.sweep, "lorasweep.variant": spec.variant.key,
            "lorasweep.variant_tag": spec.variant.tag, "lorasweep.task": spec.task,
            "lorasweep.model": spec.model, "lorasweep.lr": repr(float(spec.lr)),
            "lorasweep.seed": str(spec.seed), "lorasweep.search": search,
            "lorasweep.version": __version__}


class MlflowSink:
    def __init__(self, options: dict[str, Any] | None = None) -> None:
        self.options = dict(options or {})
        self.client: Any = None
        self.spec: TrialSpec | None = None
        self.run_id = self.ref = ""
        self.logged: dict[str, int] = {}  # key -> the last step the run has
        self.last_step = 0
        self.metric = "score"

    def open(self, spec: TrialSpec, resume_step: int) -> None:
        from .. import trackers

        self.metric = trackers.metric_of(spec.task)
        self.client = client = _client()
        self.spec = spec
        experiment = _experiment(client, spec.sweep, self.options)
        parent = _parent(client, experiment, spec.study)
        point = Path(spec.run_dir).name
        run = _find(client, experiment, **{_STUDY: spec.study, _POINT: point})
        if run is None:
            search = str(self.options.get("search", ""))
            run = client.create_run(experiment, run_name=point,
                                    tags={_STUDY: spec.study, _POINT: point, _PARENT: parent,
                                          **provenance_tags(spec, search)})
            params = {k: str(v)[:500] for k, v in trackers.tracker_config(spec, search).items()
                      if k not in ("trial", "budget")}  # these change as the point resumes
            from mlflow.entities import Param

            items = [Param(k, v) for k, v in params.items()]
            for i in range(0, len(items), 100):
                client.log_batch(run.info.run_id, params=items[i:i + 100])
        else:
            client.update_run(run.info.run_id, status="RUNNING")
        self.run_id = self.ref = run.info.run_id
        self.logged = {key: max((m.step for m in client.get_metric_history(self.run_id, key)),
                                default=-1) for key in run.data.metrics}
        client.set_tag(self.run_id, "lorasweep.trial", str(spec.trial_number))

    def _log(self, values: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(k, float(v), now, step) for k, v in values.items()
                   if v is not None and math.isfinite(v) and step > self.logged.get(k, -1)]
        if metrics:
            self.client.log_batch(self.run_id, metrics=metrics)
            self.logged.update({m.key: step for m in metrics})

    def log(self, record: dict[str, Any]) -> None:
        step = self.last_step = int(record["step"])
        values = scalars(record, self.metric)
        self._log(values, step)

    def close(self, summary: dict[str, Any], state: str) -> None:
        if self.client is None:
            return
        finals = {k: float(v) for k, v in summary.items()
                  if isinstance(v, (int, float)) and not isinstance(v, bool)}
        finals["diverged"] = float(bool(summary.get("diverged")))
        if summary:
            self._log(finals, self.last_step)
        from . import adapter_files

        files = adapter_files(self.spec, state, self.options) if self.spec else []
        for path in files:  # the same path again: an export replaces, never adds
            self.client.log_artifact(self.run_id, str(path), artifact_path="adapter")
        status = {"completed": "FINISHED", "diverged": "FINISHED", "pruned": "FINISHED",
                  "stopped": "KILLED"}.get(state, "FAILED")
        self.client.set_tag(self.run_id, "lorasweep.state", state)
        self.client.set_terminated(self.run_id, status=status)
        self.client = None


def make_sink(replay: bool = False, options: dict[str, Any] | None = None) -> MlflowSink:
    return MlflowSink(options)  # a replay finds the point's run and skips the steps it has
