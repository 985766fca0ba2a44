// A small job as a user of the published package writes it, in plain
// JavaScript: one instance at a time (LockFile), a report that waiters take
// turns at (a contended Lock), and a queue (FileStore put and claim).
// scripts/consumer.sh runs it from the packed tarball on Node 22, 24 and 26
// and Bun, bundled by esbuild and bun build, and on Deno with the
// permissions that the README names. Usage: job.mjs DIR (an empty directory).
import {
  AlreadyLocked,
  FileStore,
  Lock,
  LockError,
  LockFile,
  readLockFile,
} from "@filestore/filestore";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { readFileSync, statSync } from "node:fs";
import { join } from "node:path";
import process from "node:process";

const onDeno = typeof globalThis.Deno?.version === "object";

// How many waits the kernel has queued on the file at `path`: /proc/locks
// marks a blocked request with "->". Undefined where it may not be read
// (Deno without --allow-all treats it as privileged).
function blockedOn(path) {
  const { ino } = statSync(path);
  try {
    return readFileSync("/proc/locks", "utf8").split("\n")
      .filter((line) => line.includes("->") && line.includes(`:${ino} `)).length;
  } catch {
    return undefined;
  }
}

async function untilBlocked(path, count) {
  for (let i = 0; i < 2000; i++) {
    const blocked = blockedOn(path);
    if (blocked === undefined || blocked >= count) return blocked;
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
  throw new Error(`The waits on '${path}' never blocked in the kernel`);
}

// The second instance, started by the first: it must be refused.
function second(path) {
  try {
    new LockFile(path).close();
    console.log("second instance: got the lock");
    process.exitCode = 1;
  } catch (e) {
    if (!(e instanceof LockError)) throw e;
    console.log(`second instance: refused, held by pid ${e.pid}`);
  }
}

function singleInstance(dir) {
  const path = join(dir, "job.pid");
  const owner = new LockFile(path);
  try {
    if (onDeno) {
      // A child would need --allow-run: the refusal within one process.
      assert.throws(() => new LockFile(path), LockError);
    } else {
      const child = spawnSync(
        process.execPath,
        [...process.execArgv, process.argv[1], "--second", path],
        { encoding: "utf8" },
      );
      assert.equal(child.status, 0, child.stderr);
      assert.match(child.stdout, new RegExp(`refused, held by pid ${process.pid}\\b`));
    }
    assert.equal(readLockFile(path).pid, process.pid);
  } finally {
    owner.close();
  }
}

async function contendedLock(dir) {
  const path = join(dir, "report.lock");
  const holder = new Lock(path);
  await holder.acquire();
  const waiters = [new Lock(path), new Lock(path)];
  await assert.rejects(waiters[0].acquire({ timeout: 0 }), AlreadyLocked);
  const turns = [];
  const done = waiters.map((lock, i) =>
    lock.acquire().then(async (file) => {
      await file.write(`waiter ${i}\n`);
      turns.push(i);
      await lock.release();
    })
  );
  const blocked = await untilBlocked(path, 2);
  await holder.release();
  await Promise.all(done);
  assert.deepEqual(turns.sort(), [0, 1]);
  return blocked === undefined ? "unseen" : `${blocked} blocked`;
}

async function queue(dir) {
  const store = new FileStore(join(dir, "queue"), { hostname: "consumer-check" });
  await store.prepare();
  for (let i = 1; i <= 3; i++) await store.put(`order ${i}`);
  const handled = [];
  for (;;) {
    const claim = await store.claim();
    if (claim === null) break;
    handled.push(await claim.text());
    await claim.done();
  }
  assert.deepEqual(handled.sort(), ["order 1", "order 2", "order 3"]);
}

async function main() {
  const args = process.argv.slice(2);
  if (args[0] === "--second") return second(args[1]);
  const dir = args[0];
  if (!dir) throw new Error("Usage: job.mjs DIR");
  singleInstance(dir);
  const waits = await contendedLock(dir);
  await queue(dir);
  const runtime = onDeno
    ? `deno ${Deno.version.deno}`
    : process.versions.bun
    ? `bun ${process.versions.bun}`
    : `node ${process.version}`;
  console.log(`job ok on ${runtime}: single instance, contended lock (${waits}), queue`);
}

main().catch((e) => {
  console.error(e);
  process.exitCode = 1;
});
