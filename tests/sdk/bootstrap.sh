#!/usr/bin/env bash
# Create (or reuse) the virtualenv the SDK check runs in, and print its python on the last line.
#
# The venv lives at ${CARGO_TARGET_DIR:-<repo>/target}/sdk-venv. It is (re)built, and
# requirements.txt installed, only when it is missing or requirements.txt changed since the last
# successful install (a SHA-256 of the file is kept in the venv). Anything missing -- python3,
# venv, PyPI -- is an error, never a skip: the check exists to prove the official SDK works, so it
# must not pass without running.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
target="${CARGO_TARGET_DIR:-$repo/target}"
venv="$target/sdk-venv"
requirements="$here/requirements.txt"
stamp="$venv/.requirements.sha256"

fail() {
    echo "bootstrap.sh: $*" >&2
    exit 1
}

command -v python3 >/dev/null 2>&1 ||
    fail "python3 is not on PATH; the Python SDK check needs Python >= 3.10 with the venv module"
python3 -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else 1)' ||
    fail "$(python3 --version 2>&1) is too old; msgraph-sdk 1.65 needs Python >= 3.10"

want="$(python3 -c 'import hashlib, sys; print(hashlib.sha256(open(sys.argv[1], "rb").read()).hexdigest())' \
    "$requirements")"
python="$venv/bin/python"

mkdir -p "$target"
# Two test runs sharing a target directory must not build the same venv at once.
if command -v flock >/dev/null 2>&1; then
    exec 9>"$target/sdk-venv.lock"
    flock 9
fi

if [[ -x "$python" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
    echo "bootstrap.sh: $venv is up to date with requirements.txt" >&2
else
    # A fresh venv each time requirements.txt changes: nothing left over from older pins.
    echo "bootstrap.sh: creating $venv" >&2
    rm -rf "$venv"
    python3 -m venv "$venv" ||
        fail "python3 -m venv failed (on Debian/Ubuntu: apt-get install python3-venv)"
    echo "bootstrap.sh: installing requirements.txt into $venv" >&2
    # pip's output goes to stderr so that the python path stays the last line of stdout.
    "$python" -m pip install --disable-pip-version-check --no-input --quiet \
        -r "$requirements" 1>&2 ||
        fail "pip could not install $requirements (is PyPI reachable? is a proxy/index configured?)"
    # Written last: an interrupted install is redone on the next run.
    echo "$want" >"$stamp"
fi

echo "$python"
