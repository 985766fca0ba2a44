// Tests of redis.ts against a real redis-server (tests/_redis.ts starts
// one, or REDIS_URL names one), with each client the runtime can run, and
// children of all three runtimes for the cross-process cases.
import { after, test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { AlreadyLocked } from "../errors.ts";
import { LockLost, type RedisClientLike, RedisLock, RedisSemaphore } from "../redis.ts";
import {
  CLIENT_KINDS,
  type ClientKind,
  connect,
  type RedisServer,
  skip,
  startRedis,
  type TestClient,
} from "./_redis.ts";
import { type Child, type Runtime, RUNTIMES, sleep, start, tempDir } from "./_util.ts";

const server: RedisServer | undefined = skip === undefined ? await startRedis() : undefined;
after(() => server?.stop());
const needs = skip === undefined ? {} : { skip };
if (skip !== undefined) console.log(`# Redis tests skipped: ${skip}`);
const CHILD = "tests/fixtures/redis_child.ts";
let serial = 0;
// A name no earlier run used (REDIS_URL may name a server that keeps data).
function fresh(what: string): string {
  return `test:${what}:${process.pid}:${Date.now()}:${serial++}`;
}

async function withClient(kind: ClientKind, fn: (c: TestClient) => Promise<void>): Promise<void> {
  const c = await connect(kind, server!.url);
  try {
    await fn(c);
  } finally {
    await c.close();
  }
}

function aborted(signal: AbortSignal, ms: number): Promise<unknown> {
  return new Promise((resolve, reject) => {
    if (signal.aborted) return resolve(signal.reason);
    const timer = setTimeout(() => reject(new Error(`signal not aborted within ${ms} ms`)), ms);
    signal.addEventListener("abort", () => {
      clearTimeout(timer);
      resolve(signal.reason);
    }, { once: true });
  });
}

// ---------------------------------------------------------------------------
// Arguments: checked before anything is sent (no server needed).

test("RedisLock and RedisSemaphore refuse bad arguments before anything is sent", async () => {
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
    ["no client", () => new RedisLock(undefined as never, "a"), TypeError],
    ["a client without duplicate", () => new RedisLock({ send() {} } as never, "a"), TypeError],
    ["a number as name", () => new RedisLock(client, 5 as never), TypeError],
    ["an empty name", () => new RedisLock(client, ""), RangeError],
    ["a name with a brace", () => new RedisLock(client, "a{b}"), RangeError],
    ["a name too long", () => new RedisLock(client, "x".repeat(1001)), RangeError],
    ["ttl a string", () => new RedisLock(client, "a", { ttl: "5" as never }), TypeError],
    ["ttl too short", () => new RedisLock(client, "a", { ttl: 99 }), RangeError],
    ["ttl a fraction", () => new RedisLock(client, "a", { ttl: 1000.5 }), RangeError],
    ["ttl too long", () => new RedisLock(client, "a", { ttl: 2 ** 31 }), RangeError],
    ["timeout negative", () => new RedisLock(client, "a", { timeout: -1 }), RangeError],
    ["shared a string", () => new RedisLock(client, "a", { shared: "yes" as never }), TypeError],
    ["signal not a signal", () => new RedisLock(client, "a", { signal: {} as never }), TypeError],
    ["options a string", () => new RedisLock(client, "a", "x" as never), TypeError],
    ["maximum a string", () => new RedisSemaphore(client, "a", "2" as never), TypeError],
    ["maximum 0", () => new RedisSemaphore(client, "a", 0), RangeError],
    ["maximum a fraction", () => new RedisSemaphore(client, "a", 2.5), RangeError],
    ["semaphore name empty", () => new RedisSemaphore(client, "", 2), RangeError],
  ];
  for (const [what, make, Class] of cases) {
    assert.throws(make, (e: unknown) => {
      assert.ok(e instanceof Class, `${what}: expected ${Class.name}, got ${e}`);
      assert.match((e as Error).message, /^Cannot create Redis(Lock|Semaphore): '/, what);
      return true;
    });
  }
  const lock = new RedisLock(client, "a");
  await assert.rejects(lock.acquire({ timeout: -5 }), RangeError);
  await assert.rejects(lock.acquire({ failWhenLocked: 1 as never }), TypeError);
  assert.deepEqual(sent, []);
});

test("Real clients fit RedisClientLike without a cast", () => {
  // Type-level: deno check and tsc fail if a client stops fitting.
  type NodeRedis = ReturnType<typeof import("redis").createClient>;
  type IoRedis = InstanceType<typeof import("ioredis").Redis>;
  const fits = (_: RedisClientLike) => true;
  const check = (a: NodeRedis, b: IoRedis) => fits(a) && fits(b);
  assert.equal(typeof check, "function");
});

// ---------------------------------------------------------------------------
// One process, each client.

for (const kind of CLIENT_KINDS) {
  test(`RedisLock (${kind}): a refusal names the holder, and tokens grow`, needs, async () => {
    await withClient(kind, async ({ client }) => {
      const name = fresh("refusal");
      await using first = new RedisLock(client, name);
      const { token } = await first.acquire();
      const other = new RedisLock(client, name, { failWhenLocked: true });
      const refusal = await other.acquire().catch((e) => e);
      assert.ok(refusal instanceof AlreadyLocked, String(refusal));
      assert.equal(refusal.pid, process.pid);
      assert.equal(typeof refusal.hostname, "string");
      assert.match(refusal.message, /held by pid \d+ on host '.+' since \d{4}-\d\d-\d\dT/);
      await assert.rejects(other.acquire({ failWhenLocked: false, timeout: 30 }), AlreadyLocked);
      assert.ok(first.locked);
      assert.equal(await first.acquire(), first.lease);
      await first.release();
      assert.equal(first.locked, false);
      const again = await other.acquire();
      assert.ok(again.token > token);
      await other.release();
    });
  });

  test(
    `RedisLock (${kind}): a waiter is woken by the release, long before the lease ends`,
    needs,
    async () => {
      await withClient(kind, async ({ client }) => {
        const name = fresh("wake");
        const holder = new RedisLock(client, name, { ttl: 60_000 });
        await holder.acquire();
        const waiter = new RedisLock(client, name, { ttl: 60_000 });
        // A waiter that polled or waited for the lease would time out here.
        const waiting = waiter.acquire({ timeout: 10_000 });
        await sleep(50);
        assert.equal(waiter.locked, false);
        await holder.release();
        await waiting;
        assert.ok(waiter.locked);
        await waiter.release();
      });
    },
  );

  test(`RedisLock (${kind}): shared holders coexist and keep a writer out`, needs, async () => {
    await withClient(kind, async ({ client }) => {
      const name = fresh("shared");
      const readers = [1, 2, 3].map(() => new RedisLock(client, name, { shared: true }));
      for (const r of readers) await r.acquire({ timeout: 0 });
      const writer = new RedisLock(client, name);
      await assert.rejects(writer.acquire({ timeout: 0 }), AlreadyLocked);
      const writing = writer.acquire({ timeout: 10_000 });
      await readers[0]!.release();
      await readers[1]!.release();
      assert.equal(writer.locked, false);
      await readers[2]!.release();
      await writing;
      await assert.rejects(readers[0]!.acquire({ timeout: 0 }), AlreadyLocked);
      await writer.release();
      await readers[0]!.acquire({ timeout: 0 });
      await readers[0]!.release();
    });
  });

  test(
    `RedisSemaphore (${kind}): holds at most its maximum, and a freed slot wakes a waiter`,
    needs,
    async () => {
      await withClient(kind, async ({ client }) => {
        const name = fresh("sem");
        const slots = [1, 2, 3].map(() => new RedisSemaphore(client, name, 3));
        for (const s of slots) await s.acquire({ timeout: 0 });
        const fourth = new RedisSemaphore(client, name, 3);
        await assert.rejects(fourth.acquire({ timeout: 0 }), AlreadyLocked);
        const waiting = fourth.acquire({ timeout: 10_000 });
        await slots[1]!.release();
        await waiting;
        await assert.rejects(slots[1]!.acquire({ timeout: 0 }), AlreadyLocked);
        for (const s of [slots[0]!, slots[2]!, fourth]) await s.release();
        // The lock of the same name is another thing.
        await using lock = new RedisLock(client, name);
        await lock.acquire({ timeout: 0 });
      });
    },
  );

  test(
    `RedisLock (${kind}): tokens stay exact beyond 2^53 (never a Lua number)`,
    needs,
    async () => {
      await withClient(kind, async (c) => {
        const name = fresh("big");
        await c.send("HSET", `filestore:lock:{${name}}:owners`, "n", "9007199254740993");
        const lock = new RedisLock(c.client, name);
        const { token } = await lock.acquire();
        assert.equal(token, 9007199254740994n);
        await lock.release();
        const next = await lock.acquire();
        assert.equal(next.token, 9007199254740995n);
        await lock.release();
      });
    },
  );

  test(
    `RedisLock (${kind}): a lost lock aborts its signal, and its late release leaves the next holder alone`,
    needs,
    async () => {
      await withClient(kind, async (c) => {
        const name = fresh("lost");
        const first = new RedisLock(c.client, name, { ttl: 300 });
        const lease = await first.acquire();
        // What a failover to a replica that missed the write looks like.
        await c.send("DEL", `filestore:lock:{${name}}:owners`);
        const reason = await aborted(lease.signal, 5000);
        assert.ok(reason instanceof LockLost, String(reason));
        assert.equal(first.locked, false);
        const second = new RedisLock(c.client, name, { ttl: 300 });
        const next = await second.acquire({ timeout: 0 });
        assert.ok(next.token > lease.token);
        await first.release();
        await assert.rejects(
          new RedisLock(c.client, name).acquire({ timeout: 0 }),
          AlreadyLocked,
        );
        // Renewals keep the second one's lease beyond its ttl.
        await sleep(700);
        assert.ok(second.locked);
        assert.equal(next.signal.aborted, false);
        await second.release();
      });
    },
  );

  test(
    `RedisLock (${kind}): a killed connection never leaves the lock held twice`,
    needs,
    async () => {
      await withClient(kind, async (c) => {
        const name = fresh("kill");
        const holder = new RedisLock(c.client, name, { ttl: 500 });
        const lease = await holder.acquire();
        const id = String(await c.send("CLIENT", "ID"));
        await withClient(kind, async (killer) => {
          await killer.send("CLIENT", "KILL", "ID", id);
          await sleep(1200);
          const other = new RedisLock(killer.client, name, { ttl: 500 });
          const got = await other.acquire({ timeout: 0 }).then(() => true, () => false);
          // Either the holder kept the lock (its client reconnected and
          // renewed it) or it was told it lost it: never both holding.
          console.log(
            `# ${kind}: after CLIENT KILL the holder ${holder.locked ? "kept" : "lost"} the lock`,
          );
          assert.equal(got, !holder.locked, `holder.locked ${holder.locked}, other got it ${got}`);
          assert.equal(lease.signal.aborted, !holder.locked);
          await other.release();
        });
        await holder.release();
      });
    },
  );

  test(
    `RedisLock (${kind}): a holder whose killed connection stays down past its lease knows it lost the lock before another takes it`,
    needs,
    async () => {
      const name = fresh("kill-lost");
      const ttl = 500;
      // Back only after the lease (ioredis), or never (Bun's, node-redis).
      const cut = await connect(kind, server!.url, { reconnectAfter: 1500 });
      try {
        await withClient(kind, async (other) => {
          const holder = new RedisLock(cut.client, name, { ttl });
          const lease = await holder.acquire();
          await other.send("CLIENT", "KILL", "ID", String(await cut.send("CLIENT", "ID")));
          const next = new RedisLock(other.client, name, { ttl });
          const taken = await next.acquire({ timeout: 10_000 });
          // Never two holders: the holder's signal had aborted by then.
          assert.ok(lease.signal.aborted, "the holder was not told before another took the lock");
          assert.ok(lease.signal.reason instanceof LockLost, String(lease.signal.reason));
          assert.match(lease.signal.reason.message, /no renewal was confirmed within its lease/);
          assert.equal(holder.locked, false);
          assert.ok(taken.token > lease.token);
          // Once the client is back, what it had queued (a renewal, the
          // release sent when the lease was lost) does not revive the old
          // lease, and neither does a late release.
          await cut.send("PING").catch(() => {});
          await holder.release().catch(() => {});
          assert.equal(holder.locked, false);
          await assert.rejects(
            new RedisLock(other.client, name).acquire({ timeout: 0 }),
            AlreadyLocked,
          );
          assert.ok(next.locked);
          assert.equal(taken.signal.aborted, false);
          await next.release();
        });
      } finally {
        await cut.close();
      }
    },
  );
}

test("RedisLock: a restarted redis-server aborts every holder's signal, and tokens still grow", {
  skip: skip ?? (server?.own ? undefined : "REDIS_URL names a server the tests may not restart"),
}, async () => {
  const clients = await Promise.all(CLIENT_KINDS.map((kind) => connect(kind, server!.url)));
  try {
    const name = fresh("restart");
    const held = [];
    for (const [i, c] of clients.entries()) {
      const lock = new RedisLock(c.client, `${name}:${i}`, { ttl: 1000 });
      held.push({ lock, lease: await lock.acquire() });
    }
    const shared = clients.map((c) => new RedisLock(c.client, name, { shared: true, ttl: 1000 }));
    const sharedLeases = await Promise.all(shared.map((l) => l.acquire()));
    await server!.restart();
    for (const lease of [...held.map((h) => h.lease), ...sharedLeases]) {
      assert.ok(await aborted(lease.signal, 10_000) instanceof LockLost);
    }
    for (const [i, c] of clients.entries()) {
      const again = new RedisLock(c.client, `${name}:${i}`, { ttl: 1000 });
      const lease = await again.acquire({ timeout: 10_000 });
      assert.ok(lease.token > held[i]!.lease.token, `${lease.token} > ${held[i]!.lease.token}`);
      await again.release();
    }
  } finally {
    for (const c of clients) await c.close();
  }
});

// ---------------------------------------------------------------------------
// Processes of all three runtimes.

// The clients a child of `runtime` can use.
function kindsOf(runtime: Runtime): ClientKind[] {
  return runtime === "bun" ? ["bun", "node-redis", "ioredis"] : ["node-redis", "ioredis"];
}

// The client a child of `runtime` uses, varied across children.
function clientFor(runtime: Runtime, i: number): ClientKind {
  if (runtime === "bun" && i % 3 === 0) return "bun";
  return i % 2 === 0 ? "node-redis" : "ioredis";
}

const COUNT = Number(process.env.REDIS_TEST_COUNT ?? 1000);

test(
  `RedisLock: 8 processes of the three runtimes x ${COUNT} increments of a file add up exactly`,
  needs,
  async () => {
    using dir = tempDir();
    const file = join(dir.path, "counter");
    writeFileSync(file, "0");
    const name = fresh("count");
    const children: Child[] = [];
    for (let i = 0; i < 8; i++) {
      const runtime = RUNTIMES[i % 3]!;
      children.push(
        start(runtime, CHILD, [
          "count",
          server!.url,
          clientFor(runtime, i),
          name,
          file,
          String(COUNT),
        ]),
      );
    }
    for (const child of children) await child.line("done", 600_000);
    for (const child of children) assert.equal(await child.exited, 0);
    assert.equal(readFileSync(file, "utf8"), String(8 * COUNT));
  },
);

test("RedisSemaphore: 8 processes never hold more than its maximum", needs, async () => {
  const name = fresh("sem8");
  const children: Child[] = [];
  for (let i = 0; i < 8; i++) {
    const runtime = RUNTIMES[i % 3]!;
    children.push(
      start(runtime, CHILD, ["sem", server!.url, clientFor(runtime, i), name, "3", "60"]),
    );
  }
  for (const child of children) {
    const line = await child.line(/^done worst \d+$/, 120_000);
    const worst = Number(line.split(" ").at(-1));
    assert.ok(worst >= 1 && worst <= 3, line);
    assert.equal(await child.exited, 0);
  }
});

for (const runtime of RUNTIMES) {
  test(
    `RedisLock (${runtime}): a SIGKILLed holder's lock passes to a waiter when its lease ends`,
    needs,
    async () => {
      const name = fresh("sigkill");
      const ttl = 1000;
      const holder = start(runtime, CHILD, [
        "hold",
        server!.url,
        clientFor(runtime, 0),
        name,
        String(ttl),
      ]);
      const token = BigInt((await holder.line(/^locked \d+$/)).split(" ")[1]!);
      await withClient(CLIENT_KINDS[0]!, async (c) => {
        const waiter = new RedisLock(c.client, name, { ttl });
        const waiting = waiter.acquire({ timeout: ttl * 10 });
        await sleep(20);
        holder.kill("SIGKILL");
        // The dead holder's lease end, and the grant, on the server's clock
        // ("<end> <mode> <since> <holder>").
        const owners = `filestore:lock:{${name}}:owners`;
        const ended = Number(String(await c.send("HGET", owners, String(token))).split(" ")[0]);
        const lease = await waiting;
        assert.ok(lease.token > token);
        const since = Number(
          String(await c.send("HGET", owners, String(lease.token))).split(" ")[2],
        );
        console.log(`# ${runtime}: held ${since - ended} ms after the killed holder's lease ended`);
        await waiter.release();
      });
    },
  );

  test(
    `RedisLock (${runtime}): a holder stopped past its lease loses it, and cannot write or release over the next one`,
    needs,
    async () => {
      using dir = tempDir();
      const store = join(dir.path, "store");
      const name = fresh("sigstop");
      const ttl = 500;
      const stopped = start(runtime, CHILD, [
        "hold",
        server!.url,
        clientFor(runtime, 1),
        name,
        String(ttl),
      ]);
      const oldToken = BigInt((await stopped.line(/^locked \d+$/)).split(" ")[1]!);
      stopped.send(`write ${store}`);
      await stopped.line("wrote");
      process.kill(stopped.pid, "SIGSTOP");
      const other = RUNTIMES[(RUNTIMES.indexOf(runtime) + 1) % 3]!;
      const next = start(other, CHILD, [
        "hold",
        server!.url,
        clientFor(other, 2),
        name,
        String(ttl),
      ]);
      try {
        const newToken = BigInt((await next.line(/^locked \d+$/, 10_000)).split(" ")[1]!);
        assert.ok(newToken > oldToken);
        next.send(`write ${store}`);
        await next.line("wrote");
        const resumed = performance.now();
        process.kill(stopped.pid, "SIGCONT");
        assert.match(await stopped.line(/^lost /, 10_000), /^lost Lost RedisLock/);
        console.log(
          `# ${runtime}: signal aborted ${
            (performance.now() - resumed).toFixed(1)
          } ms after SIGCONT`,
        );
        stopped.send(`write ${store}`);
        await stopped.line("refused");
        assert.match(readFileSync(store, "utf8"), new RegExp(`^${newToken} pid ${next.pid}$`));
        stopped.send("release");
        await stopped.line("released");
        // The new holder still holds it, and keeps it alive.
        await sleep(ttl);
        await withClient(CLIENT_KINDS[0]!, async ({ client }) => {
          await assert.rejects(new RedisLock(client, name).acquire({ timeout: 0 }), AlreadyLocked);
        });
        assert.ok(!next.output().includes("lost"));
        next.send("release");
        await next.line("released");
      } finally {
        stopped.kill("SIGKILL");
        next.kill("SIGKILL");
      }
    },
  );
}

for (const runtime of RUNTIMES) {
  test(
    `RedisLock (${runtime}): a process that waited for the lock exits after its last release as promptly as one that did not`,
    needs,
    async () => {
      for (const kind of kindsOf(runtime)) {
        // Milliseconds from the child's last release (and close) to its exit.
        const exitAfter = async (waits: boolean) => {
          const name = fresh("exit");
          let ms = 0;
          await withClient(CLIENT_KINDS[0]!, async (c) => {
            const holder = new RedisLock(c.client, name);
            if (waits) await holder.acquire();
            const child = start(runtime, CHILD, ["exit", server!.url, kind, name]);
            if (waits) {
              // Released once the child is registered as a waiter: it
              // blocks on a connection of its own.
              const waiters = `filestore:lock:{${name}}:waiters`;
              while (Number(await c.send("ZCARD", waiters)) === 0) await sleep(10);
              await holder.release();
            }
            await child.line("released", 30_000);
            const released = performance.now();
            assert.equal(await child.exited, 0);
            ms = performance.now() - released;
          });
          return ms;
        };
        const plain = await exitAfter(false);
        const waited = await exitAfter(true);
        console.log(
          `# ${runtime}, ${kind}: exited ${waited.toFixed(0)} ms after its last release, ${
            plain.toFixed(0)
          } ms without a wait`,
        );
        // An idle blocking connection kept the process alive for a second.
        assert.ok(waited < plain + 500, `${waited} ms after waiting, ${plain} ms without`);
      }
    },
  );
}

test(
  "RedisLock: a lock handed to a waiter that died is taken by the next acquire, not left to lapse",
  needs,
  async () => {
    const name = fresh("dead-waiter");
    await withClient(CLIENT_KINDS[0]!, async ({ client }) => {
      const holder = new RedisLock(client, name, { ttl: 60_000 });
      await holder.acquire();
      // Two waiters in other processes, blocked, then killed: their
      // registrations outlive them.
      const waiters = ["bun", "node"].map((runtime, i) =>
        start(runtime as Runtime, CHILD, [
          "hold",
          server!.url,
          clientFor(runtime as Runtime, i),
          name,
          "60000",
        ])
      );
      for (const w of waiters) await w.line(/^pid /);
      await sleep(500);
      for (const w of waiters) {
        w.kill("SIGKILL");
        await w.exited;
      }
      await holder.release();
      const next = new RedisLock(client, name, { ttl: 60_000 });
      const lease = await next.acquire({ timeout: 0 });
      assert.ok(lease.token > 0n);
      await next.release();
      // The same for a shared acquire, which cancels the handed-over lock.
      await holder.acquire();
      const third = start("bun", CHILD, ["hold", server!.url, clientFor("bun", 1), name, "60000"]);
      await third.line(/^pid /);
      await sleep(500);
      third.kill("SIGKILL");
      await third.exited;
      await holder.release();
      const reader = new RedisLock(client, name, { shared: true });
      await reader.acquire({ timeout: 0 });
      await reader.release();
    });
  },
);

test("RedisLock: a waiter that gave up lets go of a lock handed to it", needs, async () => {
  await withClient(CLIENT_KINDS[0]!, async ({ client }) => {
    const name = fresh("gave-up");
    for (let i = 0; i < 20; i++) {
      const holder = new RedisLock(client, name);
      await holder.acquire();
      const controller = new AbortController();
      const waiter = new RedisLock(client, name);
      const waiting = waiter.acquire({ signal: controller.signal });
      await sleep(5);
      // Release and abort in the same instant: whoever wins, the lock must
      // end up free, or held by the waiter that then knows it.
      const released = holder.release();
      controller.abort(new Error("gave up"));
      const got = await waiting.then(() => true, () => false);
      await released;
      assert.equal(waiter.locked, got);
      if (got) await waiter.release();
      const probe = new RedisLock(client, name);
      await probe.acquire({ timeout: 2000 });
      await probe.release();
    }
  });
});

test("RedisLock: a waiter blocked while redis-server restarts still gets the lock afterwards", {
  skip: skip ?? (server?.own ? undefined : "REDIS_URL names a server the tests may not restart"),
}, async () => {
  const clients = await Promise.all(CLIENT_KINDS.map((kind) => connect(kind, server!.url)));
  try {
    const name = fresh("restart-waiter");
    const holder = new RedisLock(clients[0]!.client, name, { ttl: 60_000 });
    await holder.acquire();
    const waiters = clients.map((c) => new RedisLock(c.client, name, { ttl: 1000 }));
    const waiting = waiters.map((w) => w.acquire({ timeout: 20_000 }));
    await sleep(200);
    await server!.restart();
    // The holder's lease went with the data; the waiters take turns.
    for (let turn = 0; turn < waiters.length; turn++) {
      const index = await Promise.race(waiting.map((p, i) => p.then(() => i)));
      waiting[index] = new Promise(() => {});
      assert.ok(waiters[index]!.locked);
      await waiters[index]!.release();
    }
  } finally {
    for (const c of clients) await c.close();
  }
});
