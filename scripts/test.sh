#!/usr/bin/env bash
# Runs the whole suite on Deno (tests and doc examples), Bun and Node 24, and
# ends with one line that adds the three up: "N passed, N failed, N skipped".
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh || exit 1
export PATH="$PWD/node_modules/.bin:$PATH"
export NO_COLOR=1
logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT
passed=0
failed=0
skipped=0
status=0

# run NAME COMMAND...: runs one runner, shows its output, keeps its log.
run() {
  local name=$1
  shift
  local start=$SECONDS
  echo "== $name: $*"
  "$@" 2>&1 | tee "$logs/$name.log"
  local code=${PIPESTATUS[0]}
  echo "== $name: exit $code in $((SECONDS - start)) s"
  [ "$code" = 0 ] || status=1
}

# add NAME P F [S]: adds one runner's counts; a runner whose counts cannot be
# read counts as one failure, and says so. A missing skip count is 0.
add() {
  local name=$1
  shift
  if [ -z "$1" ] || [ -z "$2" ]; then
    echo "== $name: its summary could not be read: counted as 1 failed" >&2
    failed=$((failed + 1))
    status=1
    return
  fi
  passed=$((passed + $1))
  failed=$((failed + $2))
  skipped=$((skipped + ${3:-0}))
}

# add_deno LOG: Deno's summary, "ok | 79 passed (52 steps) | 0 failed | 3 ignored";
# nested tests are its steps, which the other runners count as tests.
add_deno() {
  local line p f s
  line=$(grep -E '^(ok|FAILED) \|' "$logs/$1.log" | tail -1)
  p=$(sed -nE 's/.*\| ([0-9]+) passed( \(([0-9]+) steps?\))?.*/\1 \3/p' <<<"$line" | awk '{print $1 + $2}')
  f=$(sed -nE 's/.*\| ([0-9]+) failed( \(([0-9]+) steps?\))?.*/\1 \3/p' <<<"$line" | awk '{print $1 + $2}')
  s=$(sed -nE 's/.*\| ([0-9]+) ignored.*/\1/p' <<<"$line")
  add "$1" "$p" "$f" "$s"
}

run deno deno test -A tests/
add_deno deno

run deno-doc deno test -A --doc README.md ./*.ts
add_deno deno-doc

run bun bun test --timeout 120000 tests/
add bun "$(sed -nE 's/^ *([0-9]+) pass$/\1/p' "$logs/bun.log" | tail -1)" "$(sed -nE 's/^ *([0-9]+) fail$/\1/p' "$logs/bun.log" | tail -1)" \
  "$(sed -nE 's/^ *([0-9]+) skip$/\1/p' "$logs/bun.log" | tail -1)"

run node node --test tests/*_test.ts
# Node's summary lines start with "ℹ", three bytes in UTF-8: in a C locale
# sed's "." is one byte, so the prefix is matched as any run of non-letters.
add node "$(sed -nE 's/^[^a-z0-9]* pass ([0-9]+)$/\1/p' "$logs/node.log" | tail -1)" "$(sed -nE 's/^[^a-z0-9]* fail ([0-9]+)$/\1/p' "$logs/node.log" | tail -1)" \
  "$(sed -nE 's/^[^a-z0-9]* skipped ([0-9]+)$/\1/p' "$logs/node.log" | tail -1)"

echo "$passed passed, $failed failed, $skipped skipped"
exit $status
