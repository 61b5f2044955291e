"""Test-wide settings."""

import pytest
from twisted.logger import globalLogPublisher


#: modules whose tests run on both store engines (the session rules over SQLite, then over PostgreSQL)
BOTH_ENGINES = {"test_server_protocol", "test_conversations", "test_moderation", "test_session_core"}


def pytest_generate_tests(metafunc):
    if "store_engine" in metafunc.fixturenames:
        both = metafunc.module.__name__.rsplit(".", 1)[-1] in BOTH_ENGINES
        metafunc.parametrize("store_engine", ["sqlite", "postgresql"] if both else ["sqlite"], indirect=True,
                             ids=(lambda e: "" if e == "sqlite" else "pg") if both else (lambda e: ""))


@pytest.fixture(scope="session")
def pg_server():
    """One throw-away PostgreSQL server for the whole run (tests.pgserver), or a skip when it is not installed."""
    from . import pgserver

    if pgserver.binaries() is None:
        pytest.skip("PostgreSQL is not installed (apt-get install postgresql; scripts/test does this as root)")
    server = pgserver.PgServer(fsync=False).start()
    yield server
    server.destroy()


@pytest.fixture(autouse=True)
def store_engine(request):
    """The engine tests.helpers.make_factory gives its stores (parametrized in BOTH_ENGINES modules)."""
    from . import helpers

    engine = getattr(request, "param", "sqlite")
    if engine == "postgresql":
        helpers.PG = request.getfixturevalue("pg_server")
    helpers.ENGINE = engine
    yield engine
    helpers.ENGINE = "sqlite"


def pytest_configure(config):
    config.addinivalue_line("markers", "tracebacks_expected: the test provokes a logged server traceback on purpose")
    config.addinivalue_line("markers", "server_options(*args): extra twistd tcpchat options for the test's server")


@pytest.fixture(autouse=True)
def _run_in_a_temporary_directory(tmp_path, monkeypatch):
    """Every test runs with a temporary working directory, so nothing it writes
    (trial's ``mktemp()`` directories, big test files) lands in the checkout."""
    monkeypatch.chdir(tmp_path)


@pytest.fixture(autouse=True)
def _no_server_tracebacks(request):
    """
    Fail any test during which a server logged a traceback: an in-process
    server through twisted.logger, or a real ``twistd`` in its output.
    """
    from . import procs

    procs.STARTED.clear()
    failures = []

    def observer(event):
        if event.get("log_failure") is not None and str(event.get("log_namespace", "")).startswith("tcpchat"):
            failures.append(event)

    globalLogPublisher.addObserver(observer)
    try:
        yield
    finally:
        globalLogPublisher.removeObserver(observer)
    if request.node.get_closest_marker("tracebacks_expected"):
        return
    assert not failures, "a server logged a traceback: " + repr(failures[0].get("log_failure"))
    for output in procs.STARTED:
        text = output() if callable(output) else output
        assert "Traceback" not in text and "Unhandled" not in text, "a twistd server logged a traceback:\n" + text
