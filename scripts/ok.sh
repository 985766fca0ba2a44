#!/usr/bin/env bash
# deno task ok: type check, lint, format check and the Deno tests, with the
# doc examples; the gate before every commit. (Run through bash because
# deno task runs the npm deno binary in node_modules/.bin as a script.)
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/node_modules/.bin:$PATH"
deno check .
deno lint
deno fmt --check
deno doc --lint mod.ts
# A Bun or Node user's tsc, with only @types/node, type-checks a program that uses the package.
tsc -p tests/consumer/tsconfig.json
deno test -A tests/
deno test -A --doc README.md ./*.ts
