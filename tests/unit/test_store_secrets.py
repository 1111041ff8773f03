"""The one masking function, the store version, and the cheap store checks (no database needed)."""

from __future__ import annotations

import pytest

from lorasweep.config import ConfigError, SweepSpec
from lorasweep.launch.run import check_spec
from lorasweep.sweep.store import (
    STORE_VERSION,
    STORE_VERSION_ATTR,
    StorageError,
    check_storage,
    mask_secrets,
    open_storage,
    storage_label,
)


@pytest.mark.parametrize("url, label", [
    ("postgresql+psycopg://u:S3CRETPW@h:5432/db", "postgresql+psycopg://u:***@h:5432/db"),
    ("postgresql+psycopg://u:S3C@RET@h/db", "postgresql+psycopg://u:***@h/db"),
    ("postgresql+psycopg://u:S3%40C%3ART%25@h/db", "postgresql+psycopg://u:***@h/db"),
    ("postgresql+psycopg://u:a:b/c@h/db", "postgresql+psycopg://u:***@h/db"),
    ("postgresql+psycopg://u@h/db?password=S3CRETPW&sslmode=require",
     "postgresql+psycopg://u@h/db?password=***&sslmode=require"),
    ("postgresql://h/db?sslmode=require&sslpassword=S3CRETPW",
     "postgresql://h/db?sslmode=require&sslpassword=***"),
    ("postgresql+psycopg://u@h/db", "postgresql+psycopg://u@h/db"),
    ("sqlite:////data/a@b/studies.db", "sqlite:////data/a@b/studies.db"),
    ("journal:/data/studies.journal", "journal:/data/studies.journal"),
])
def test_storage_label_masks_every_password_form(url, label):
    assert storage_label(url) == label
    assert "S3C" not in storage_label(url)


def test_mask_secrets_in_free_text(monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_abcdefTOKEN")
    url = "postgresql+psycopg://u:p%40ss%2Fw@h/db"
    text = (f"connecting to {url} failed (password p@ss/w rejected); "
            "header Authorization: Bearer hf_abcdefTOKEN")
    masked = mask_secrets(text, url)
    assert "p@ss" not in masked and "p%40ss" not in masked and "hf_abcdefTOKEN" not in masked
    assert "postgresql+psycopg://u:***@h/db" in masked


def test_each_study_records_the_store_version(tmp_path):
    import optuna

    from lorasweep.sweep.study import sync_sweep

    url = f"sqlite:///{tmp_path / 's.db'}"
    spec = SweepSpec(storage=url, lrs=[1e-3], runs_dir=str(tmp_path / "runs"))
    sync_sweep(spec, open_storage(url))
    (study,) = optuna.get_all_study_summaries(url)
    assert study.user_attrs[STORE_VERSION_ATTR] == STORE_VERSION
    assert study.user_attrs["lorasweep_version"]


def test_a_newer_store_version_is_refused(tmp_path):
    import optuna

    url = f"sqlite:///{tmp_path / 's.db'}"
    study = optuna.create_study(study_name="x", storage=url)
    study.set_user_attr(STORE_VERSION_ATTR, STORE_VERSION + 1)
    with pytest.raises(StorageError, match="newer lorasweep"):
        open_storage(url, create=False)


@pytest.mark.parametrize("lr, ok", [(10.0, True), (1e-12, True), (10.5, False), (1e5, False)])
def test_learning_rates_lie_in_0_to_10_unless_any_is_allowed(lr, ok):
    spec = SweepSpec(lrs=[lr])
    if ok:
        check_spec(spec)
    else:
        with pytest.raises(ConfigError, match="--allow-any-lr"):
            check_spec(spec)
    check_spec(SweepSpec(lrs=[lr], allow_any_lr=True))
    with pytest.raises(ConfigError, match="positive"):
        check_spec(SweepSpec(lrs=[0.0], allow_any_lr=True))


@pytest.mark.parametrize("seed", [-1, 2**31, 1.5, "x"])
def test_seeds_are_non_negative_integers(seed):
    with pytest.raises(ConfigError, match="seed"):
        check_spec(SweepSpec(seeds=[seed]))


def test_cheap_checks_write_nothing(tmp_path):
    (tmp_path / "f").write_text("x")
    for url in (f"sqlite:///{tmp_path}/f/s.db", f"journal:{tmp_path}/f/s.journal"):
        with pytest.raises(StorageError, match="is a file, not a folder"):
            check_storage(url)
    check_storage(f"sqlite:///{tmp_path}/new/s.db")  # creatable: fine, and not created yet
    assert not (tmp_path / "new").exists()
    (tmp_path / "junk.db").write_bytes(b"\x00" * 100)
    with pytest.raises(StorageError, match="not a lorasweep study store"):
        check_storage(f"sqlite:///{tmp_path}/junk.db")
    assert (tmp_path / "junk.db").read_bytes() == b"\x00" * 100


# URLs whose credentials lorasweep and the driver could split apart: lorasweep reads them with
# the driver's own grammar, so both agree on the user, the password and what follows.
TRICKY_URLS = [
    "postgresql+psycopg://puser:S3CR@ETPW@127.0.0.1:1/postgres",
    "postgresql+psycopg://u:a:b/c@h/db",
    "postgresql+psycopg://u:pa?ss@h:5/db?sslmode=require",
    "postgresql+psycopg://u@tenant:pw@h/db",
    "postgresql+psycopg://u:S3%40C%3ART%25@h/db",
    "postgresql://h/db?application_name=a@b",
    "postgresql+psycopg://:pw@h/db",
]


@pytest.mark.parametrize("url", TRICKY_URLS)
def test_lorasweep_splits_credentials_where_the_driver_does(url):
    from urllib.parse import unquote

    from sqlalchemy.engine import make_url

    from lorasweep.sweep.urls import _split_credentials

    parsed = make_url(url)
    _, user, password, _, _ = _split_credentials(url)
    assert (user and unquote(user)) == parsed.username
    assert (password and unquote(password)) == parsed.password
    if parsed.password:
        assert parsed.password not in storage_label(url)


@pytest.mark.parametrize("url, label", [
    ("postgresql+psycopg://puser:S3CR@ETPW@127.0.0.1:1/postgres",
     "postgresql+psycopg://puser:***@127.0.0.1:1/postgres"),
    ("postgresql+psycopg://u:S3cr@t:p%w/d-9f2c@127.0.0.1:5/db", "postgresql+psycopg://u:***@127.0.0.1:5/db"),
])
def test_a_bare_at_in_a_password_is_refused_before_connecting(url, label):
    with pytest.raises(StorageError) as err:
        check_storage(url)
    assert str(err.value).startswith(f"storage {label}: the password holds '@'")
    assert "%40" in str(err.value)
    for fragment in ("S3CR", "ETPW", "S3cr", "9f2c"):
        assert fragment not in str(err.value)
    with pytest.raises(StorageError, match="%40"):
        open_storage(url)  # the same refusal, before any driver sees the URL
    assert storage_label(url) == label


def test_mask_secrets_scrubs_every_fragment_a_driver_quotes():
    url = "postgresql+psycopg://puser:S3CR@ETPW@127.0.0.1:1/postgres"
    driver = "failed to resolve host 'ETPW@127.0.0.1': [Errno -2] Name or service not known"
    assert "ETPW" not in mask_secrets(driver, url) and "127.0.0.1" in mask_secrets(driver, url)
    quoted = "password 'p@ss/wd9' rejected; near 'ss/wd9'"
    escaped = "postgresql+psycopg://u:p%40ss%2Fwd9@h/db"
    assert "wd9" not in mask_secrets(quoted, escaped) and "rejected" in mask_secrets(quoted, escaped)
