#!/usr/bin/env bash
# The whole suite on Node 22 and Node 26 (scripts/test.sh runs it on Node 24).
# Node 22 strips types only with --experimental-strip-types (22.6 and newer),
# and cannot parse `using` declarations, which the tests use (the package's
# own modules do not): so on Node 22 the suite runs from a copy of the tree
# in which esbuild has lowered them (--target=node22; the files keep their
# names and hold plain JavaScript). The two Node versions are pinned in
# scripts/nodes/package.json, apart from the main package.json, where their
# `node` commands would replace Node 24's in node_modules/.bin.
# --install-only: install them and stop.
set -uo pipefail
cd "$(dirname "$0")/.."
nodes=scripts/nodes
stamp=$nodes/node_modules/.package-lock.json
if [ ! -x $nodes/node_modules/node22/bin/node ] || [ ! -x $nodes/node_modules/node26/bin/node ] \
  || [ ! -f "$stamp" ] || [ $nodes/package-lock.json -nt "$stamp" ]; then
  echo "nodes: installing Node 22 and 26 (npm ci in $nodes)" >&2
  # On the machine's own Node, which trusts the machine's certificates (the
  # pinned Node 24 in node_modules/.bin, which .ci/run puts first, may not).
  system_path=$(tr ':' '\n' <<<"$PATH" | grep -vxF "$PWD/node_modules/.bin" | paste -sd:)
  (cd $nodes && PATH=$system_path npm ci --no-audit --no-fund --loglevel=error) >&2 || exit 1
fi
[ "${1:-}" = --install-only ] && exit 0
bash scripts/setup.sh || exit 1
export PATH="$PWD/node_modules/.bin:$PATH"
export NO_COLOR=1
log=$(mktemp)
status=0
repo=$PWD
copy=$(mktemp -d)
trap 'rm -f "$log"; rm -rf "$copy"' EXIT
tar --exclude=./node_modules --exclude=./.git --exclude=./$nodes/node_modules -cf - . | tar -xf - -C "$copy"
ln -s "$repo/node_modules" "$copy/node_modules"
(cd "$copy" && find . -name '*.ts' -not -path './node_modules/*' -print0 |
  xargs -0 esbuild --outdir=. --outbase=. --allow-overwrite --target=node22 \
    --out-extension:.js=.ts --log-level=warning) || exit 1
for v in 22 26; do
  flags=()
  dir=$repo
  if [ $v = 22 ]; then
    flags=(--experimental-strip-types --no-warnings=ExperimentalWarning)
    dir=$copy
  fi
  echo "== node $v: node ${flags[*]} --test tests/*_test.ts (in $dir)"
  start=$SECONDS
  # NODE_OPTIONS passes the flags on to the Node children of the tests
  # (those started by path as node_modules/.bin/node are Node 24).
  (cd "$dir" && NODE_OPTIONS="${flags[*]}" "$repo/$nodes/node_modules/node$v/bin/node" --test tests/*_test.ts) 2>&1 | tee "$log"
  code=${PIPESTATUS[0]}
  p=$(sed -nE 's/^[^a-z0-9]* pass ([0-9]+)$/\1/p' "$log" | tail -1)
  f=$(sed -nE 's/^[^a-z0-9]* fail ([0-9]+)$/\1/p' "$log" | tail -1)
  s=$(sed -nE 's/^[^a-z0-9]* skipped ([0-9]+)$/\1/p' "$log" | tail -1)
  echo "== node $v: exit $code in $((SECONDS - start)) s: ${p:-?} passed, ${f:-?} failed, ${s:-?} skipped"
  if [ "$code" != 0 ] || [ -z "$p" ] || [ "$f" != 0 ]; then status=1; fi
done
exit $status
