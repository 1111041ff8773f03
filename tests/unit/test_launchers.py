"""The launcher registry and its options: validated like variant options, from --set or a recipe."""

from __future__ import annotations

import pytest

from lorasweep.config import ConfigError, SweepSpec, apply_overrides
from lorasweep.launch import LauncherError, get_launcher, get_launcher_class, launcher_registry


def test_registry_has_one_launcher_per_file():
    registry = launcher_registry()
    assert {"inline", "local"} <= set(registry)
    for key, cls in registry.items():
        assert cls.key == key and cls.__module__ == f"lorasweep.launch.{key}"


def test_unknown_launcher_and_option_are_named():
    with pytest.raises(LauncherError, match="unknown launcher 'pbs'.*inline"):
        get_launcher_class("pbs")
    with pytest.raises(LauncherError, match="unknown option 'nodes' for launcher 'local'"):
        get_launcher("local", options={"nodes": 2})


def test_recipe_mapping_and_set_override_reach_the_spec():
    data = {"launcher": {"key": "local"}}
    spec = SweepSpec.from_dict(apply_overrides(data, ["launcher=inline"]))
    assert spec.launcher == "inline" and spec.launcher_options == {}
    with pytest.raises(ConfigError, match="unknown option 'partition' for launcher 'local'"):
        SweepSpec.from_dict(apply_overrides({"launcher": "local"}, ["launcher.partition=gpu"]))._validate_launcher()


def test_bad_launcher_value_is_one_config_error():
    with pytest.raises(ConfigError, match="launcher"):
        SweepSpec.from_dict({"launcher": 3})
    with pytest.raises(ConfigError, match="unknown launcher"):
        SweepSpec(launcher="nope")._validate_launcher()
