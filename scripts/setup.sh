#!/usr/bin/env bash
# Installs what the demo and the tests need on a machine that has only Node
# and npm: the pinned runtimes (deno, bun, Node 24) and dev tools from the
# npm registry, and flock(1) from Debian where it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
stamp=node_modules/.package-lock.json
if [ ! -x node_modules/.bin/deno ] || [ ! -x node_modules/.bin/bun ] || [ ! -x node_modules/.bin/node ] \
  || [ ! -f "$stamp" ] || [ package-lock.json -nt "$stamp" ]; then
  # npm ci refuses this lock file: npm leaves the deno package's optional
  # binaries for other platforms out of it, then calls it out of sync.
  # npm install with --no-save installs the same pinned versions.
  echo "setup: installing the pinned runtimes and dev tools (npm install)" >&2
  npm install --no-save --no-audit --no-fund --loglevel=error >&2
fi
if ! command -v flock >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "setup: installing util-linux for flock(1)" >&2
    apt-get update -qq >&2 && apt_updated=1 && apt-get install -y -qq util-linux >&2
  else
    echo "setup: flock(1) is missing: the tests that use it will be skipped" >&2
  fi
fi
# redis-server for the tests of ./redis (issue 13): Debian's, where it is
# missing and we are root; otherwise those tests are skipped (or use REDIS_URL).
if ! command -v redis-server >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "setup: installing redis-server for the Redis tests" >&2
    # apt-get update once per run: the flock block above may have run it.
    if [ -z "${apt_updated:-}" ]; then apt-get update -qq >&2; fi
    apt-get install -y -qq redis-server >&2
  else
    echo "setup: redis-server is missing: the Redis tests will be skipped (or set REDIS_URL)" >&2
  fi
fi
# --- postgres.ts (issue 18): a PostgreSQL server (and PgBouncer) for
# tests/postgres_*_test.ts, which start throwaway ones of their own as the
# user postgres.
has_pgbouncer() { command -v pgbouncer >/dev/null 2>&1 || [ -x /usr/sbin/pgbouncer ]; }
if { ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || ! has_pgbouncer; } \
  && [ -z "${DATABASE_URL:-}" ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "setup: installing Debian's postgresql and pgbouncer for the PostgreSQL tests" >&2
    apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql pgbouncer >&2 \
      || echo "setup: postgresql could not be installed: the PostgreSQL tests will be skipped" >&2
  else
    echo "setup: PostgreSQL or PgBouncer is missing (not root to install them, no DATABASE_URL): their tests will be skipped" >&2
  fi
fi
# --- end postgres.ts

# --- btrfs-progs for the lock-holder tests on btrfs (lockfile_test.ts), whose
# subvolumes give stat() devices of their own: a loop-mounted image, as root.
if ! command -v mkfs.btrfs >/dev/null 2>&1 && ! [ -x /usr/sbin/mkfs.btrfs ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "setup: installing btrfs-progs for the btrfs lock-holder test" >&2
    if [ -z "${apt_updated:-}" ]; then apt-get update -qq >&2 && apt_updated=1; fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq btrfs-progs >&2 \
      || echo "setup: btrfs-progs could not be installed: the btrfs test will be skipped" >&2
  else
    echo "setup: mkfs.btrfs is missing (not root to install it): the btrfs test will be skipped" >&2
  fi
fi
