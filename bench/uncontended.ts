// Figure 1: what a lock costs when nobody else wants it.
import { writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { join } from "node:path";
import { rt } from "../_runtime.ts";
import { Lock, lock, LockFlags, lockSync, type LockTarget, unlock, unlockSync } from "../lock.ts";
import { LockFile } from "../lockfile.ts";
import { type Case, interleave } from "./_stats.ts";
import { compared, emit, full, tempDir } from "./_util.ts";

interface ProperLockfile {
  lock(path: string): Promise<() => Promise<void>>;
  lockSync(path: string): () => void;
}

const FIGURE = "1 uncontended";
const RAW_CYCLE = "raw sync open+flock+unlock+close";
const RAW_OPEN = "raw sync flock+unlock, file open";
const FLAGS = { read: true, append: true, create: true };

using dir = tempDir("uncontended");
const at = (name: string) => join(dir.path, name);
const pl = createRequire(import.meta.url)("proper-lockfile") as ProperLockfile;

const lockObj = new Lock(at("class.lock"));
const openRaw = rt.openSync(at("open.lock"), FLAGS);
const target = (openRaw.file ?? openRaw.fd) as LockTarget;
writeFileSync(at("peer-sync"), "");
writeFileSync(at("peer-async"), "");

const cases: Case[] = [
  {
    name: RAW_CYCLE,
    run(n) {
      const path = at("raw.lock");
      for (let i = 0; i < n; i++) {
        const f = rt.openSync(path, FLAGS);
        rt.tryLockSync(f, true);
        rt.unlockSync(f);
        rt.closeSync(f);
      }
    },
  },
  {
    name: "Lock acquire()+release()",
    async run(n) {
      for (let i = 0; i < n; i++) {
        await lockObj.acquire();
        await lockObj.release();
      }
    },
  },
  {
    name: "new LockFile(p).close()",
    run(n) {
      const path = at("lockfile.lock");
      for (let i = 0; i < n; i++) new LockFile(path).close();
    },
  },
  {
    name: RAW_OPEN,
    run(n) {
      for (let i = 0; i < n; i++) {
        rt.tryLockSync(openRaw, true);
        rt.unlockSync(openRaw);
      }
    },
  },
  {
    name: "lock()+unlock(), file open",
    async run(n) {
      for (let i = 0; i < n; i++) {
        await lock(target, LockFlags.EXCLUSIVE);
        await unlock(target);
      }
    },
  },
  {
    name: "lockSync()+unlockSync(), file open",
    run(n) {
      for (let i = 0; i < n; i++) {
        lockSync(target, LockFlags.EXCLUSIVE);
        unlockSync(target);
      }
    },
  },
  {
    name: "peer: proper-lockfile lockSync+release",
    run(n) {
      const path = at("peer-sync");
      for (let i = 0; i < n; i++) pl.lockSync(path)();
    },
  },
  {
    name: "peer: proper-lockfile lock+release",
    async run(n) {
      const path = at("peer-async");
      for (let i = 0; i < n; i++) await (await pl.lock(path))();
    },
  },
];

const times = await interleave(cases, {
  rounds: full ? 15 : 9,
  roundMs: full ? 60 : 25,
  warmupMs: full ? 200 : 60,
});
rt.closeSync(openRaw);

const us = "us/op";
const headline = compared(FIGURE, "Lock acquire()+release()", us, times, RAW_CYCLE);
emit({ ...headline, target: "ratio <= 1.5", met: headline.ratio! <= 1.5 });
for (
  const row of [
    compared(FIGURE, "new LockFile(p).close()", us, times, RAW_CYCLE),
    compared(FIGURE, "lock()+unlock(), file open", us, times, RAW_OPEN),
    compared(FIGURE, "lockSync()+unlockSync(), file open", us, times, RAW_OPEN),
    compared(FIGURE, "peer: proper-lockfile lockSync+release", us, times, RAW_CYCLE),
    compared(FIGURE, "peer: proper-lockfile lock+release", us, times, RAW_CYCLE),
  ]
) emit(row);
