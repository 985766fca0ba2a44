// Figure 3: contention and fairness. N processes each take the lock M
// times, hold it about 1 ms while they increment a counter file, and report
// how long each acquisition waited and how much CPU they spent; the same
// is done with raw blocking flock, the two taking turns round by round.
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import process from "node:process";
import { rt } from "../_runtime.ts";
import { Lock } from "../lock.ts";
import { median, percentile, range } from "./_stats.ts";
import {
  args,
  type Child,
  emit,
  full,
  option,
  sleep,
  startChild,
  stdinLines,
  tempDir,
  wallMs,
} from "./_util.ts";

const FIGURE = "3 contention";
const FLAGS = { read: true, append: true, create: true };
type Mode = "raw" | "lock";

interface Report {
  waits: number[];
  cpuS: number;
}

function increment(counter: string): void {
  writeFileSync(counter, String(Number(readFileSync(counter, "utf8")) + 1));
}

async function child(mode: Mode, path: string, counter: string, count: number): Promise<void> {
  const next = stdinLines();
  const raw = mode === "raw" ? rt.openSync(path, FLAGS) : undefined;
  const lock = new Lock(path);
  console.log("ready");
  await next();
  const waits: number[] = [];
  let cpuUs = 0;
  for (let i = 0; i < count; i++) {
    const cpu = process.cpuUsage();
    const t0 = performance.now();
    if (raw) rt.lockSync(raw, true);
    else await lock.acquire();
    waits.push(performance.now() - t0);
    const used = process.cpuUsage(cpu);
    cpuUs += used.user + used.system;
    increment(counter);
    // Held by spinning, so that each hold lasts 1 ms whatever the timers do.
    const until = performance.now() + 1;
    while (performance.now() < until) { /* holding */ }
    if (raw) rt.unlockSync(raw);
    else await lock.release();
  }
  console.log(JSON.stringify({ waits, cpuS: cpuUs / 1e6 }));
  process.exit(0);
}

interface Round {
  perSecond: number;
  p50: number;
  p99: number;
  max: number;
  cpuS: number;
  waitedS: number;
  maxAt: number;
  maxLater: number;
  counter: number;
}

async function round(dir: string, mode: Mode, procs: number, count: number): Promise<Round> {
  const path = join(dir, "contended.lock");
  const counter = join(dir, "counter");
  writeFileSync(counter, "0");
  const children: Child[] = [];
  for (let i = 0; i < procs; i++) {
    children.push(startChild("contention.ts", ["--child", mode, path, counter, String(count)]));
  }
  for (const c of children) {
    const line = await c.next();
    if (line !== "ready") throw new Error(`contention child said '${line}'`);
  }
  const t0 = wallMs();
  for (const c of children) c.send("go");
  const reports = await Promise.all(children.map(async (c) => {
    const line = await c.next();
    await c.exited;
    return JSON.parse(line) as Report;
  }));
  const seconds = (wallMs() - t0) / 1000;
  const waits = reports.flatMap((r) => r.waits);
  const max = Math.max(...waits);
  return {
    perSecond: waits.length / seconds,
    p50: percentile(waits, 50),
    p99: percentile(waits, 99),
    max,
    cpuS: reports.reduce((sum, r) => sum + r.cpuS, 0),
    waitedS: waits.reduce((sum, w) => sum + w, 0) / 1000,
    maxLater: Math.max(...reports.map((r) => Math.max(...r.waits.slice(1)))),
    maxAt: reports.map((r) => r.waits.indexOf(max)).find((i) => i >= 0)!,
    counter: Number(readFileSync(counter, "utf8")),
  };
}

async function main(): Promise<void> {
  using dir = tempDir("contention");
  const procs = Number(option("procs") ?? 8);
  const count = Number(option("count") ?? (full ? 300 : 100));
  const rounds = full ? 3 : 2;
  const got: Record<Mode, Round[]> = { raw: [], lock: [] };
  for (let r = 0; r < rounds; r++) {
    const order: Mode[] = r % 2 === 0 ? ["raw", "lock"] : ["lock", "raw"];
    for (const mode of order) {
      got[mode].push(await round(dir.path, mode, procs, count));
      await sleep(50);
    }
  }
  const expected = procs * count;
  const setup = `${procs} processes x ${count}, 1 ms holds (spinning), ${rounds} rounds`;
  const metric = (
    name: string,
    unit: string,
    pick: (r: Round) => number,
    extra: { target?: string; met?: (ratio: number, value: number) => boolean; note?: string } = {},
  ) => {
    const mine = got.lock.map(pick);
    const base = got.raw.map(pick);
    const perRound = mine.map((m, i) => m / base[i]!);
    const ratio = median(perRound);
    const value = median(mine);
    emit({
      figure: FIGURE,
      case: `Lock acquire(): ${name}`,
      unit,
      value,
      spread: range(mine),
      baselineName: `raw blocking flock: ${name}`,
      baseline: median(base),
      ratio,
      ratioSpread: range(perRound),
      ...(extra.target ? { target: extra.target, met: extra.met!(ratio, value) } : {}),
      ...(extra.note ? { note: extra.note } : {}),
    });
  };
  metric("throughput", "acq/s", (r) => r.perSecond, { note: setup });
  metric("p50 wait", "ms", (r) => r.p50, {
    note: "raw flock: the releaser mostly takes it straight back",
  });
  metric("p99 wait", "ms", (r) => r.p99);
  metric("max wait", "ms", (r) => r.max, {
    target: "ratio <= 2",
    met: (ratio) => ratio <= 2,
    note: `the worst wait was acquisition # ${got.lock.map((r) => r.maxAt).join(", ")} (Lock), ${
      got.raw.map((r) => r.maxAt).join(", ")
    } (raw) of its process`,
  });
  metric("max wait, each process's first excluded", "ms", (r) => r.maxLater, {
    note: "the first wait of a process also starts its waiter thread on Bun and Node",
  });
  const busy = (r: Round) => (100 * r.cpuS / r.waitedS).toFixed(1);
  metric("waiters' CPU (all processes)", "s", (r) => r.cpuS, {
    target: "< 10% of time waited",
    met: () => got.lock.every((r) => r.cpuS < 0.1 * r.waitedS),
    note: `CPU used inside acquire, summed over the processes: ${
      got.lock.map(busy).join(", ")
    }% (Lock), ${got.raw.map(busy).join(", ")}% (raw) of the time they waited`,
  });
  const counters = [...got.lock, ...got.raw].map((r) => r.counter);
  const exact = counters.every((c) => c === expected);
  emit({
    figure: FIGURE,
    case: "counter after each round (Lock, then raw)",
    unit: "count",
    value: median(got.lock.map((r) => r.counter)),
    baselineName: "expected",
    baseline: expected,
    ratio: median(got.lock.map((r) => r.counter)) / expected,
    target: "exact",
    met: exact,
    note: `lock: ${got.lock.map((r) => r.counter).join(", ")}; raw: ${
      got.raw.map((r) => r.counter).join(", ")
    }`,
  });
}

if (args[0] === "--child") {
  await child(args[1] as Mode, args[2]!, args[3]!, Number(args[4]));
} else await main();
