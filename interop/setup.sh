#!/usr/bin/env bash
# Installs the interop suite's third-party peers, pinned: npm packages from package-lock.json
# (npm ci) into interop/node_modules, Python packages from requirements.txt into interop/.venv.
# Idempotent: each half is skipped when its lockfile has not changed since the last install.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here"
start=$SECONDS

stamp_ok() { # stamp file, input file: true if the stamp records the input's current hash
    [[ -f "$1" ]] && [[ "$(cat "$1")" == "$(sha256sum "$2" | cut -d' ' -f1)" ]]
}

# --- npm ---------------------------------------------------------------------------------
npm_stamp=node_modules/.interop-lock.sha256
if stamp_ok "$npm_stamp" package-lock.json && [[ -x node_modules/.bin/node ]]; then
    echo "setup: npm peers up to date"
else
    echo "setup: npm ci (pinned peers + Node 22 runtime package)"
    # The system Node may be older than some peers declare (they run on the bundled Node 22).
    npm ci --no-audit --no-fund --loglevel=error --engine-strict=false >/dev/null
    sha256sum package-lock.json | cut -d' ' -f1 >"$npm_stamp"
fi

# --- Python ------------------------------------------------------------------------------
py_stamp=.venv/.interop-req.sha256
if stamp_ok "$py_stamp" requirements.txt && [[ -x .venv/bin/python ]]; then
    echo "setup: python venv up to date"
else
    echo "setup: python venv + pip install -r requirements.txt"
    python3 -m venv .venv
    .venv/bin/pip install --quiet --disable-pip-version-check -r requirements.txt
    sha256sum requirements.txt | cut -d' ' -f1 >"$py_stamp"
fi

# --- sanity ------------------------------------------------------------------------------
node_v="$(node_modules/.bin/node --version)"
mcp_v="$(.venv/bin/python -c 'import importlib.metadata as m; print(m.version("mcp"))')"
echo "setup: node ${node_v}, python mcp ${mcp_v}, done in $((SECONDS - start))s"
