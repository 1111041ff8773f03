"""Storage URLs: the default store, the journal form, and their secrets masked.

Secrets: a URL may hold a password (``user:PW@host`` or ``?password=PW``). :func:`storage_label`
is the one masking function: every line printed, every file written and every attribute stored
carries the label (``user:***@host``), never the URL. Only the launchers hand the real URL to
their workers (a function argument, the environment or a private file), never through the store.
Opening a store, and its errors: :mod:`.store`.
"""

from __future__ import annotations

import os
import re
from urllib.parse import unquote

from ..paths import STORE_FILE

__all__ = ["SECRET_ENV", "dashboard_command", "default_storage_url", "journal_path", "mask_secrets",
           "port_of", "sqlite_path", "storage_label", "store_file", "stray_credentials"]

_SECRET_QUERY_KEY = re.compile(r"(pass(word|wd)?|pwd|secret|token|api_?key|sslpassword)$", re.I)
#: Environment variables whose values are secrets (never printed, written or stored).
SECRET_ENV = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HUGGINGFACE_HUB_TOKEN", "PGPASSWORD",
              "MLFLOW_TRACKING_TOKEN", "MLFLOW_TRACKING_PASSWORD", "WANDB_API_KEY")
_URL_IN_TEXT = re.compile(r"[A-Za-z][\w+.-]*://[^\s'\"<>]+")
_SQLITE = "sqlite:///"
_FRAGMENT_END = re.compile(r"[@:/?#&=%\s]+")


def default_storage_url() -> str:
    """``sqlite:///`` and the absolute path of ``lorasweep-out/studies.db`` here."""
    return f"sqlite:///{STORE_FILE.resolve()}"


# The credentials as SQLAlchemy's URL grammar reads them (the driver gets what it parses): a user
# without ':' or '/', then ':' and a password up to the FIRST '@'. So the part lorasweep masks is
# the part the driver treats as the password (tests/unit/test_store_secrets.py compares the two).
_CREDENTIALS = re.compile(r"([^:/]*)(?::([^@]*))?@")


def _split_credentials(url: str) -> tuple[str, str | None, str | None, str, str]:
    """``(scheme, user, password, host/path, query)`` as the database driver reads the URL."""
    scheme, _, rest = url.partition("://")
    match = _CREDENTIALS.match(rest)
    user = password = None
    if match:
        user, password, rest = match.group(1), match.group(2), rest[match.end():]
    host, _, query = rest.partition("?")
    return scheme, user, password, host, query


def _stray_split(host: str) -> tuple[str | None, str]:
    """``(stray, host)``: what stands before the last ``@`` of the host and path (None when they
    hold none: the driver's grammar leaves an ``@`` there only when a password held one), and
    the host/path after it."""
    if "@" not in host:
        return None, host
    stray, _, rest = host.rpartition("@")
    return stray, rest


def stray_credentials(url: str) -> str | None:
    """What stands before an ``@`` after the credentials of ``url`` (``user:S3CR@ETPW@host``: the
    driver ends the password at the first ``@`` and looks for the host ``ETPW@host``), else None.
    Such a URL is refused before connecting (write the password's ``@`` as ``%40``); its label
    masks the stray part too."""
    if "://" not in url or url.startswith(_SQLITE):
        return None
    return _stray_split(_split_credentials(url)[3])[0]


def storage_label(url: str | None) -> str:
    """The URL with every secret replaced by ``***``: the only form that is printed or stored.

    ``postgresql+psycopg://user:p@ss@host/db?sslpassword=x`` becomes
    ``postgresql+psycopg://user:***@host/db?sslpassword=***``.
    """
    if url is None:
        return default_storage_url()
    if "://" not in url:
        return url
    scheme, user, password, host, query = _split_credentials(url)
    creds = "" if user is None else (f"{user}:***@" if password is not None else f"{user}@")
    stray, rest = _stray_split(host) if not url.startswith(_SQLITE) else (None, host)
    if stray is not None:  # the rest of a password with an unescaped '@'
        creds, host = (creds or "***@"), rest
    if query:
        parts = []
        for item in query.split("&"):
            key, sep, value = item.partition("=")
            parts.append(f"{key}=***" if sep and _SECRET_QUERY_KEY.search(unquote(key)) else item)
        query = "?" + "&".join(parts)
    return f"{scheme}://{creds}{host}{query}"


def _secrets_of(url: str) -> list[str]:
    if "://" not in url:
        return []
    _, _, password, host, query = _split_credentials(url)
    stray = _stray_split(host)[0] if not url.startswith(_SQLITE) else None
    found = [p for p in (password, stray, f"{password}@{stray}" if password and stray else None) if p]
    for item in query.split("&") if query else []:
        key, sep, value = item.partition("=")
        if sep and value and _SECRET_QUERY_KEY.search(unquote(key)):
            found.append(value)
    return found


def mask_secrets(text: str, *urls: str | None) -> str:
    """``text`` with the secrets of ``urls`` and of the environment (tokens) replaced by ``***``.

    For free text that may quote a URL or a secret: a driver's error message, a traceback.
    """
    secrets: set[str] = set()
    for url in filter(None, urls):
        for secret in _secrets_of(url):
            for form in (secret, unquote(secret)):
                # and every fragment a driver may quote alone (``ETPW@host`` of ``S3CR@ETPW``)
                secrets.update({form, *_FRAGMENT_END.split(form)})
    secrets.update(v for k in SECRET_ENV if (v := os.environ.get(k)))
    text = _URL_IN_TEXT.sub(lambda m: storage_label(m.group(0)), text)
    for secret in sorted((s for s in secrets if len(s) >= 3), key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


def journal_path(url: str) -> str | None:
    """The file of a journal store (``journal:PATH``, or a path ending in ``.journal``/``.log``),
    else None."""
    if url.startswith("journal:"):
        return url.split(":", 1)[1]
    if "://" not in url and url.endswith((".journal", ".log")):
        return url
    return None


def port_of(url: str) -> str:
    """The port of a server URL as written (``""`` when it names none)."""
    authority = _split_credentials(url)[3].split("/", 1)[0]
    return authority.rsplit("]", 1)[-1].partition(":")[2] if ":" in authority else ""


def sqlite_path(url: str) -> str | None:
    """The file of an SQLite store URL (``sqlite:///PATH``), else None."""
    return url[len(_SQLITE):] if url.startswith(_SQLITE) else None


def store_file(url: str) -> str | None:
    """The file of a journal or SQLite store, else None (a server's store)."""
    journal = journal_path(url)
    return sqlite_path(url) if journal is None else journal


def dashboard_command(url: str | None) -> str:
    """The ``optuna-dashboard`` command that opens the store at ``url``, secrets left out.

    optuna-dashboard reads SQLite and PostgreSQL URLs as lorasweep writes them, and a journal as
    its bare path (it does not know ``journal:``). A server's password is never printed: the
    command names the user alone and the server's client takes the password from ``PGPASSWORD``
    (or ``~/.pgpass``).
    """
    import shlex

    url = url or default_storage_url()
    journal = journal_path(url)
    if journal is not None:
        return f"optuna-dashboard {shlex.quote(os.path.abspath(os.path.expanduser(journal)))}"
    if "://" in url and not url.startswith(_SQLITE):
        scheme, user, password, host, query = _split_credentials(url)
        if password is not None:
            label = storage_label(f"{scheme}://{user}@{host}" + (f"?{query}" if query else ""))
            return f"PGPASSWORD=... optuna-dashboard {shlex.quote(label)}"
    return f"optuna-dashboard {shlex.quote(storage_label(url))}"
