// The Redis queue figures, run by hand (they need redis-server or
// REDIS_URL, and are not part of `deno task bench`):
//   deno run -A bench/redis_queue.ts | bun bench/redis_queue.ts | node bench/redis_queue.ts
// On one server, in one run, in one process (producer and consumers are
// loops in this process, each consumer with a connection of its own):
//   a. messages per second end to end (put -> claim -> done, no-op work)
//      with 1 and 8 consumers: RedisQueue with each client the runtime
//      has, its consumers finishing each message and taking the next with
//      one doneAndClaim() (one round trip), and with claim() then done()
//      (two); BullMQ 6.7 (Queue.add + Worker, ioredis) and, for scale, a
//      FileStore on this host's disk;
//   b. from a consumer's SIGKILL to its message being claimed by another:
//      RedisQueue (the lease, ttl 1000 ms) and FileStore (the lock, found
//      by claim()'s recover(), at most once a second by default).
// Each result is printed as a JSON line too.
import process from "node:process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { FileStore } from "../filestore.ts";
import { type RedisClaim, RedisQueue } from "../redis.ts";
import { CLIENT_KINDS, type ClientKind, connect, startRedis } from "../tests/_redis.ts";
import { RUNTIMES, start } from "../tests/_child.ts";
import { median } from "./_stats.ts";

const N = Number(process.env.N ?? 5000);
const ROUNDS = Number(process.env.ROUNDS ?? 2);
const server = await startRedis();
const url = server.url;
let serial = 0;
const fresh = (what: string) => `bench:${what}:${process.pid}:${serial++}`;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

// Puts `n` messages, 16 in flight.
async function produce(put: (data: string) => Promise<unknown>, n: number): Promise<void> {
  const batch: Promise<unknown>[] = [];
  for (let i = 0; i < n; i++) {
    batch.push(put(`m${i}`));
    if (batch.length === 16) await Promise.all(batch.splice(0));
  }
  await Promise.all(batch);
}

// A consumer's loop: claim() then done(), or doneAndClaim() (the wait for
// more work, when none is left, is a claim of its own, so that the last
// done is counted when it is done).
type Loop = (q: RedisQueue, finished: () => boolean, count: () => void) => Promise<void>;

const twoTrips: Loop = async (q, finished, count) => {
  while (!finished()) {
    const claim = await q.claim({ timeout: 200 });
    if (claim === null) continue;
    await claim.done();
    count();
  }
};

const oneTrip: Loop = async (q, finished, count) => {
  let claim: RedisClaim | null = null;
  while (!finished()) {
    if (claim === null) {
      claim = await q.claim({ timeout: 200 });
      continue;
    }
    claim = await claim.doneAndClaim();
    count();
  }
  await claim?.release();
};

async function ours(kind: ClientKind, consumers: number, loop: Loop): Promise<number> {
  const name = fresh("ours");
  const producer = await connect(kind, url);
  const clients = await Promise.all(Array.from({ length: consumers }, () => connect(kind, url)));
  const queues = clients.map((c) => new RedisQueue(c.client, name));
  await queues[0]!.list(); // makes the group
  let done = 0;
  let end = 0;
  const t0 = performance.now();
  const loops = queues.map((q) =>
    loop(q, () => done >= N, () => {
      if (++done === N) end = performance.now();
    })
  );
  const put = new RedisQueue(producer.client, name);
  await produce((d) => put.put(d), N);
  await Promise.all(loops);
  const rate = N / ((end - t0) / 1000);
  for (const q of queues) await q.close();
  for (const c of [producer, ...clients]) await c.close();
  return rate;
}

async function bullmq(consumers: number): Promise<number> {
  const { Queue, Worker } = await import("bullmq");
  const { port } = new URL(url);
  const connection = { host: "127.0.0.1", port: Number(port), maxRetriesPerRequest: null };
  const name = fresh("bullmq").replaceAll(":", "-");
  const queue = new Queue(name, { connection });
  let done = 0;
  let finished!: () => void;
  const all = new Promise<void>((r) => finished = r);
  const t0 = performance.now();
  const workers = Array.from({ length: consumers }, () => {
    const w = new Worker(name, async () => {}, { connection, concurrency: 1 });
    w.on("completed", () => {
      if (++done === N) finished();
    });
    return w;
  });
  await produce(
    (d) => queue.add("job", d, { removeOnComplete: true, removeOnFail: true }),
    N,
  );
  await all;
  const rate = N / ((performance.now() - t0) / 1000);
  await Promise.all(workers.map((w) => w.close()));
  await queue.obliterate({ force: true });
  await queue.close();
  return rate;
}

async function filestore(consumers: number): Promise<number> {
  const dir = mkdtempSync(join(tmpdir(), "bench-queue-"));
  try {
    const store = new FileStore(dir);
    await store.prepare();
    const stores = Array.from({ length: consumers }, () => new FileStore(dir));
    let done = 0;
    let end = 0;
    const t0 = performance.now();
    const loops = stores.map(async (s) => {
      while (done < N) {
        const claim = await s.claim();
        if (claim === null) {
          await sleep(1);
          continue;
        }
        await claim.done();
        if (++done === N) end = performance.now();
      }
    });
    await produce((d) => store.put(d), N);
    await Promise.all(loops);
    return N / ((end - t0) / 1000);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

// b. From SIGKILL to the message claimed by another consumer.
async function recoveryRedis(): Promise<number> {
  const name = fresh("recover");
  const ttl = 1000;
  const c = await connect(CLIENT_KINDS[0]!, url);
  try {
    const queue = new RedisQueue(c.client, name, { ttl });
    await queue.put("job");
    const runtime = RUNTIMES[serial % 3]!;
    const holder = start(runtime, "tests/fixtures/redis_queue_child.ts", [
      "hold",
      url,
      "ioredis",
      name,
      String(ttl),
    ]);
    await holder.line(/^claimed /);
    const waiting = queue.claim({ timeout: 30_000 });
    holder.kill("SIGKILL");
    const killed = performance.now();
    const claim = (await waiting)!;
    const ms = performance.now() - killed;
    await claim.done();
    return ms;
  } finally {
    await c.close();
  }
}

async function recoveryFileStore(): Promise<number> {
  const dir = mkdtempSync(join(tmpdir(), "bench-recover-"));
  try {
    const store = new FileStore(dir);
    await store.prepare();
    await store.put("job");
    const runtime = RUNTIMES[serial++ % 3]!;
    const holder = start(runtime, "tests/fixtures/claim_worker.ts", ["hold", dir]);
    await holder.line(/^claimed /);
    // A consumer that has been asking for work (so recover() ran lately).
    let claim = await store.claim();
    holder.kill("SIGKILL");
    const killed = performance.now();
    while (claim === null) {
      await sleep(2);
      claim = await store.claim();
    }
    const ms = performance.now() - killed;
    await claim.done();
    return ms;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

function report(row: Record<string, unknown>): void {
  console.log(JSON.stringify(row));
}

console.log(
  `# ${process.argv[1]} on ${
    typeof (globalThis as { Bun?: unknown }).Bun !== "undefined"
      ? "bun"
      : "Deno" in globalThis
      ? "deno"
      : "node"
  }: ${N} messages, ${ROUNDS} rounds, median rate (messages/s)`,
);
try {
  for (const consumers of [1, 8]) {
    const rates: Record<string, number[]> = {};
    for (let round = 0; round < ROUNDS; round++) {
      // Interleaved, so that the machine's load falls on all alike.
      for (const kind of CLIENT_KINDS) {
        (rates[`RedisQueue (${kind}), doneAndClaim`] ??= []).push(
          await ours(kind, consumers, oneTrip),
        );
        (rates[`RedisQueue (${kind}), claim + done`] ??= []).push(
          await ours(kind, consumers, twoTrips),
        );
      }
      (rates["BullMQ 6.7 (ioredis)"] ??= []).push(await bullmq(consumers));
      (rates["FileStore (one host, fsync)"] ??= []).push(await filestore(consumers));
    }
    const bulls = rates["BullMQ 6.7 (ioredis)"]!;
    const bull = median(bulls);
    for (const [lib, list] of Object.entries(rates)) {
      const rate = median(list);
      // The load on this machine drifts: each round's ratio is to the
      // BullMQ run next to it, and their median and minimum are given too.
      const ratios = list.map((r, i) => r / bulls[i]!);
      console.log(
        `${consumers} consumer(s)  ${lib.padEnd(42)} ${rate.toFixed(0).padStart(7)} /s  ${
          (rate / bull).toFixed(2)
        }x BullMQ (per round: median ${median(ratios).toFixed(2)}x, min ${
          Math.min(...ratios).toFixed(2)
        }x)`,
      );
      report({
        figure: "rate",
        consumers,
        lib,
        rates: list.map(Math.round),
        rate: Math.round(rate),
        vsBullmq: rate / bull,
        vsBullmqPerRound: ratios,
      });
    }
  }
  const redis: number[] = [];
  const files: number[] = [];
  for (let i = 0; i < 3; i++) {
    redis.push(await recoveryRedis());
    files.push(await recoveryFileStore());
  }
  console.log(
    `killed consumer -> message claimed again: RedisQueue (ttl 1000 ms) ${
      median(redis).toFixed(0)
    } ms [${redis.map((m) => m.toFixed(0)).join(", ")}], FileStore ${
      median(files).toFixed(0)
    } ms [${files.map((m) => m.toFixed(0)).join(", ")}]`,
  );
  report({ figure: "recovery", redisTtl1000: redis, filestore: files });
} finally {
  await server.stop();
}
process.exit(0);
