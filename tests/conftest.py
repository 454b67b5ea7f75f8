"""Shared pytest fixtures: a database URL and an opened Store for each backend.

``store_url`` runs every test once on SQLite (a file under tmp_path) and once on PostgreSQL,
in a throw-away schema of the server named by ``VISKOM_TEST_POSTGRES_URL``. Without that
variable the PostgreSQL runs are skipped, unless ``VISKOM_REQUIRE_POSTGRES=1`` (CI), which
turns the skip into a failure.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import create_engine, make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import NullPool

from viskom.store import Store

POSTGRES_URL_ENV = "VISKOM_TEST_POSTGRES_URL"
REQUIRE_POSTGRES_ENV = "VISKOM_REQUIRE_POSTGRES"


def _postgres_required() -> bool:
    return os.environ.get(REQUIRE_POSTGRES_ENV, "").strip().lower() in {"1", "true", "yes"}


def _postgres_base_url() -> str:
    """The PostgreSQL server URL, or skip (fail if required) when it is not configured."""
    url = os.environ.get(POSTGRES_URL_ENV, "").strip()
    if url:
        return url
    message = (
        f"{POSTGRES_URL_ENV} is not set; PostgreSQL store tests need a server URL such as "
        "postgresql+psycopg://postgres@127.0.0.1:5432/test"
    )
    if _postgres_required():
        pytest.fail(f"{REQUIRE_POSTGRES_ENV}=1 but {message}", pytrace=False)
    pytest.skip(message)


def _with_search_path(url: str, schema: str) -> str:
    """``url`` with libpq options making ``schema`` the only schema on the search path.

    The session time zone is set far from UTC, so that tests catch any dependence on it.
    """
    parsed = make_url(url)
    options = f"-csearch_path={schema} -ctimezone=Pacific/Chatham"
    existing = parsed.query.get("options")
    if existing:
        options = f"{existing if isinstance(existing, str) else ' '.join(existing)} {options}"
    return parsed.update_query_dict({"options": options}).render_as_string(hide_password=False)


def _postgres_schema_url() -> Iterator[str]:
    """Create a fresh schema, yield a URL that uses it, drop it (CASCADE) afterwards."""
    base_url = _postgres_base_url()
    schema = f"viskom_t_{uuid.uuid4().hex[:16]}"
    admin = create_engine(base_url, poolclass=NullPool)
    try:
        with admin.begin() as connection:
            connection.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    except SQLAlchemyError as err:
        admin.dispose()
        pytest.fail(f"cannot create a test schema on {POSTGRES_URL_ENV}: {err}", pytrace=False)
    try:
        yield _with_search_path(base_url, schema)
    finally:
        with admin.begin() as connection:
            connection.exec_driver_sql("SET LOCAL lock_timeout = '20s'")
            connection.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        admin.dispose()


@pytest.fixture(autouse=True, scope="session")
def _private_cache_folder(tmp_path_factory: pytest.TempPathFactory) -> None:
    """`viskom status` keeps its view of the settings in $XDG_CACHE_HOME: the tests' own
    (and their subprocesses'), not the user's."""
    os.environ["XDG_CACHE_HOME"] = str(tmp_path_factory.mktemp("xdg-cache"))


@pytest.fixture(
    params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)],
)
def store_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """Database URL of an empty database, once per backend."""
    if request.param == "sqlite":
        folder = tmp_path_factory.mktemp("store")
        # A missing sub-folder: Store must create it.
        yield f"sqlite:///{folder / 'db' / 'viskom.db'}"
    else:
        yield from _postgres_schema_url()


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    """An opened (migrated) Store on ``store_url``, closed after the test."""
    with Store(store_url) as opened:
        yield opened
