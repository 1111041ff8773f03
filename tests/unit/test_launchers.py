"""The launcher registry and its options: validated like variant options, from --set or a recipe."""

from __future__ import annotations

import pytest

from lorasweep.config import ConfigError, SweepSpec
from lorasweep.launch import LauncherError, get_launcher, get_launcher_class, launcher_registry
from lorasweep.launch.run import check_launcher
from lorasweep.sweep.spec import apply_overrides, build_spec


def test_registry_has_one_launcher_per_file():
    registry = launcher_registry()
    assert set(registry) == {"inline", "local", "slurm"}
    for key, cls in registry.items():
        assert cls.key == key and cls.__module__ == f"lorasweep.launch.{key}"


def test_unknown_launcher_and_option_are_named():
    with pytest.raises(LauncherError, match="unknown launcher 'pbs'.*inline"):
        get_launcher_class("pbs")
    with pytest.raises(LauncherError, match="unknown option 'nodes' for launcher 'local'"):
        get_launcher("local", options={"nodes": 2})


def test_recipe_mapping_and_set_override_reach_the_spec():
    data = {"launcher": {"key": "local"}}
    spec = build_spec(apply_overrides(data, ["launcher=inline"]))
    assert spec.launcher == "inline" and spec.launcher_options == {}
    with pytest.raises(ConfigError, match="unknown option 'partition' for launcher 'local'"):
        check_launcher(build_spec(apply_overrides({"launcher": "local"}, ["launcher.partition=gpu"])))


def test_bad_launcher_value_is_one_config_error():
    with pytest.raises(ConfigError, match="launcher"):
        build_spec({"launcher": 3})
    with pytest.raises(ConfigError, match="unknown launcher"):
        check_launcher(SweepSpec(launcher="nope"))


def test_slurm_refuses_the_default_sqlite_store_without_writing(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from lorasweep.cli import app

    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["run", "--launcher", "slurm", "--workers", "3"])
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    error = [line for line in lines if line.startswith("error:")]
    assert len(error) == 1 and "SQLite" in error[0] and "journal:" in error[0] and "PostgreSQL" in error[0]
    assert not any(tmp_path.iterdir())  # no store, no run folder


def test_slurm_options_are_checked_and_mapped_to_submitit():
    from lorasweep.launch.slurm import SlurmLauncher

    opts = SlurmLauncher.parse_options({"partition": "gpu", "time_min": "90", "gpus_per_task": 2,
                                        "mem_gb": 16, "setup": "module load cuda",
                                        "additional": {"exclusive": True}})
    params = opts.sbatch(workers=4)
    assert params["partition"] == "gpu" and params["time"] == 90 and params["gpus_per_task"] == 2
    assert params["mem"] == "16384MB" and params["setup"] == ["module load cuda"]
    assert params["array_parallelism"] == 4 and params["additional_parameters"] == {"exclusive": True}
    with pytest.raises(LauncherError, match="time_min must be an integer, got 'soon'"):
        SlurmLauncher.parse_options({"time_min": "soon"})
    with pytest.raises(LauncherError, match="positive"):
        SlurmLauncher.parse_options({"cpus_per_task": 0})


def test_slurm_study_recipe_is_the_study_on_a_cluster():
    from pathlib import Path

    from lorasweep.config import load_recipe

    root = Path(__file__).resolve().parents[2] / "recipes"
    cluster, study = load_recipe(root / "slurm-study-gsm8k.yaml"), load_recipe(root / "study-gsm8k.yaml")
    assert (root / "slurm-study-gsm8k.yaml").read_text().startswith(
        "# lorasweep run --recipe recipes/slurm-study-gsm8k.yaml")
    for key in ("storage", "launcher", "workers"):
        cluster.pop(key)
    assert cluster == study  # the same sweep: same studies, settings and grid
    spec = build_spec(load_recipe(root / "slurm-study-gsm8k.yaml"))
    check_launcher(spec)
    assert spec.launcher == "slurm" and spec.storage.startswith("journal:") and len(spec.lrs) == 8


def test_slurm_requeue_options_and_the_worker_resubmits_itself():
    import pickle

    from submitit.helpers import Checkpointable, DelayedSubmission

    from lorasweep.launch.slurm import SlurmLauncher, SlurmWorker

    opts = SlurmLauncher.parse_options({"time_min": 2, "signal_delay_s": "45", "max_num_timeout": 4})
    assert opts.sbatch(workers=1)["signal_delay_s"] == 45 and opts.max_num_timeout == 4
    for bad, match in (({"signal_delay_s": 0}, "signal_delay_s"),
                       ({"time_min": 1, "signal_delay_s": 60}, "below time_min"),
                       ({"max_num_timeout": -1}, "max_num_timeout")):
        with pytest.raises(LauncherError, match=match):
            SlurmLauncher.parse_options(bad)
    worker = SlurmWorker("/nonexistent/url", ["a", "b"])
    assert isinstance(worker, Checkpointable)
    again = pickle.loads(pickle.dumps(worker.checkpoint(3)))  # submitit pickles the resubmission
    assert isinstance(again, DelayedSubmission) and again.args == (3,)
    assert again.function == worker and again.function is not worker


def test_a_sweep_naming_no_launcher_gets_the_faster_one():
    from lorasweep.launch.local import default_launch

    assert default_launch(gpus=0, cores=2) == ("local", 2)  # measured: 1.06-1.10x inline's throughput
    assert default_launch(gpus=0, cores=32) == ("local", 2)
    assert default_launch(gpus=0, cores=1) == ("inline", 1)
    assert default_launch(gpus=1, cores=32) == ("inline", 1)  # one GPU: one worker either way
    assert default_launch(gpus=4, cores=32) == ("local", 4)  # one worker per GPU
