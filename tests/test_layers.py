"""The layers stay visible: imports point one way, no module or class grows into a second product."""

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent / "tcpchat"


def module_name(path: pathlib.Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


MODULES = {module_name(p): p for p in ROOT.rglob("*.py")}


def imports_of(name: str) -> set:
    """Every tcpchat module ``name`` imports, at the top or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(MODULES[name].read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            targets = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        else:
            continue
        found.update(t for t in targets if t in MODULES and t != name)
    return found


GRAPH = {name: imports_of(name) for name in MODULES}


def test_no_import_cycles():
    seen, stack, cycles = set(), [], []

    def visit(name):
        if name in stack:
            cycles.append(stack[stack.index(name):] + [name])
            return
        if name in seen:
            return
        seen.add(name)
        stack.append(name)
        for target in sorted(GRAPH[name]):
            visit(target)
        stack.pop()

    for name in sorted(GRAPH):
        visit(name)
    assert cycles == []


@pytest.mark.parametrize("lower, higher", [
    ("tcpchat.wire", "tcpchat.server"), ("tcpchat.wire", "tcpchat.client"), ("tcpchat.wire", "tcpchat.store"),
    ("tcpchat.store", "tcpchat.server"), ("tcpchat.store", "tcpchat.client"),
    ("tcpchat.server", "tcpchat.client"), ("tcpchat.server", "tcpchat.ui"),
    ("tcpchat.client", "tcpchat.server"), ("tcpchat.client", "tcpchat.ui"), ("tcpchat.client", "tcpchat.store"),
])
def test_imports_point_one_way(lower, higher):
    """A layer never imports a layer above it (or beside it)."""
    wrong = {(name, target) for name, targets in GRAPH.items() if name.startswith(lower)
             for target in targets if target.startswith(higher)}
    assert wrong == set()


def test_the_tcp_transport_is_thin_and_knows_no_store():
    protocol = "tcpchat.server.protocol"
    assert len(MODULES[protocol].read_text().splitlines()) < 300
    assert not {t for t in GRAPH[protocol] if t.startswith("tcpchat.store")}


def test_no_class_over_about_400_lines():
    big = []
    for name, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef) and node.end_lineno - node.lineno + 1 > 420:
                big.append((name, node.name, node.end_lineno - node.lineno + 1))
    assert big == []


def test_every_client_frame_has_one_handler_a_state_and_a_cost():
    from tcpchat import wire
    from tcpchat.server import protocol  # noqa: F401  (registers the handlers)
    from tcpchat.server.table import ANY, COSTS, EDITS, HANDLERS, LOGGED_IN, PROFILES, ROOMS

    assert set(HANDLERS) == set(wire.CLIENT_FRAMES) == set(COSTS)
    assert {needs for needs, _ in HANDLERS.values()} <= {ANY, LOGGED_IN, ROOMS, EDITS, PROFILES}
    assert {k for k, (needs, _) in HANDLERS.items() if needs == ANY} == {"hello", "pake-confirm", "ping", "pong", "bye"}


def test_sessions_keep_the_contract():
    """The session core provides what the rules may use (zope.interface verifyObject), with no transport at all."""
    from zope.interface.verify import verifyObject

    from tcpchat.server.session import ILink, ISession, Session

    from .sessiontools import FakeLink, make_session_factory

    factory = make_session_factory()
    link = FakeLink()
    session = Session(factory, link, "192.0.2.1", "192.0.2.1:1")
    assert verifyObject(ISession, session)
    assert verifyObject(ILink, link)


@pytest.mark.parametrize("module", ["client.js", "transport.js", "commands.js", "spake2.js"])
def test_the_browser_clients_core_never_touches_the_page(module):
    """Only app.js (the view) knows the DOM; the core, its transports and commands would run in a worker or Node."""
    source = (ROOT / "web" / module).read_text()
    code = "\n".join(line.split("//")[0] for line in source.splitlines())
    for name in ("document.", "window.", "getElementById", "querySelector", "innerHTML"):
        assert name not in code, f"{module} uses {name}"


def test_the_browser_view_never_touches_a_socket():
    source = (ROOT / "web" / "app.js").read_text()
    for name in ("new WebSocket", "fetch(", "XMLHttpRequest", "EventSource"):
        assert name not in source, f"app.js uses {name}"


def test_the_whole_page_is_under_300_kb_compressed():
    """Everything the browser loads (the page, its style and every module app.js imports, transitively)."""
    import gzip
    import os
    import re

    web = ROOT / "web"
    seen, todo = set(), ["app.js"]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        source = (web / name).read_text()
        base = pathlib.PurePosixPath(name).parent
        for target in re.findall(r'^\s*(?:import|export)\b[^;]*?from\s*"(\.[^"]+)"', source, re.M):
            todo.append(os.path.normpath(str(base / target)))
    files = ["index.html", "app.css", *sorted(seen)]
    total = sum(len(gzip.compress((web / n).read_bytes(), 9)) for n in files)
    assert "vendor/noble/curves/ed25519.js" in seen  # (the walk follows the vendored library too)
    assert total < 300 * 1024, f"{total} bytes compressed"
