// Tests of RedisQueue against a real redis-server (tests/_redis.ts starts
// one, or REDIS_URL names one), with each client the runtime can run, and
// producers and consumers of all three runtimes for the cross-process cases.
import { after, test } from "node:test";
import assert from "node:assert/strict";
import { ClaimLost, RedisQueue } from "../redis.ts";
import {
  CLIENT_KINDS,
  type ClientKind,
  connect,
  type RedisServer,
  skip,
  startRedis,
  type TestClient,
} from "./_redis.ts";
import { type Child, type Runtime, RUNTIMES, sleep, start } from "./_util.ts";

const server: RedisServer | undefined = skip === undefined ? await startRedis() : undefined;
after(() => server?.stop());
const needs = skip === undefined ? {} : { skip };
if (skip !== undefined) console.log(`# Redis queue tests skipped: ${skip}`);
const CHILD = "tests/fixtures/redis_queue_child.ts";
let serial = 0;
function fresh(what: string): string {
  return `test:q:${what}:${process.pid}:${Date.now()}:${serial++}`;
}

async function withClient(kind: ClientKind, fn: (c: TestClient) => Promise<void>): Promise<void> {
  const c = await connect(kind, server!.url);
  try {
    await fn(c);
  } finally {
    await c.close();
  }
}

// The client a child of `runtime` uses, varied across children.
function clientFor(runtime: Runtime, i: number): ClientKind {
  if (runtime === "bun" && i % 3 === 0) return "bun";
  return i % 2 === 0 ? "node-redis" : "ioredis";
}

// ---------------------------------------------------------------------------
// Arguments: checked before anything is sent (no server needed).

test("RedisQueue refuses bad names, options and payloads before anything is sent", async () => {
  const sent: string[] = [];
  const client = {
    send(command: string) {
      sent.push(command);
      return Promise.reject(new Error("must not be sent"));
    },
    duplicate() {
      throw new Error("must not be duplicated");
    },
  };
  const cases: [string, () => unknown, ErrorConstructor | RangeErrorConstructor][] = [
    ["no client", () => new RedisQueue(undefined as never, "a"), TypeError],
    ["a number as name", () => new RedisQueue(client, 5 as never), TypeError],
    ["an empty name", () => new RedisQueue(client, ""), RangeError],
    ["a name with a brace", () => new RedisQueue(client, "a}"), RangeError],
    ["ttl too short", () => new RedisQueue(client, "a", { ttl: 50 }), RangeError],
    ["ttl a string", () => new RedisQueue(client, "a", { ttl: "1" as never }), TypeError],
    ["maxDeliveries 0", () => new RedisQueue(client, "a", { maxDeliveries: 0 }), RangeError],
    ["maxDeliveries 1.5", () => new RedisQueue(client, "a", { maxDeliveries: 1.5 }), RangeError],
    ["maxPayload 0", () => new RedisQueue(client, "a", { maxPayload: 0 }), RangeError],
    ["maxPayload huge", () => new RedisQueue(client, "a", { maxPayload: 2 ** 40 }), RangeError],
    [
      "maxPayload a string",
      () => new RedisQueue(client, "a", { maxPayload: "1" as never }),
      TypeError,
    ],
    ["options a number", () => new RedisQueue(client, "a", 3 as never), TypeError],
  ];
  for (const [what, make, Class] of cases) {
    assert.throws(make, (e: unknown) => {
      assert.ok(e instanceof Class, `${what}: expected ${Class.name}, got ${e}`);
      assert.match((e as Error).message, /^Cannot create RedisQueue: '/, what);
      return true;
    });
  }
  const queue = new RedisQueue(client, "a", { maxPayload: 8 });
  await assert.rejects(queue.put(7 as never), TypeError);
  await assert.rejects(queue.put(new ArrayBuffer(2) as never), TypeError);
  await assert.rejects(
    queue.put("123456789"),
    /^RangeError: Cannot put to RedisQueue "a": 'data' must be at most 8 bytes \(maxPayload\), got 9 bytes$/,
  );
  // Eight characters, but more than eight bytes in UTF-8.
  await assert.rejects(queue.put("ééééé"), RangeError);
  await assert.rejects(queue.put(new Uint8Array(9)), RangeError);
  await assert.rejects(queue.claim({ timeout: -1 }), RangeError);
  await assert.rejects(queue.claim({ signal: {} as never }), TypeError);
  await assert.rejects(queue.list({ limit: 0 }), RangeError);
  assert.deepEqual(sent, []);
  // The default limit is 1 MiB.
  await assert.rejects(
    new RedisQueue(client, "a").put(new Uint8Array(1024 * 1024 + 1)),
    RangeError,
  );
  assert.deepEqual(sent, []);
});

// ---------------------------------------------------------------------------
// One process, each client.

for (const kind of CLIENT_KINDS) {
  test(
    `RedisQueue (${kind}): put, claim, done and release, in order, text and bytes`,
    needs,
    async () => {
      await withClient(kind, async ({ client }) => {
        await using queue = new RedisQueue(client, fresh("basic"));
        assert.equal(await queue.claim(), null);
        const first = await queue.put("één");
        const bytes = new Uint8Array([0, 255, 128, 10]);
        await queue.put(bytes);
        {
          await using claim = (await queue.claim())!;
          assert.equal(claim.id, first);
          assert.equal(claim.name, first);
          assert.equal(await claim.text(), "één");
          assert.equal(claim.deliveries, 1);
          await claim.done();
          assert.ok(claim.finished);
          await assert.rejects(claim.done(), TypeError);
        }
        {
          // Dropped by `await using` without done(): handed back.
          await using claim = (await queue.claim())!;
          assert.deepEqual(await claim.bytes(), bytes);
        }
        const again = (await queue.claim())!;
        assert.deepEqual(await again.bytes(), bytes);
        assert.equal(again.deliveries, 2);
        await again.done();
        assert.equal(await queue.claim(), null);
        const listed = await queue.list();
        assert.deepEqual(listed, { waiting: [], claimed: [], dead: 0 });
      });
    },
  );

  test(
    `RedisQueue (${kind}): list shows what waits and who holds what since when`,
    needs,
    async () => {
      await withClient(kind, async ({ client }) => {
        const name = fresh("list");
        await using producer = new RedisQueue(client, name);
        await using consumer = new RedisQueue(client, name);
        const ids = [await producer.put("a"), await producer.put("b"), await producer.put("c")];
        const before = Date.now();
        await using claim = (await consumer.claim())!;
        const { waiting, claimed, dead } = await producer.list();
        assert.deepEqual(waiting, [{ id: ids[1], deliveries: 0 }, { id: ids[2], deliveries: 0 }]);
        assert.equal(claimed.length, 1);
        assert.equal(claimed[0]!.id, ids[0]);
        assert.equal(claimed[0]!.consumer, consumer.consumer);
        assert.match(consumer.consumer, new RegExp(`:${process.pid}:[0-9a-f]{8}$`));
        assert.equal(claimed[0]!.deliveries, 1);
        // The server's clock and ours, on one host: within a few seconds.
        assert.ok(
          Math.abs(claimed[0]!.since!.getTime() - before) < 5000,
          String(claimed[0]!.since),
        );
        assert.equal(dead, 0);
        await claim.release();
        const after = await producer.list();
        assert.deepEqual(after.waiting.map((w) => w.id), ids);
        assert.deepEqual(after.claimed, []);
      });
    },
  );

  test(
    `RedisQueue (${kind}): a blocked claim is woken by a put, and gives up on its signal`,
    needs,
    async () => {
      await withClient(kind, async ({ client }) => {
        const name = fresh("wait");
        // A long lease: a claim that re-read on its lease's clock would time out.
        await using queue = new RedisQueue(client, name, { ttl: 600_000 });
        const waiting = queue.claim({ timeout: 20_000 });
        await sleep(50);
        const id = await new RedisQueue(client, name).put("wake");
        const claim = (await waiting)!;
        assert.equal(claim.id, id);
        await claim.done();
        const controller = new AbortController();
        const given = queue.claim({ timeout: Infinity, signal: controller.signal });
        await sleep(50);
        controller.abort(new Error("enough"));
        await assert.rejects(given, /enough/);
        assert.equal(await queue.claim({ timeout: 100 }), null);
        // A message put now is not lost to the given-up reads.
        await queue.put("after");
        const later = (await queue.claim({ timeout: 10_000 }))!;
        assert.equal(await later.text(), "after");
        await later.done();
      });
    },
  );

  test(
    `RedisQueue (${kind}): doneAndClaim finishes a message and claims the next, null when none waits, or waits for one`,
    needs,
    async () => {
      await withClient(kind, async ({ client }) => {
        const name = fresh("next");
        await using queue = new RedisQueue(client, name);
        const ids = [await queue.put("a"), await queue.put("b"), await queue.put("c")];
        const first = (await queue.claim())!;
        assert.equal(first.id, ids[0]);
        // Bad options: refused before anything is sent, and the claim stays open.
        await assert.rejects(first.doneAndClaim({ timeout: -1 }), RangeError);
        await assert.rejects(first.doneAndClaim({ signal: "no" as never }), TypeError);
        await assert.rejects(first.doneAndClaim(5 as never), TypeError);
        assert.equal(first.finished, false);
        const second = (await first.doneAndClaim())!;
        assert.ok(first.finished);
        assert.equal(first.signal.aborted, false);
        await assert.rejects(first.doneAndClaim(), TypeError);
        await assert.rejects(first.done(), TypeError);
        assert.equal(second.id, ids[1]);
        assert.equal(await second.text(), "b");
        assert.equal(second.deliveries, 1);
        let listed = await queue.list();
        assert.deepEqual(listed.waiting, [{ id: ids[2], deliveries: 0 }]);
        assert.deepEqual(listed.claimed.map((c) => [c.id, c.consumer]), [[ids[1], queue.consumer]]);
        const third = (await second.doneAndClaim())!;
        assert.equal(await third.text(), "c");
        // The queue is empty: the last one is done, and nothing is claimed.
        assert.equal(await third.doneAndClaim(), null);
        assert.ok(third.finished);
        assert.deepEqual(await queue.list(), { waiting: [], claimed: [], dead: 0 });
        // With a timeout: done, then a blocking wait that a put wakes.
        await queue.put("d");
        const fourth = (await queue.claim())!;
        const waiting = fourth.doneAndClaim({ timeout: 20_000 });
        await sleep(50);
        const id = await new RedisQueue(client, name).put("e");
        const fifth = (await waiting)!;
        assert.equal(fifth.id, id);
        // A wait given up: the done stands, nothing is claimed.
        const controller = new AbortController();
        const given = fifth.doneAndClaim({ timeout: Infinity, signal: controller.signal });
        await sleep(50);
        controller.abort(new Error("enough"));
        await assert.rejects(given, /enough/);
        listed = await queue.list();
        assert.deepEqual(listed, { waiting: [], claimed: [], dead: 0 });
        // A released message: doneAndClaim takes it over as claim() does.
        await queue.put("f");
        await queue.put("g");
        const f = (await queue.claim())!;
        const g = (await queue.claim())!;
        await g.release();
        const again = (await f.doneAndClaim())!;
        assert.equal(again.id, g.id);
        assert.equal(again.deliveries, 2);
        await again.done();
        assert.deepEqual(await queue.list(), { waiting: [], claimed: [], dead: 0 });
      });
    },
  );

  test(
    `RedisQueue (${kind}): a stale doneAndClaim is refused with ClaimLost and claims nothing`,
    needs,
    async () => {
      await withClient(kind, async ({ client }) => {
        const name = fresh("stale-next");
        // The slow consumer renews every 200 s; the other takes over what
        // has been idle for 200 ms.
        await using slow = new RedisQueue(client, name, { ttl: 600_000 });
        await using other = new RedisQueue(client, name, { ttl: 200 });
        const id = await slow.put("taken over");
        const next = await slow.put("still waiting");
        const stale = (await slow.claim())!;
        assert.equal(stale.id, id);
        await sleep(300);
        const taken = (await other.claim())!;
        assert.equal(taken.id, id);
        assert.equal(taken.deliveries, 2);
        await assert.rejects(stale.doneAndClaim(), (e: unknown) => {
          assert.ok(e instanceof ClaimLost, String(e));
          assert.equal(
            e.message,
            `Cannot finish message ${id} of RedisQueue "${name}": its lease ended and consumer '${other.consumer}' has taken it over (delivery 2)`,
          );
          return true;
        });
        assert.ok(stale.finished);
        assert.ok(stale.signal.aborted);
        assert.ok(stale.signal.reason instanceof ClaimLost);
        // The refused call took nothing: the next message still waits.
        const listed = await other.list();
        assert.deepEqual(listed.waiting, [{ id: next, deliveries: 0 }]);
        assert.deepEqual(listed.claimed.map((c) => [c.id, c.consumer]), [[id, other.consumer]]);
        // The new holder's doneAndClaim goes through and takes it.
        const last = (await taken.doneAndClaim())!;
        assert.equal(last.id, next);
        assert.equal(await last.doneAndClaim(), null);
        assert.deepEqual(await other.list(), { waiting: [], claimed: [], dead: 0 });
      });
    },
  );

  test(
    `RedisQueue (${kind}): consumers quiet for two leases and holding nothing leave the group (one holding a message stays), and a blocked one still gets its message`,
    needs,
    async () => {
      await withClient(kind, async (c) => {
        const name = fresh("forget");
        const ttl = 200;
        // A consumer that took one message and finished it, then went away
        // without close() (as a killed one does).
        const gone = new RedisQueue(c.client, name, { ttl });
        await gone.put("finished");
        await (await gone.claim())!.done();
        // One that holds a message (renewing every 200 s: idle on the server).
        await using holder = new RedisQueue(c.client, name, { ttl: 600_000 });
        await holder.put("held");
        const held = (await holder.claim())!;
        // One that finished a message too, then blocked in a read for longer
        // than two leases of the others.
        await using blocked = new RedisQueue(c.client, name, { ttl: 600_000 });
        await blocked.put("finished too");
        await (await blocked.claim())!.done();
        const waiting = blocked.claim({ timeout: 20_000 });
        await sleep(2 * ttl + 300);
        assert.deepEqual(
          (await consumersOf(c, name)).map((x) => x.name).sort(),
          [blocked.consumer, gone.consumer, holder.consumer].sort(),
        );
        // The next take of a queue with ttl 200 first removes the consumers
        // idle for more than 400 ms that hold nothing: the one that went
        // away, and the blocked one (made again when its read is served).
        // Then it takes over the held message, past its lease for this
        // queue; its consumer held it when it looked, and stays for now.
        await using sweeper = new RedisQueue(c.client, name, { ttl });
        const taken = (await sweeper.claim())!;
        assert.equal(taken.id, held.id);
        assert.deepEqual(
          (await consumersOf(c, name)).map((x) => x.name).sort(),
          [holder.consumer, sweeper.consumer].sort(),
        );
        const id = await sweeper.put("for the blocked one");
        const woken = (await waiting)!;
        assert.equal(woken.id, id);
        const listed = await sweeper.list();
        assert.deepEqual(
          listed.claimed.map((x) => [x.id, x.consumer]).sort(),
          [[held.id, sweeper.consumer], [id, blocked.consumer]].sort(),
        );
        await woken.done();
        await assert.rejects(held.done(), ClaimLost);
        // A lease later, the next take removes the consumer that lost its
        // message (and the one that went quiet after its read).
        await sleep(2 * ttl + 300);
        assert.equal(await taken.doneAndClaim(), null);
        assert.deepEqual(
          (await consumersOf(c, name)).map((x) => x.name),
          [sweeper.consumer],
        );
        assert.deepEqual(await sweeper.list(), { waiting: [], claimed: [], dead: 0 });
      });
    },
  );

  test(
    `RedisQueue (${kind}): a message past maxDeliveries goes to the dead-letter stream`,
    needs,
    async (t) => {
      await withClient(kind, async (c) => {
        const name = fresh("dead");
        const ttl = 200;
        await using queue = new RedisQueue(c.client, name, { ttl, maxDeliveries: 3 });
        const id = await queue.put("poison");
        for (let delivery = 1; delivery <= 3; delivery++) {
          const claim = (await queue.claim({ timeout: 10_000 }))!;
          assert.equal(claim.id, id);
          assert.equal(claim.deliveries, delivery);
          // Work that always fails: handed back (by `await using` in a worker).
          await claim.release();
        }
        assert.equal(await queue.claim(), null);
        const listed = await queue.list();
        assert.deepEqual([listed.waiting, listed.claimed, listed.dead], [[], [], 1]);
        const entries = await c.send("XRANGE", queue.deadLetterKey, "-", "+") as unknown[][];
        const fields = (entries[0]![1] as unknown[]).map(String);
        assert.deepEqual(fields, ["id", id, "deliveries", "3", "s", "poison"]);
        t.diagnostic(`dead letter: ${fields.join(" ")}`);
      });
    },
  );
}

// The consumers of the queue's group, from XINFO CONSUMERS (flat arrays
// in RESP2, maps in RESP3).
async function consumersOf(
  c: TestClient,
  name: string,
): Promise<{ name: string; pending: number }[]> {
  const reply = await c.send("XINFO", "CONSUMERS", `filestore:queue:{${name}}:stream`, "filestore");
  return (reply as unknown[]).map((row) => {
    let info: Record<string, unknown>;
    if (Array.isArray(row)) {
      info = {};
      for (let i = 0; i + 1 < row.length; i += 2) info[String(row[i])] = row[i + 1];
    } else if (row instanceof Map) info = Object.fromEntries(row);
    else info = row as Record<string, unknown>;
    return { name: String(info.name), pending: Number(info.pending) };
  });
}

// ---------------------------------------------------------------------------
// Processes of all three runtimes.

const COUNT = Number(process.env.REDIS_QUEUE_COUNT ?? 20_000);

async function results(name: string): Promise<Map<string, number>> {
  const c = await connect(CLIENT_KINDS[0]!, server!.url);
  try {
    const flat = (await c.send("HGETALL", `${name}:results`)) as unknown;
    const map = new Map<string, number>();
    if (Array.isArray(flat)) {
      for (let i = 0; i < flat.length; i += 2) map.set(String(flat[i]), Number(flat[i + 1]));
    } else {
      for (const [k, v] of Object.entries(flat as Record<string, unknown>)) map.set(k, Number(v));
    }
    return map;
  } finally {
    await c.close();
  }
}

async function nothingLeft(name: string): Promise<void> {
  await withClient(CLIENT_KINDS[0]!, async ({ client }) => {
    const listed = await new RedisQueue(client, name).list();
    assert.deepEqual(listed, { waiting: [], claimed: [], dead: 0 });
  });
}

async function stopAll(consumers: Child[]): Promise<void> {
  for (const c of consumers) c.send("stop");
  for (const c of consumers) assert.equal(await c.exited, 0, c.output());
}

test(
  `RedisQueue: 2 producers and 8 consumers of the three runtimes, ${COUNT} messages, each done exactly once`,
  needs,
  async () => {
    const name = fresh("many");
    const consumers: Child[] = [];
    try {
      for (let i = 0; i < 8; i++) {
        const runtime = RUNTIMES[i % 3]!;
        // Half finish with done(), half with doneAndClaim().
        const mode = i % 2 === 0 ? "consume" : "chain";
        consumers.push(
          start(runtime, CHILD, [mode, server!.url, clientFor(runtime, i), name, "10000"]),
        );
      }
      for (const c of consumers) await c.line("ready", 60_000);
      const half = Math.floor(COUNT / 2);
      const producers = [
        start("node", CHILD, ["produce", server!.url, "ioredis", name, "0", String(half)]),
        start("bun", CHILD, ["produce", server!.url, "bun", name, String(half), String(COUNT)]),
      ];
      for (const p of producers) await p.line("produced", 120_000);
      let done = new Map<string, number>();
      for (let i = 0; i < 1200 && done.size < COUNT; i++) {
        await sleep(100);
        done = await results(name);
      }
      await stopAll(consumers);
      done = await results(name);
      assert.equal(done.size, COUNT);
      for (const [payload, times] of done) assert.equal(times, 1, `${payload} done ${times} times`);
      const counts = consumers.map((c) => c.output().split("\nclaimed ").length - 1);
      console.log(`# claims per consumer: ${counts.join(" ")}`);
      await nothingLeft(name);
    } finally {
      for (const c of consumers) c.kill("SIGKILL");
    }
  },
);

const KILLS = Number(process.env.REDIS_QUEUE_KILLS ?? 50);

// Resolves once `child` prints a "claimed" line after the first `from`
// characters of its output.
async function claimedAfter(child: Child, from: number): Promise<void> {
  for (let i = 0; i < 12_000; i++) {
    if (/(^|\n)claimed /.test(child.output().slice(from))) return;
    if (child.process.exitCode !== null) throw new Error(`consumer exited: ${child.output()}`);
    await sleep(2);
  }
  throw new Error("no claim within 24 s");
}

// Consumers that finish each message with done() ("consume"), or with
// doneAndClaim() ("chain"), where a kill also lands between the done of
// one message and the claim of the next.
for (const [mode, kills] of [["consume", KILLS], ["chain", Math.ceil(KILLS / 2)]] as const) {
  test(
    `RedisQueue: ${kills} ${
      mode === "chain" ? "doneAndClaim " : ""
    }consumers SIGKILLed while holding claims, every message still done, duplicates <= kills`,
    needs,
    () => killedConsumers(mode, kills),
  );
}

async function killedConsumers(mode: "consume" | "chain", target: number): Promise<void> {
  const name = fresh(`kills-${mode}`);
  const ttl = 1000;
  const consumers: Child[] = [];
  let started = 0;
  const startConsumer = () => {
    const runtime = RUNTIMES[started % 3]!;
    const child = start(runtime, CHILD, [
      mode,
      server!.url,
      clientFor(runtime, started),
      name,
      String(ttl),
      "10",
    ]);
    started++;
    consumers.push(child);
    return child;
  };
  const c = await connect(CLIENT_KINDS[0]!, server!.url);
  try {
    const queue = new RedisQueue(c.client, name);
    let total = 0;
    // Keeps work waiting, so that every kill lands on a busy consumer.
    const topUp = async () => {
      if ((await queue.list({ limit: 200 })).waiting.length >= 100) return;
      const puts = [];
      for (let i = 0; i < 200; i++) puts.push(queue.put(`m${total++}`));
      await Promise.all(puts);
    };
    await topUp();
    for (let i = 0; i < 4; i++) startConsumer();
    let kills = 0;
    while (kills < target) {
      await topUp();
      const victim = consumers.find((c) => c.process.exitCode === null && !c.process.killed)!;
      await claimedAfter(victim, victim.output().length);
      victim.kill("SIGKILL");
      await victim.exited;
      kills++;
      startConsumer();
    }
    let done = new Map<string, number>();
    for (let i = 0; i < 1200 && done.size < total; i++) {
      await sleep(100);
      done = await results(name);
    }
    const live = consumers.filter((c) => c.process.exitCode === null && !c.process.killed);
    await stopAll(live);
    done = await results(name);
    assert.equal(done.size, total, "every message done");
    let twice = 0;
    for (const times of done.values()) twice += times - 1;
    const refused = consumers.reduce((n, c) => n + c.output().split("\nrefused ").length - 1, 0);
    // Claims of a message that a killed consumer held.
    const redelivered = consumers.reduce(
      (n, c) => n + (c.output().match(/^claimed \S+ [2-9]\d*$/gm)?.length ?? 0),
      0,
    );
    console.log(
      `# ${kills} kills, ${total} messages: ${redelivered} redelivered, ${twice} done more than once, ${refused} done() refused`,
    );
    assert.ok(redelivered > 0, "the kills landed on held claims");
    assert.ok(twice <= kills, `${twice} duplicates for ${kills} kills`);
    await nothingLeft(name);
  } finally {
    for (const child of consumers) child.kill("SIGKILL");
    await c.close();
  }
}

for (const runtime of RUNTIMES) {
  test(
    `RedisQueue (${runtime}): a consumer killed after doneAndClaim answered: the message it finished stays done, the next comes back after the lease`,
    needs,
    async () => {
      const name = fresh("kill-next");
      const ttl = 500;
      await withClient(CLIENT_KINDS[0]!, async ({ client }) => {
        await using queue = new RedisQueue(client, name, { ttl });
        const finished = await queue.put("finished, then killed");
        const next = await queue.put("taken next, then killed");
        const child = start(runtime, CHILD, [
          "hold",
          server!.url,
          clientFor(runtime, 2),
          name,
          String(ttl),
        ]);
        try {
          assert.equal((await child.line(/^claimed /)).split(" ")[1], finished);
          child.send("next");
          assert.equal(await child.line(/^(next|refused)/, 10_000), `next ${next}`);
          child.kill("SIGKILL");
          await child.exited;
          // The next message is the dead consumer's until its lease ends,
          // then another's; the finished one never comes back.
          const listed = await queue.list();
          assert.deepEqual(listed.waiting, []);
          assert.deepEqual(listed.claimed.map((c) => c.id), [next]);
          const again = (await queue.claim({ timeout: 10_000 }))!;
          assert.equal(again.id, next);
          assert.equal(again.deliveries, 2);
          assert.equal(await again.doneAndClaim(), null);
          assert.deepEqual(await queue.list(), { waiting: [], claimed: [], dead: 0 });
        } finally {
          child.kill("SIGKILL");
        }
      });
    },
  );
}

for (const runtime of RUNTIMES) {
  test(
    `RedisQueue (${runtime}): a consumer stopped past its lease loses its message to another, and its done is refused`,
    needs,
    async () => {
      const name = fresh("sigstop");
      const ttl = 500;
      await withClient(CLIENT_KINDS[0]!, async ({ client }) => {
        await using queue = new RedisQueue(client, name, { ttl });
        const id = await queue.put("stopped work");
        const stopped = start(runtime, CHILD, [
          "hold",
          server!.url,
          clientFor(runtime, 1),
          name,
          String(ttl),
        ]);
        try {
          assert.equal((await stopped.line(/^claimed /)).split(" ")[1], id);
          process.kill(stopped.pid, "SIGSTOP");
          // Within the lease it is not handed out; after it, it is.
          const next = (await queue.claim({ timeout: 10_000 }))!;
          assert.equal(next.id, id);
          assert.equal(next.deliveries, 2);
          process.kill(stopped.pid, "SIGCONT");
          stopped.send("done");
          const refused = await stopped.line(/^(refused|done)/, 10_000);
          assert.match(
            refused,
            new RegExp(
              `^refused ClaimLost: Cannot finish message ${id} of RedisQueue "${name}": its lease ended and consumer '${queue.consumer}' has taken it over \\(delivery 2\\)$`,
            ),
          );
          assert.equal(await stopped.exited, 0);
          assert.match(stopped.output(), /^lost (Lost|Cannot finish) message /m);
          await next.done();
          assert.deepEqual(await queue.list(), { waiting: [], claimed: [], dead: 0 });
        } finally {
          stopped.kill("SIGKILL");
        }
      });
    },
  );
}

test(
  "RedisQueue: a resolved put survives redis-server SIGKILLed at once (appendonly yes, appendfsync always)",
  {
    skip: skip ?? (server?.own ? undefined : "REDIS_URL names a server; this test starts its own"),
  },
  async () => {
    const durable = await startRedis(["--appendonly", "yes", "--appendfsync", "always"]);
    try {
      for (const kind of CLIENT_KINDS) {
        const name = fresh("durable");
        const c = await connect(kind, durable.url);
        let id: string;
        try {
          id = await new RedisQueue(c.client, name).put(`kept by ${kind}`);
          // As soon as put resolved: the server is SIGKILLed and started again
          // on the same directory.
          await durable.restart();
        } finally {
          await c.close();
        }
        await withDurable(durable, kind, async (client) => {
          const claim = (await new RedisQueue(client, name).claim({ timeout: 5000 }))!;
          assert.ok(claim !== null, `${kind}: the message was lost`);
          assert.equal(claim.id, id);
          assert.equal(await claim.text(), `kept by ${kind}`);
          await claim.done();
        });
      }
    } finally {
      await durable.stop();
    }
  },
);

async function withDurable(
  s: RedisServer,
  kind: ClientKind,
  fn: (client: TestClient["client"]) => Promise<void>,
): Promise<void> {
  const c = await connect(kind, s.url);
  try {
    await fn(c.client);
  } finally {
    await c.close();
  }
}

test(
  "RedisQueue: after redis-server lost everything in a restart, the queue works again and a stale done or doneAndClaim is refused",
  {
    skip: skip ?? (server?.own ? undefined : "REDIS_URL names a server the tests may not restart"),
  },
  async () => {
    const clients = await Promise.all(CLIENT_KINDS.map((kind) => connect(kind, server!.url)));
    try {
      const name = fresh("restart");
      const queues = clients.map((c) => new RedisQueue(c.client, name, { ttl: 1000 }));
      await queues[0]!.put("before");
      await queues[1]!.put("before too");
      const held = (await queues[0]!.claim())!;
      const chained = (await queues[1]!.claim())!;
      await server!.restart();
      // The stream and its group are gone: the next use makes them again.
      for (const [i, queue] of queues.entries()) {
        const id = await retried(() => queue.put(`after ${i}`));
        const claim = (await queue.claim({ timeout: 10_000 }))!;
        assert.equal(claim.id, id);
        await claim.done();
      }
      await assert.rejects(held.done(), (e: unknown) => {
        assert.ok(e instanceof ClaimLost, String(e));
        assert.match(e.message, /it is no longer pending/);
        return true;
      });
      // Refused too, and it claims nothing: a message put now stays waiting.
      const waiting = await queues.at(-1)!.put("waiting");
      await assert.rejects(chained.doneAndClaim(), (e: unknown) => {
        assert.ok(e instanceof ClaimLost, String(e));
        assert.match(e.message, /it is no longer pending/);
        return true;
      });
      const listed = await queues.at(-1)!.list();
      assert.deepEqual(listed.waiting, [{ id: waiting, deliveries: 0 }]);
      assert.deepEqual(listed.claimed, []);
    } finally {
      for (const c of clients) await c.close();
    }
  },
);

// The clients reconnect by themselves after a restart; the first command
// may fail while they do.
async function retried<T>(fn: () => Promise<T>): Promise<T> {
  for (let i = 0;; i++) {
    try {
      return await fn();
    } catch (e) {
      if (i === 50) throw e;
      await sleep(100);
    }
  }
}
