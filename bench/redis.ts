// The Redis figure, run by hand (it needs redis-server or REDIS_URL, and is
// not part of `deno task bench`):
//   deno run -A bench/redis.ts | bun bench/redis.ts | node bench/redis.ts
// On one server, in one run: RedisLock (with each client the runtime has)
// against redlock 4.2, @sesamecare-oss/redlock 1.4 and redis-semaphore 5.8
// (all three on ioredis, which is what they take):
//   a. uncontended acquire + release, rounds interleaved;
//   b. handoff from release to the next holder in another process, p50,
//      next to a bare pub/sub message between two processes;
//   c. 8 processes contending: acquisitions per second and the worst wait.
// Each line of results is printed as JSON as well as in a table.
import process from "node:process";
import { runtimeName } from "../_runtime.ts";
import { RedisLock } from "../redis.ts";
import {
  CLIENT_KINDS,
  type ClientKind,
  connect,
  startRedis,
  type TestClient,
} from "../tests/_redis.ts";
import { type Child, start } from "../tests/_child.ts";
import { median, percentile } from "./_stats.ts";

const SCRIPT = "bench/redis.ts";
const TTL = 10_000;

type Lib = `ours:${ClientKind}` | "redlock" | "sesame" | "redis-semaphore";
const LIBS: Lib[] = [
  ...CLIENT_KINDS.map((k) => `ours:${k}` as Lib),
  "redlock",
  "sesame",
  "redis-semaphore",
];

const LABEL: Record<string, string> = {
  "redlock": "redlock 4.2 (ioredis)",
  "sesame": "@sesamecare-oss/redlock 1.4 (ioredis)",
  "redis-semaphore": "redis-semaphore 5.8 Mutex (ioredis)",
};
function label(lib: Lib): string {
  return LABEL[lib] ?? `RedisLock (${lib.slice(5)})`;
}

/** acquire() resolves to a release function. */
interface Locker {
  acquire(): Promise<() => Promise<unknown>>;
  close(): Promise<void>;
}

async function locker(lib: Lib, url: string, name: string): Promise<Locker> {
  if (lib.startsWith("ours:")) {
    const c = await connect(lib.slice(5) as ClientKind, url);
    const lock = new RedisLock(c.client, name, { ttl: TTL });
    return {
      acquire: async () => {
        await lock.acquire();
        return () => lock.release();
      },
      close: () => c.close(),
    };
  }
  const c: TestClient = await connect("ioredis", url);
  // deno-lint-ignore no-explicit-any
  const client = c.client as any;
  if (lib === "redlock") {
    const { default: Redlock } = await import("redlock");
    const redlock = new Redlock([client], { retryCount: -1 });
    return {
      acquire: async () => {
        const held = await redlock.lock(name, TTL);
        return () => held.unlock();
      },
      close: () => c.close(),
    };
  }
  if (lib === "sesame") {
    const { Redlock } = await import("@sesamecare-oss/redlock");
    const redlock = new Redlock([client], { retryCount: -1 });
    return {
      acquire: async () => {
        const held = await redlock.acquire([name], TTL);
        return () => held.release();
      },
      close: () => c.close(),
    };
  }
  const { Mutex } = await import("redis-semaphore");
  return {
    acquire: async () => {
      const mutex = new Mutex(client, name, { lockTimeout: TTL, acquireTimeout: 600_000 });
      await mutex.acquire();
      return () => mutex.release();
    },
    close: () => c.close(),
  };
}

/** Wall-clock milliseconds with sub-millisecond precision, comparable across processes. */
function wallMs(): number {
  return performance.timeOrigin + performance.now();
}

function lines(): () => Promise<string | undefined> {
  const queue: string[] = [];
  const waiting: ((line: string | undefined) => void)[] = [];
  let rest = "";
  let ended = false;
  process.stdin.setEncoding("utf8");
  process.stdin.on("data", (chunk: string) => {
    rest += chunk;
    const parts = rest.split("\n");
    rest = parts.pop()!;
    for (const l of parts) {
      const w = waiting.shift();
      if (w) w(l);
      else queue.push(l);
    }
  });
  process.stdin.on("end", () => {
    ended = true;
    for (const w of waiting.splice(0)) w(undefined);
  });
  return () =>
    queue.length > 0
      ? Promise.resolve(queue.shift())
      : ended
      ? Promise.resolve(undefined)
      : new Promise((resolve) => waiting.push(resolve));
}

// ---------------------------------------------------------------------------
// Children.

async function handoffChild(
  lib: Lib | "pubsub:node-redis" | "pubsub:ioredis",
  url: string,
  name: string,
) {
  const next = lines();
  if (lib.startsWith("pubsub:")) {
    const kind = lib.slice(7);
    if (kind === "ioredis") {
      const { Redis } = await import("ioredis");
      const sub = new Redis(url);
      sub.on(
        "message",
        (_ch: string, sent: string) => console.log(`held ${wallMs() - Number(sent)}`),
      );
      await sub.subscribe(name);
    } else {
      const { createClient } = await import("redis");
      const sub = createClient({ url });
      await sub.connect();
      await sub.subscribe(name, (sent: string) => console.log(`held ${wallMs() - Number(sent)}`));
    }
    console.log("ready");
    while ((await next()) === "go") console.log("waiting");
    process.exit(0);
  }
  const l = await locker(lib as Lib, url, name);
  console.log("ready");
  while ((await next()) === "go") {
    console.log("waiting");
    const release = await l.acquire();
    const at = wallMs();
    await release();
    console.log(`held ${at}`);
  }
  process.exit(0);
}

async function contendChild(lib: Lib, url: string, name: string, count: number) {
  const l = await locker(lib, url, name);
  console.log("ready");
  const next = lines();
  await next();
  let worst = 0;
  for (let i = 0; i < count; i++) {
    const t0 = performance.now();
    const release = await l.acquire();
    worst = Math.max(worst, performance.now() - t0);
    await release();
  }
  console.log(`done ${worst}`);
  await l.close();
  process.exit(0);
}

// ---------------------------------------------------------------------------
// The parent.

function row(figure: string, lib: string, unit: string, value: number, extra: object = {}) {
  console.log(JSON.stringify({ figure, case: lib, runtime: runtimeName, unit, value, ...extra }));
}

async function uncontended(url: string) {
  const lockers = await Promise.all(LIBS.map((lib) => locker(lib, url, `bench:unc:${lib}`)));
  const times = LIBS.map(() => [] as number[]);
  const n = 200;
  for (let round = 0; round < 8; round++) {
    for (let k = 0; k < LIBS.length; k++) {
      const i = (k + round) % LIBS.length;
      const t0 = performance.now();
      for (let j = 0; j < n; j++) await (await lockers[i]!.acquire())();
      if (round > 0) times[i]!.push((performance.now() - t0) / n * 1000);
    }
  }
  const best = Math.min(
    ...LIBS.map((lib, i) => (lib.startsWith("ours") ? Infinity : median(times[i]!))),
  );
  for (const [i, lib] of LIBS.entries()) {
    row("a uncontended acquire+release", label(lib), "us", median(times[i]!), {
      ratioToBestOther: median(times[i]!) / best,
    });
  }
  for (const l of lockers) await l.close();
}

async function handoff(url: string) {
  const cases = [
    "pubsub:node-redis",
    "pubsub:ioredis",
    ...LIBS,
  ] as const;
  const samples = 40;
  const pubsub = new Map<string, number>();
  for (const lib of cases) {
    const name = `bench:handoff:${lib}:${process.pid}`;
    const child = start(runtimeName, SCRIPT, ["--child", "handoff", lib, url, name]);
    await child.line("ready", 60_000);
    const got: number[] = [];
    let parent: Locker | undefined;
    let pub: TestClient | undefined;
    if (lib.startsWith("pubsub:")) pub = await connect(lib.slice(7) as ClientKind, url);
    else parent = await locker(lib as Lib, url, name);
    let seen = 0;
    for (let i = 0; i < samples + 3; i++) {
      const release = parent ? await parent.acquire() : undefined;
      child.send("go");
      await nth(child, "waiting", i + 1);
      // A random pause, so that pollers (redis-semaphore every 10 ms) are
      // not caught in phase with the release.
      await sleep(20 + Math.random() * 20);
      const at = wallMs();
      if (release) await release();
      else await pub!.send("PUBLISH", name, String(at));
      const line = await nth(child, "held ", ++seen);
      const value = Number(line.slice(5));
      if (i >= 3) got.push(lib.startsWith("pubsub") ? value : value - at);
    }
    child.send("stop");
    await child.exited;
    await parent?.close();
    await pub?.close();
    const p50 = median(got);
    if (lib.startsWith("pubsub")) pubsub.set(lib.slice(7), p50);
    const base = pubsub.get(lib.endsWith("ioredis") ? "ioredis" : "node-redis")!;
    row(
      "b handoff p50",
      lib.startsWith("pubsub") ? `bare pub/sub message (${lib.slice(7)})` : label(lib as Lib),
      "ms",
      p50,
      { p90: percentile(got, 90), ratioToPubSub: p50 / base },
    );
  }
}

function nth(child: Child, prefix: string, n: number): Promise<string> {
  const deadline = performance.now() + 60_000;
  return new Promise((resolve, reject) => {
    const look = () => {
      const found = child.output().split("\n").filter((l) => l.startsWith(prefix));
      if (found.length >= n) return resolve(found[n - 1]!);
      if (performance.now() > deadline) return reject(new Error(`no ${n}th '${prefix}'`));
      setTimeout(look, 0.2);
    };
    look();
  });
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

async function contention(url: string) {
  const per = Number(process.env.REDIS_BENCH_CONTENTION ?? 50);
  for (const lib of LIBS) {
    const name = `bench:contend:${lib}:${process.pid}`;
    const children = Array.from(
      { length: 8 },
      () => start(runtimeName, SCRIPT, ["--child", "contend", lib, url, name, String(per)]),
    );
    for (const c of children) await c.line("ready", 60_000);
    const t0 = performance.now();
    for (const c of children) c.send("go");
    const worst = [];
    for (const c of children) worst.push(Number((await c.line(/^done /, 600_000)).slice(5)));
    const seconds = (performance.now() - t0) / 1000;
    row("c 8 processes contending", label(lib), "acquisitions/s", 8 * per / seconds, {
      worstWaitMs: Math.max(...worst),
    });
  }
}

async function main() {
  const [mode, what, ...rest] = process.argv.slice(2);
  if (mode === "--child") {
    const [lib, url, name, count] = rest;
    if (what === "handoff") return await handoffChild(lib as Lib, url!, name!);
    return await contendChild(lib as Lib, url!, name!, Number(count));
  }
  const server = await startRedis();
  try {
    console.error(`# Redis figure on ${runtimeName}, server ${server.url}`);
    await uncontended(server.url);
    await handoff(server.url);
    await contention(server.url);
  } finally {
    await server.stop();
  }
}

await main();
