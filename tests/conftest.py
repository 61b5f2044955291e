"""Test-wide settings."""

import pytest
from twisted.logger import globalLogPublisher


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
