// Figure 7: what each waiting lock costs the process, for 1, 10 and 100
// concurrent waits (and 1,000 with --full, where the machine has the
// memory): resident memory and open descriptors above the same process
// with nothing waiting, per wait; then how long it takes to give them all
// up. The holders are descriptors of this process, so that every wait is
// a real one in the kernel.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import process from "node:process";
import { Lock } from "../lock.ts";
import { type RawFile, rt } from "../_runtime.ts";
import { collectGarbage, emit, full, openFds, rssMiB, sleep, tempDir } from "./_util.ts";

const FIGURE = "7 waits";
const COUNTS = full ? [1, 10, 100, 1000] : [1, 10, 100];

// Until /proc/locks lists `n` blocked waits of this process.
async function blocked(n: number): Promise<boolean> {
  for (let i = 0; i < 600; i++) {
    const table = readFileSync("/proc/locks", "utf8").split("\n");
    const waiting = table.filter((l) => l.includes("->") && l.includes(` ${process.pid} `)).length;
    if (waiting >= n) return true;
    await sleep(50);
  }
  return false;
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
  if (n === 1000 && rt.name === "node") {
    emit({
      figure: FIGURE,
      case: `${n} waits: skipped`,
      unit: "",
      value: NaN,
      note: "about 13 GiB on Node (a worker with its own V8 per wait); not run on a 24 GiB machine",
    });
    continue;
  }
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
  const before = { rss: rssMiB(), fds: openFds() };
  const controller = new AbortController();
  const waits = holders.map((_, i) =>
    new Lock(join(dir.path, `${n}-${i}.lock`)).acquire({ signal: controller.signal }).then(
      () => "locked",
      (e: Error) => e === controller.signal.reason ? "given up" : e.name,
    )
  );
  const all = await blocked(n);
  await sleep(200);
  collectGarbage();
  const after = { rss: rssMiB(), fds: openFds() };
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
    met: all && perWait <= 1,
    note: `RSS ${before.rss.toFixed(1)} -> ${
      after.rss.toFixed(1)
    } MiB; open fds ${before.fds} -> ${after.fds} (${
      ((after.fds - before.fds) / n).toFixed(1)
    } per wait); all ${n} blocked in the kernel: ${all}; giving all up took ${
      givenUp.toFixed(1)
    } ms; outcomes: ${[...new Set(outcomes)].join(", ")}`,
  });
  await sleep(200);
}
