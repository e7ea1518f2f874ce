"""The VS Code extension's tests, run from pytest so `scripts/test` covers them: the type check, the
node:test unit tests (protocol client against a real daemon, HTML sanitising) and the end-to-end run in
real code-server + Chromium (editors/vscode/test/e2e/run.mjs).

They need the heavy test dependencies from `editors/vscode/scripts/install-test-deps.sh`; without them
the tests are skipped with that instruction (set CHATD_REQUIRE_VSCODE_TESTS=1 to fail instead).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXT = ROOT / "editors" / "vscode"
CACHE = Path(os.environ.get("CHATD_TEST_CACHE", Path.home() / ".cache" / "chatd-test"))
CHATD = Path(sys.executable).parent / "chatd"


def _missing() -> str | None:
    if shutil.which("node") is None:
        return "node is not installed"
    if not (EXT / "node_modules" / ".bin" / "esbuild").exists():
        return "editors/vscode/node_modules is missing"
    return None


def _require(e2e: bool = False) -> None:
    why = _missing()
    if why is None and e2e and not (CACHE / "env.sh").exists():
        why = f"code-server/chromium are not installed ({CACHE}/env.sh missing)"
    if why:
        message = f"{why}: run editors/vscode/scripts/install-test-deps.sh"
        if os.environ.get("CHATD_REQUIRE_VSCODE_TESTS"):
            pytest.fail(message)
        pytest.skip(message)


def _run(args: list[str], timeout: float, **env: str) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("CHATD_") or k == "CHATD_TEST_CACHE"}
    full_env.update({"CHATD_BIN": str(CHATD), **env})
    proc = subprocess.run(args, cwd=EXT, env=full_env, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        pytest.fail(f"{' '.join(args)} exited {proc.returncode}\n--- stdout\n{proc.stdout[-8000:]}\n--- stderr\n{proc.stderr[-4000:]}")
    return proc


@pytest.mark.timeout(300)
def test_typecheck():
    _require()
    _run(["node", "node_modules/typescript/bin/tsc", "--noEmit", "-p", "."], timeout=180)


@pytest.mark.timeout(300)
def test_unit():
    _require()
    _run(["node", "scripts/build.mjs", "--tests"], timeout=120)
    _run(["node", "--test", "--test-reporter=dot", "out-test/"], timeout=300)


@pytest.mark.timeout(900)  # ~35 s here; code-server's first start on a cold machine is slower
def test_end_to_end_in_code_server():
    _require(e2e=True)
    _run(["node", "scripts/build.mjs"], timeout=120)
    _run(["node", "node_modules/@vscode/vsce/vsce", "package", "--no-dependencies", "--allow-missing-repository",
          "--skip-license", "-o", "out/chatd.vsix"], timeout=180)
    out = _run(["node", "test/e2e/run.mjs"], timeout=900,
               CHATD_E2E_SCREENSHOT=str(ROOT / "docs" / "img" / "vscode-chat.png"))
    print(out.stdout)
