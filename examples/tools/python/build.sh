#!/usr/bin/env bash
# Builds file-report.wasm from app.py against wit/tool.wit with the pinned
# componentize-py (requirements.txt), in a venv kept across builds.
#
#   examples/tools/python/build.sh [OUT.wasm]   (default: file-report.wasm here)
#
# WARDEN_PY_TOOLS_VENV overrides the venv (default
# ~/.cache/warden-ci-venv-py-tools); it is reinstalled when requirements.txt
# changes.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
wit="$here/../../../wit"
out="${1:-$here/file-report.wasm}"
venv="${WARDEN_PY_TOOLS_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/warden-ci-venv-py-tools}"

key="$(sha256sum < "$here/requirements.txt" | cut -c1-16)"
if [ "$(cat "$venv/.requirements" 2>/dev/null)" != "$key" ]; then
    [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$here/requirements.txt"
    echo "$key" > "$venv/.requirements"
fi

# Built from a copy, so the build's __pycache__ stays out of the source tree.
src="$(mktemp -d)"
trap 'rm -rf "$src"' EXIT
cp "$here/app.py" "$src/"
"$venv/bin/componentize-py" --wit-path "$wit" --world tool componentize \
    --python-path "$src" app --output "$out"
