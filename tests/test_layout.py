"""The house rules, checked: arrows one way, no import cycles, one owner of live events,
and modules small enough to read in one sitting."""

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("chat", "providers", "chatsite")


def modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            if "migrations" in path.parts:
                continue
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            found[name.removesuffix(".__init__")] = path
    return found


def imports_of(path: Path, known: set[str]) -> set[str]:
    """Project modules a module imports at its top level (not inside functions)."""
    found = set()
    for node in ast.parse(path.read_text()).body:
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        found |= {name for name in names if name in known}
    return found


def graph() -> dict[str, set[str]]:
    found = modules()
    return {name: imports_of(path, set(found)) for name, path in found.items()}


def test_providers_never_import_chat_or_chatsite():
    for name, targets in graph().items():
        if name.startswith("providers"):
            wrong = {t for t in targets if t.split(".")[0] in ("chat", "chatsite")}
            assert not wrong, f"{name} imports {wrong}"


def test_there_are_no_import_cycles():
    edges = graph()
    state: dict[str, str] = {}

    def visit(node, path):
        state[node] = "open"
        for target in sorted(edges.get(node, ())):
            if state.get(target) == "open":
                raise AssertionError(" -> ".join([*path, node, target]))
            if target not in state:
                visit(target, [*path, node])
        state[node] = "done"

    for node in sorted(edges):
        if node not in state:
            visit(node, [])


def test_only_the_events_module_names_groups_builds_events_or_renders_fragments():
    owner = ROOT / "chat" / "live" / "events.py"
    layer = ROOT / "chatsite" / "channel_layer.py"  # implements group_send; names nothing
    patterns = [
        re.compile(
            r"""["'](gen|job|thread|user)\.(delta|done|snapshot|stop|html|disconnect)["']"""
        ),
        re.compile(r"""f["'](conv|user|job)\.\{"""),
        re.compile(r"chat/live\.html|chat/ws/"),
        re.compile(r"\bgroup_send\(|\.send\(reply_to"),
    ]
    for path in modules().values():
        if path == owner:
            continue
        text = path.read_text()
        for pattern in patterns[:3] if path == layer else patterns:
            assert not pattern.search(text), f"{path.relative_to(ROOT)}: {pattern.pattern}"


def test_chat_modules_stay_readable_in_one_sitting():
    for name, path in modules().items():
        if name.startswith("chat"):
            lines = len(path.read_text().splitlines())
            assert lines <= 360, f"{name} has {lines} lines"
