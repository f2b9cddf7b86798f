#!/usr/bin/env bash
# Builds file-report.wasm from app.js against wit/tool.wit with the pinned
# componentize-js (package.json, package-lock.json), installed once per
# lockfile into a cache directory.
#
#   examples/tools/js/build.sh [OUT.wasm]   (default: file-report.wasm here)
#
# Needs Node ^20.19 or >= 22.12 (the engines componentize-js's dependencies
# declare) and npm. `@bytecodealliance/preview2-shim` is listed because
# componentize-js 0.23.0 imports it without declaring it; 0.17.x is the line
# it is developed against (its devDependencies), and later lines no longer
# give the build's own sandbox the host's files (it then cannot read the WIT).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
wit="$here/../../../wit"
out="${1:-$here/file-report.wasm}"

node_version="$(node --version)"
IFS=. read -r major minor _ <<< "${node_version#v}"
if ! { [ "$major" -eq 20 ] && [ "$minor" -ge 19 ]; } && ! { [ "$major" -eq 22 ] && [ "$minor" -ge 12 ]; } \
    && [ "$major" -lt 23 ]; then
    echo "error: node is $node_version; componentize-js needs ^20.19.0 or >= 22.12.0" >&2
    exit 2
fi

key="$(cat "$here/package.json" "$here/package-lock.json" | sha256sum | cut -c1-16)"
deps="${XDG_CACHE_HOME:-$HOME/.cache}/warden-ci-js-tools/$key"
if [ ! -f "$deps/.installed" ]; then
    rm -rf "$deps"
    mkdir -p "$deps"
    cp "$here/package.json" "$here/package-lock.json" "$deps/"
    (cd "$deps" && npm ci --no-audit --no-fund --loglevel=error)
    touch "$deps/.installed"
fi

node "$deps/node_modules/@bytecodealliance/componentize-js/src/cli.js" "$here/app.js" \
    --wit "$wit" --world-name tool --out "$out"
