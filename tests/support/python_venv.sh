#!/usr/bin/env bash
# Create (or reuse) a virtualenv for a Python check, and print its python on the last line.
#
# Usage: python_venv.sh REQUIREMENTS VENV_NAME
#   REQUIREMENTS  a pip requirements file with every version pinned (tests/sdk/requirements.txt)
#   VENV_NAME     the venv's folder under ${CARGO_TARGET_DIR:-<repo>/target} (sdk-venv)
#
# The venv is (re)built, and REQUIREMENTS installed, only when it is missing or REQUIREMENTS
# changed since the last successful install (a SHA-256 of the file is kept in the venv), so
# re-runs take well under a second. Anything missing -- python3, venv, PyPI -- is an error, never
# a skip: these checks exist to prove something works, so they must not pass without running.
set -euo pipefail

[[ $# -eq 2 ]] || { echo "usage: $0 REQUIREMENTS VENV_NAME" >&2; exit 2; }
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
target="${CARGO_TARGET_DIR:-$repo/target}"
requirements="$1"
venv="$target/$2"
stamp="$venv/.requirements.sha256"

fail() {
    echo "python_venv.sh: $*" >&2
    exit 1
}

[[ -f "$requirements" ]] || fail "$requirements does not exist"
command -v python3 >/dev/null 2>&1 ||
    fail "python3 is not on PATH; the Python checks need Python >= 3.10 with the venv module"
python3 -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else 1)' ||
    fail "$(python3 --version 2>&1) is too old; the pinned packages need Python >= 3.10"

want="$(python3 -c 'import hashlib, sys; print(hashlib.sha256(open(sys.argv[1], "rb").read()).hexdigest())' \
    "$requirements")"
python="$venv/bin/python"

mkdir -p "$target"
# Two test runs sharing a target directory must not build the same venv at once.
if command -v flock >/dev/null 2>&1; then
    exec 9>"$venv.lock"
    flock 9
fi

if [[ -x "$python" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
    echo "python_venv.sh: $venv is up to date with $requirements" >&2
else
    # A fresh venv each time the requirements change: nothing left over from older pins.
    echo "python_venv.sh: creating $venv" >&2
    rm -rf "$venv"
    python3 -m venv "$venv" ||
        fail "python3 -m venv failed (on Debian/Ubuntu: apt-get install python3-venv)"
    echo "python_venv.sh: installing $requirements into $venv" >&2
    # pip's output goes to stderr so that the python path stays the last line of stdout.
    "$python" -m pip install --disable-pip-version-check --no-input --quiet \
        -r "$requirements" 1>&2 ||
        fail "pip could not install $requirements (is PyPI reachable? is a proxy/index configured?)"
    # Written last: an interrupted install is redone on the next run.
    echo "$want" >"$stamp"
fi

echo "$python"
