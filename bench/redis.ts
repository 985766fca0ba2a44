// The Redis figure, run by hand (it needs redis-server or REDIS_URL, and is
// not part of `deno task bench`):
//   deno run -A bench/redis.ts | bun bench/redis.ts | node bench/redis.ts
// On one server, in one run: RedisLock (with each client the runtime has)
// against redlock 4.2, @sesamecare-oss/redlock 1.4 and redis-semaphore 5.8
// (all three on ioredis, which is what they take):
//   a. uncontended acquire + release, 31 interleaved rounds of 100; each
//      library against each other one round by round, and against the
//      floor of its client: SET NX PX and a delete script, bare;
//   b. handoff from release to the next holder in another process, p50,
//      next to a bare pub/sub message between two processes, the samples
//      of the two taken alternately;
//   c. 8 processes contending: acquisitions per second and the worst wait.
// `--only a,b` runs only the figures named; REDIS_BENCH_CONTENTION sets the
// cycles per process of c (default 50). Each line of results is printed as
// JSON.
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
import { median, percentile, ratios } from "./_stats.ts";

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

async function handoffChild(lib: HandoffCase, url: string, name: string) {
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

// The least a leased lock costs with a client: SET NX PX, then a script
// that deletes the key if it is still ours (two round trips, what
// redis-semaphore does), with nothing else around them.
async function floor(kind: ClientKind, url: string, name: string): Promise<Locker> {
  const c = await connect(kind, url);
  const script =
    "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end";
  const sha = String(await c.send("SCRIPT", "LOAD", script));
  let n = 0;
  return {
    acquire: async () => {
      const token = String(n++);
      await c.send("SET", name, token, "NX", "PX", String(TTL));
      return () => c.send("EVALSHA", sha, "1", name, token);
    },
    close: () => c.close(),
  };
}

async function uncontended(url: string) {
  const cases = [...LIBS, ...CLIENT_KINDS.map((k) => `floor:${k}`)];
  const lockers = await Promise.all(cases.map((lib) => {
    const name = `bench:unc:${lib}`;
    return lib.startsWith("floor:")
      ? floor(lib.slice(6) as ClientKind, url, name)
      : locker(lib as Lib, url, name);
  }));
  const times = cases.map(() => [] as number[]);
  const n = 100;
  const rounds = 31;
  for (let round = 0; round <= rounds; round++) {
    for (let k = 0; k < cases.length; k++) {
      const i = (k + round) % cases.length;
      const t0 = performance.now();
      for (let j = 0; j < n; j++) await (await lockers[i]!.acquire())();
      if (round > 0) times[i]!.push((performance.now() - t0) / n * 1000);
    }
  }
  // Against each of the others round by round (rounds run back to back see
  // the same load, which drifts between rounds), then the best of them.
  const ratio = (i: number, j: number) => median(ratios(times[i]!, times[j]!));
  const others = LIBS.flatMap((lib, i) => (lib.startsWith("ours") ? [] : [i]));
  for (const [i, lib] of cases.entries()) {
    const extra: Record<string, number> = {
      ratioToBestOther: Math.max(...others.filter((j) => j !== i).map((j) => ratio(i, j))),
    };
    if (lib.startsWith("ours:")) {
      extra.ratioToFloor = ratio(i, cases.indexOf(`floor:${lib.slice(5)}`));
    }
    const what = lib.startsWith("floor:")
      ? `bare SET NX PX + delete script (${lib.slice(6)})`
      : label(lib as Lib);
    row("a uncontended acquire+release", what, "us", median(times[i]!), extra);
  }
  for (const l of lockers) await l.close();
}

type HandoffCase = Lib | "pubsub:node-redis" | "pubsub:ioredis";

/** One child waiting for `kind`, and the parent's side: `sample()` measures one handoff, in ms. */
async function handoffRig(kind: HandoffCase, url: string) {
  const name = `bench:handoff:${kind}:${process.pid}`;
  const child = start(runtimeName, SCRIPT, ["--child", "handoff", kind, url, name]);
  await child.line("ready", 60_000);
  const pub = kind.startsWith("pubsub:")
    ? await connect(kind.slice(7) as ClientKind, url)
    : undefined;
  const parent = pub === undefined ? await locker(kind as Lib, url, name) : undefined;
  let rounds = 0;
  return {
    async sample(): Promise<number> {
      const release = parent ? await parent.acquire() : undefined;
      child.send("go");
      await nth(child, "waiting", ++rounds);
      // A random pause, so that pollers (redis-semaphore every 10 ms) are
      // not caught in phase with the release.
      await sleep(20 + Math.random() * 20);
      const at = wallMs();
      if (release) await release();
      else await pub!.send("PUBLISH", name, String(at));
      const value = Number((await nth(child, "held ", rounds)).slice(5));
      return pub ? value : value - at;
    },
    async close() {
      child.send("stop");
      await child.exited;
      await parent?.close();
      await pub?.close();
    },
  };
}

async function handoff(url: string) {
  const samples = 40;
  const warmup = 3;
  // Each RedisLock client against a bare pub/sub message of the same
  // client (Bun's against node-redis's), their samples taken alternately.
  const pubsub = new Map<string, number[]>();
  for (const kind of CLIENT_KINDS) {
    const base: HandoffCase = kind === "ioredis" ? "pubsub:ioredis" : "pubsub:node-redis";
    const rigs = [await handoffRig(base, url), await handoffRig(`ours:${kind}`, url)];
    const got: number[][] = [[], []];
    for (let i = 0; i < samples + warmup; i++) {
      for (const j of i % 2 === 0 ? [0, 1] : [1, 0]) {
        const ms = await rigs[j]!.sample();
        if (i >= warmup) got[j]!.push(ms);
      }
    }
    for (const rig of rigs) await rig.close();
    const [bare, ours] = got as [number[], number[]];
    pubsub.set(base, [...(pubsub.get(base) ?? []), ...bare]);
    row("b handoff p50", `bare pub/sub message (${base.slice(7)})`, "ms", median(bare), {
      p90: percentile(bare, 90),
      ratioToPubSub: 1,
      pairedWith: label(`ours:${kind}`),
    });
    row("b handoff p50", label(`ours:${kind}`), "ms", median(ours), {
      p90: percentile(ours, 90),
      ratioToPubSub: median(ours) / median(bare),
    });
  }
  // The others retry every 10-200 ms: no pairing needed to tell them apart.
  const bare = median(pubsub.get("pubsub:ioredis")!);
  for (const lib of LIBS.filter((l) => !l.startsWith("ours:"))) {
    const rig = await handoffRig(lib, url);
    const got: number[] = [];
    for (let i = 0; i < samples + warmup; i++) {
      const ms = await rig.sample();
      if (i >= warmup) got.push(ms);
    }
    await rig.close();
    row("b handoff p50", label(lib), "ms", median(got), {
      p90: percentile(got, 90),
      ratioToPubSub: median(got) / bare,
    });
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
  const at = process.argv.indexOf("--only");
  const only = at >= 0 ? process.argv[at + 1]!.split(",") : ["a", "b", "c"];
  const server = await startRedis();
  try {
    console.error(`# Redis figure on ${runtimeName}, server ${server.url}`);
    if (only.includes("a")) await uncontended(server.url);
    if (only.includes("b")) await handoff(server.url);
    if (only.includes("c")) await contention(server.url);
  } finally {
    await server.stop();
  }
}

await main();
