"""One resolver for task keys: built-ins, ``module:Class`` and the ``lorasweep.tasks`` entry points
(the test package in tests/plugins, found through a real ``.dist-info`` on ``sys.path``)."""

from __future__ import annotations

import pytest
from helpers import PLUGINS, install_plugins

from lorasweep.sweep.spec import task_class
from lorasweep.tasks import (
    TaskError,
    find_task,
    list_plugins,
    list_tasks,
    make_task,
    resolve_task,
    task_ref,
    task_registry,
)


@pytest.fixture
def plugins(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(PLUGINS))
    monkeypatch.syspath_prepend(str(install_plugins(tmp_path / "site")))


def test_builtin_keys_resolve_to_their_registered_class():
    for key, cls in task_registry().items():
        assert resolve_task(key) is cls and task_ref(key) == key


def test_module_class_imports_the_class_and_is_stored_as_its_path(plugins):
    cls = resolve_task("reviews_pkg.tasks:ReviewTask")
    assert cls.__name__ == "ReviewTask" and cls.key == "reviews"
    assert task_ref("reviews_pkg.tasks:ReviewTask") == "reviews_pkg.tasks:ReviewTask"
    task = make_task("reviews_pkg.tasks:ReviewTask", eval_limit=2)
    assert len(task.load().validation) == 2
    assert task_class("reviews_pkg.tasks:ReviewTask") is cls  # the sweep's defaults come from it


def test_an_entry_point_name_resolves_and_stores_the_module_class(plugins):
    cls = resolve_task("reviews")
    assert cls is resolve_task("reviews_pkg.tasks:ReviewTask")
    assert task_ref("reviews") == "reviews_pkg.tasks:ReviewTask"


def test_a_builtin_key_wins_over_a_plugin_of_the_same_name(plugins):
    assert resolve_task("sentiment") is task_registry()["sentiment"]


def test_a_broken_plugin_fails_only_when_asked_for_and_the_error_names_it(plugins):
    assert resolve_task("reviews").key == "reviews"  # the broken one is not imported for this
    with pytest.raises(TaskError, match=r"cannot import plugin 'broken' \(reviews_broken:Task\) "
                                        r"\(RuntimeError: reviews_broken needs a database"):
        resolve_task("broken")
    assert find_task("broken") is None


@pytest.mark.parametrize(("key", "words"), [
    ("reviews_pkg.tasks:NotATask", "is not a lorasweep Task"),
    ("reviews_pkg.tasks:Shadow", "has key 'sentiment', which shadows a built-in task"),
    ("reviews_pkg.tasks:Missing", "AttributeError"),
    ("no_such_pkg.tasks:ReviewTask", "ModuleNotFoundError: No module named 'no_such_pkg'"),
    ("reviews_pkg.tasks:", "module:Class"),
    ("nope", "unknown task 'nope'"),
])
def test_a_key_that_gives_no_task_is_one_line_naming_it(plugins, key, words):
    with pytest.raises(TaskError) as err:
        resolve_task(key)
    assert words in str(err.value) and "\n" not in str(err.value)


def test_the_listing_shows_plugins_and_marks_the_broken_and_the_shadowing(plugins):
    rows = {r["key"]: r for r in list_plugins()}
    assert rows["reviews"]["error"] == ""
    assert "RuntimeError" in rows["broken"]["error"]
    assert "shadows a built-in" in rows["sentiment"]["error"]
    listed = {r["key"]: r for r in list_tasks()}
    assert listed["reviews"]["summary"].startswith("plugin reviews_pkg.tasks:ReviewTask")
    assert listed["broken"]["summary"].startswith("BROKEN plugin")
    assert listed["sentiment"]["summary"] == task_registry()["sentiment"].summary  # built-in row
    assert "shadows a built-in" in listed["sentiment (plugin)"]["summary"]
