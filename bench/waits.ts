// Figure 7: what each waiting lock costs, for 1, 10 and 100 concurrent
// waits (and 1,000 with --full): the process's resident memory and open
// descriptors above the same process with nothing waiting, and the
// proportional memory of its flock(1) children, per wait; then how long it
// takes to give them all up. The holders are descriptors of this process,
// so that every wait is a real one in the kernel.
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { Lock } from "../lock.ts";
import { type RawFile, rt } from "../_runtime.ts";
import { collectGarbage, emit, full, openFds, rssMiB, sleep, tempDir } from "./_util.ts";

const FIGURE = "7 waits";
const COUNTS = full ? [1, 10, 100, 1000] : [1, 10, 100];

// The blocked flock waits on the machine ("->" lines of /proc/locks): the
// waits of this process, or of its flock(1) children, on a quiet machine.
function waiting(): number {
  return readFileSync("/proc/locks", "utf8").split("\n").filter((l) => l.includes("->")).length;
}

// Until `n` more waits than `before` are blocked.
async function blocked(n: number, before = 0): Promise<boolean> {
  for (let i = 0; i < 600; i++) {
    if (waiting() - before >= n) return true;
    await sleep(50);
  }
  return false;
}

// The proportional memory of this process's children (flock(1) waits), in MiB.
function childrenPssMiB(): number {
  let kib = 0;
  for (const task of readdirSync("/proc/self/task")) {
    let children: string[] = [];
    try {
      children = readFileSync(`/proc/self/task/${task}/children`, "utf8").trim().split(/\s+/);
    } catch { /* no such file here */ }
    for (const pid of children.filter(Boolean)) {
      try {
        const m = /^Pss:\s+(\d+)/m.exec(readFileSync(`/proc/${pid}/smaps_rollup`, "utf8"));
        kib += Number(m?.[1] ?? 0);
      } catch { /* gone */ }
    }
  }
  return kib / 1024;
}

using dir = tempDir("waits");
// One contended wait first, so that the figures below count waits, not the
// runtime's one-time set-up of its first waiter thread.
{
  const path = join(dir.path, "warm.lock");
  const holder = rt.openSync(path, { read: true, write: true, create: true });
  rt.tryLockSync(holder, true);
  const controller = new AbortController();
  const warm = new Lock(path).acquire({ signal: controller.signal }).catch(() => {});
  await blocked(1);
  controller.abort();
  await warm;
  rt.closeSync(holder);
}
for (const n of COUNTS) {
  const holders: RawFile[] = [];
  for (let i = 0; i < n; i++) {
    const f = rt.openSync(join(dir.path, `${n}-${i}.lock`), {
      read: true,
      write: true,
      create: true,
    });
    rt.tryLockSync(f, true);
    holders.push(f);
  }
  collectGarbage();
  await sleep(100);
  const before = { rss: rssMiB(), fds: openFds(), waits: waiting() };
  const controller = new AbortController();
  const waits = holders.map((_, i) =>
    new Lock(join(dir.path, `${n}-${i}.lock`)).acquire({ signal: controller.signal }).then(
      () => "locked",
      (e: Error) => e === controller.signal.reason ? "given up" : e.name,
    )
  );
  const all = await blocked(n, before.waits);
  await sleep(200);
  collectGarbage();
  const after = { rss: rssMiB(), fds: openFds() };
  const children = childrenPssMiB();
  const start = performance.now();
  controller.abort();
  const outcomes = await Promise.all(waits);
  const givenUp = performance.now() - start;
  for (const f of holders) rt.closeSync(f);
  const perWait = (after.rss - before.rss) / n;
  emit({
    figure: FIGURE,
    case: `${n} waits: RSS per wait`,
    unit: "MiB",
    value: perWait,
    baselineName: "goal",
    baseline: 1,
    ratio: perWait / 1,
    target: "<= 1 MiB per wait",
    met: all && perWait <= 1 && children / n <= 1,
    note: `RSS ${before.rss.toFixed(1)} -> ${after.rss.toFixed(1)} MiB; children (flock(1) waits) ${
      children.toFixed(1)
    } MiB PSS (${(children / n).toFixed(2)} per wait); open fds ${before.fds} -> ${after.fds} (${
      ((after.fds - before.fds) / n).toFixed(1)
    } per wait); all ${n} blocked in the kernel: ${all}; giving all up took ${
      givenUp.toFixed(1)
    } ms; outcomes: ${[...new Set(outcomes)].join(", ")}`,
  });
  await sleep(200);
}
