# Sourced by scripts/chat and scripts/test: make .venv with chatd installed (editable), once per pyproject change.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
PY="${PYTHON:-python3}"
extras="${1:-}"
stamp="$VENV/.chatd-installed${extras:+-$extras}"
want="$(cat "$ROOT/pyproject.toml" "$ROOT/scripts/bootstrap.sh" | sha256sum | cut -d' ' -f1)"
if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "chatd needs Python 3.11+ ($PY is older)" >&2; exit 1; }
  echo "setting up $VENV ..." >&2
  if ! "$PY" -m venv "$VENV" 2>/dev/null; then
    # Debian's python3 ships without ensurepip; its python3-venv package provides it.
    rm -rf "$VENV"
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    echo "installing python3-venv with apt ..." >&2
    $SUDO apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq python3-venv >/dev/null
    "$PY" -m venv "$VENV"
  fi
fi
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "installing chatd${extras:+ with [$extras]} into $VENV ..." >&2
  # compat mode: the editable install is a path in a .pth (a second .pth for the client library's own
  # root), not setuptools' import-hook finder, which costs every `chatd` command ~10 ms at start-up
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check -e "$ROOT${extras:+[$extras]}" \
    --config-settings editable_mode=compat
  "$VENV/bin/python" - "$ROOT/clients/python" <<'PY'
import sys, sysconfig
with open(sysconfig.get_paths()["purelib"] + "/chatd-client-src.pth", "w") as f:
    f.write(sys.argv[1] + "\n")
PY
  echo "$want" > "$stamp"
fi
