"""Storage URLs: where they come from, how they are normalised, how they are shown."""

from __future__ import annotations

import os
import re
from pathlib import Path

ENV_VAR = "TUNEFLEET_STORAGE"
# Journal file, not SQLite: Optuna's journal storage appends under a file lock
# and is built for several processes at once, where SQLite answers concurrent
# writers with "database is locked"; optuna-dashboard reads both.
DEFAULT_PATH = Path(".tunefleet") / "journal.log"


def resolve_url(url: str | None = None) -> str:
    """The --storage value, else $TUNEFLEET_STORAGE, else the embedded default."""
    url = url or os.environ.get(ENV_VAR) or f"journal:{DEFAULT_PATH}"
    return normalise(url)


def normalise(url: str) -> str:
    """psycopg2 for PostgreSQL (SQLAlchemy 2.1 maps a bare postgresql:// to psycopg 3);
    a plain file path means a journal file."""
    if url.startswith(("postgresql://", "postgres://")):
        return "postgresql+psycopg2://" + url.split("://", 1)[1]
    if "://" not in url and not url.startswith("journal:"):
        return f"journal:{url}"
    return url


def journal_path(url: str) -> Path | None:
    """The journal file of a journal URL, else None."""
    if not url.startswith("journal:"):
        return None
    return Path(url[len("journal:"):].removeprefix("//")).expanduser().absolute()


def grpc_address(url: str) -> tuple[str, int] | None:
    """(host, port) of a coordinator's storage proxy URL, grpc://HOST:PORT, else None."""
    if not url.startswith("grpc://"):
        return None
    host, _, port = url[len("grpc://"):].rstrip("/").rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"a coordinator's address is grpc://HOST:PORT, not {url}")
    return host, int(port)


_QUERY_PASSWORD = r"([?&]password=)([^&]*)"  # libpq and SQLAlchemy take it from the query string too


def redact(url: str) -> str:
    """The URL with any password (user:PASSWORD@, ?password=) replaced by ***."""
    url = re.sub(r"(://[^:/@]*:).*@", r"\1***@", url)  # to the last @: passwords may hold one
    return re.sub(_QUERY_PASSWORD, r"\1***", url)


def scrub(text: str, url: str) -> str:
    """Text with the URL's passwords, wherever they appear, replaced by ***."""
    for m in (re.search(r"://[^:/@]*:(.*)@", url), re.search(_QUERY_PASSWORD, url)):
        secret = m and m.group(m.lastindex)
        if secret and secret != "***":
            text = text.replace(secret, "***")
    return text
