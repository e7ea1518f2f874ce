"""The import rules of ARCHITECTURE.md, checked on the source: each layer imports only what it may."""

from __future__ import annotations

import ast
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent

# source path prefix -> import-name prefixes it must never import
FORBIDDEN: dict[str, tuple[str, ...]] = {
    "chatd/protocol.py": ("pygls", "lsprotocol", "httpx", "platformdirs", "chatd."),
    "chatd/wire.py": ("msgspec", "pygls", "lsprotocol", "httpx", "platformdirs", "chatd."),
    "chatd/errors.py": ("pygls", "lsprotocol", "httpx"),
    "chatd/conversation.py": ("pygls", "lsprotocol", "httpx", "chatd.server", "chatd.providers.openai",
                              "chatd.providers.anthropic", "chatd.providers.gemini", "platformdirs"),
    "chatd/routing.py": ("pygls", "lsprotocol", "httpx", "chatd.server", "chatd.store"),
    "chatd/store/": ("pygls", "lsprotocol", "httpx", "chatd.providers", "chatd.server", "chatd.conversation",
                     "chatd.tools."),
    "chatd/providers/": ("pygls", "lsprotocol", "chatd.config", "chatd.store", "chatd.server",
                         "chatd.conversation", "chatd.tools.", "chatd.paths", "platformdirs", "os.environ"),
    "chatd/tools/": ("chatd.providers", "chatd.server"),
    "chatd/faces/": ("chatd.providers", "chatd.server", "chatd.conversation", "chatd.store", "chatd.routing",
                     "chatd.tools.", "httpx", "pygls"),
    "chatd/server/": ("httpx", "chatd.providers.openai", "chatd.providers.anthropic", "chatd.providers.gemini"),
    "clients/python/": ("pygls", "lsprotocol", "httpx", "chatd.server", "chatd.conversation", "chatd.store",
                        "chatd.providers", "chatd.app", "chatd.routing", "chatd.models", "chatd.tools.",
                        "chatd.config", "platformdirs"),
}
ALLOWED: dict[str, tuple[str, ...]] = {"chatd/protocol.py": ("chatd.wire",)}  # exceptions to a rule above
PLATFORMDIRS_OWNER = "chatd/paths.py"


def _imports(path: pathlib.Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            if node.value.id == "os" and node.attr in ("environ", "getenv"):
                names.add("os.environ")
    return names


def _violations() -> list[str]:
    found = []
    for path in sorted([*ROOT.glob("chatd/**/*.py"), *ROOT.glob("clients/python/**/*.py")]):
        rel = path.relative_to(ROOT).as_posix()
        imports = _imports(path)
        for prefix, banned in FORBIDDEN.items():
            if not rel.startswith(prefix):
                continue
            for name in imports:
                if name.startswith(ALLOWED.get(rel, ("\0",))):
                    continue
                for b in banned:  # a prefix: "chatd.providers.openai" covers openai_chat; "x." covers x too
                    if name.startswith(b) or name == b.rstrip("."):
                        found.append(f"{rel} imports {name} (rule: {prefix} must not import {b})")
        if rel != PLATFORMDIRS_OWNER and any(n.split(".")[0] == "platformdirs" for n in imports):
            found.append(f"{rel} imports platformdirs (only {PLATFORMDIRS_OWNER} may)")
    return found


def test_layers_import_only_what_they_may():
    assert _violations() == []


def test_the_rule_checker_catches_a_violation(tmp_path, monkeypatch):
    bad = ROOT / "chatd" / "providers" / "_layer_probe.py"
    bad.write_text("import os\nfrom chatd.config import x\nkey = os.environ['K']\n")
    try:
        found = _violations()
    finally:
        bad.unlink()
    assert any("_layer_probe.py imports chatd.config" in f for f in found)
    assert any("_layer_probe.py imports os.environ" in f for f in found)


def test_client_library_imports_no_engine():
    code = ("import sys, chatd_client, chatd_client.connection, chatd_client.daemon\n"
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('pygls','lsprotocol','httpx','cattrs')"
            " or m.startswith(('chatd.server','chatd.conversation','chatd.store','chatd.providers')))\n"
            "print(','.join(bad))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_every_package_is_in_the_distribution():
    """A package missing from pyproject's list works in the editable checkout and breaks in a wheel."""
    import tomllib

    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {init.parent.relative_to(ROOT).as_posix().replace("/", ".") for init in ROOT.glob("chatd/**/__init__.py")}
    found.add("chatd_client")
    assert found == listed
