#!/usr/bin/env bash
# Install the JavaScript Graph client the JS check runs with, and print the folder to run it in on
# the last line of stdout.
#
# The folder is ${CARGO_TARGET_DIR:-<repo>/target}/js-client: package.json, package-lock.json and
# the check script are copied there and `npm ci` runs when the lock file changed since the last
# successful install. Anything missing -- node, npm, the npm registry -- is an error, never a skip.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
target="${CARGO_TARGET_DIR:-$repo/target}"
dir="$target/js-client"
stamp="$dir/.lock.sha256"

fail() {
    echo "tests/js/bootstrap.sh: $*" >&2
    exit 1
}

command -v node >/dev/null 2>&1 || fail "node is not on PATH; the JavaScript client check needs Node.js >= 18"
command -v npm >/dev/null 2>&1 || fail "npm is not on PATH"
node -e 'process.exit(Number(process.versions.node.split(".")[0]) >= 18 ? 0 : 1)' ||
    fail "node $(node --version) is too old; the check uses the global fetch of Node.js >= 18"

mkdir -p "$dir"
if command -v flock >/dev/null 2>&1; then
    exec 9>"$target/js-client.lock"
    flock 9
fi
want="$(sha256sum "$here/package-lock.json" | cut -d' ' -f1)"
cp "$here/package.json" "$here/package-lock.json" "$here"/*.mjs "$dir/"
if [[ -d "$dir/node_modules" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
    echo "tests/js/bootstrap.sh: $dir is up to date" >&2
else
    echo "tests/js/bootstrap.sh: npm ci in $dir" >&2
    rm -f "$stamp"
    (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error 1>&2) ||
        fail "npm ci failed (is the npm registry reachable?)"
    echo "$want" >"$stamp"
fi
echo "$dir"
