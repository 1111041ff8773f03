"""The trackers' options (``log.project``, ``log.artifacts``, ``log.every``) from a recipe and from
``--set``, where each backend puts the project, and W&B's offline mode as ``wandb offline``
writes it (its settings file) or as the environment says."""

from __future__ import annotations

import pytest

from lorasweep.config import ConfigError, SweepSpec
from lorasweep.sweep.spec import apply_overrides
from lorasweep.train.trackers import mlflow as mlflow_sink
from lorasweep.train.trackers import wandb as wandb_sink


def test_a_recipes_log_mapping_and_set_give_the_same_options():
    recipe = SweepSpec.from_dict({"log": {"trackers": ["mlflow", "wandb"], "project": "lab",
                                          "artifacts": True, "every": 5}}).validate()
    assert recipe.log == ["mlflow", "wandb"]
    assert recipe.log_options == {"project": "lab", "artifacts": True, "every": 5}
    data = apply_overrides({"log": "mlflow,wandb"}, ["log.project=lab", "log.artifacts=true",
                                                     "log.every=5"])
    flags = SweepSpec.from_dict(data).validate()
    assert (flags.log, flags.log_options) == (recipe.log, recipe.log_options)
    with pytest.raises(ConfigError, match="log.project must be a name"):
        SweepSpec.from_dict({"log": {"trackers": ["wandb"], "project": "my lab"}}).validate()
    with pytest.raises(ConfigError, match="unknown log option 'colour': known are every, "
                                          "project, artifacts"):
        SweepSpec.from_dict({"log": {"colour": 1}}).validate()


def test_the_project_names_the_wandb_project_and_the_mlflow_experiment(monkeypatch):
    monkeypatch.delenv("WANDB_PROJECT", raising=False)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
    assert wandb_sink.project({}) == "lorasweep"  # the default, as before
    assert mlflow_sink.experiment_name("sw", {}) == "lorasweep/sw"
    monkeypatch.setenv("WANDB_PROJECT", "env-project")
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "env-experiment")
    assert wandb_sink.project({}) == "env-project"
    assert mlflow_sink.experiment_name("sw", {}) == "env-experiment"
    # log.project wins; MLflow keeps the sweep's grouping inside it
    assert wandb_sink.project({"project": "lab"}) == "lab"
    assert mlflow_sink.experiment_name("sw", {"project": "lab"}) == "lab/sw"


def test_wandb_mode_reads_the_environment_then_the_settings_files(tmp_path, monkeypatch):
    work, config = tmp_path / "work", tmp_path / "config"
    (work / "wandb").mkdir(parents=True)
    config.mkdir()
    monkeypatch.chdir(work)
    for name in ("WANDB_MODE", "WANDB_DIR", "WANDB_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(config))
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    assert wandb_sink.mode() == "" and wandb_sink.check_access() is not None
    (config / "settings").write_text("[default]\nmode = offline\n")  # the user's settings
    assert wandb_sink.mode() == "offline" and wandb_sink.check_access() is None
    (work / "wandb" / "settings").write_text("[default]\nmode = online\n")  # the workspace's win
    assert wandb_sink.mode() == "online" and wandb_sink.check_access() is not None
    monkeypatch.setenv("WANDB_MODE", "offline")  # and the environment wins over both
    assert wandb_sink.mode() == "offline" and wandb_sink.check_access() is None
