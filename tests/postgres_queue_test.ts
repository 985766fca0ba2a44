// PgQueue against a real PostgreSQL: a throwaway cluster (tests/_pg.ts) or
// DATABASE_URL; skipped with one line without either.
import assert from "node:assert/strict";
import process from "node:process";
import { after, before, describe, test } from "node:test";
import { LockException, PgQueue } from "../postgres.ts";
import { openSession } from "../_pg_session.ts";
import { CLIENTS, connectorOf, type PgServer, pgSkip, startPg } from "./_pg.ts";
import { type Child, type Runtime, start } from "./_util.ts";

let server: PgServer;
let tables = 0;

before(async () => {
  if (!pgSkip) server = await startPg();
});
after(() => server?.stop());

// A table name of its own for each test, in each runtime's run.
function table(): string {
  return `q_${process.pid}_${tables++}`;
}

function never(): object {
  throw new Error("connect() was called");
}

async function admin(sql: string, params: unknown[] = []) {
  const session = await openSession(await connectorOf("postgresjs", server.url));
  try {
    return await session.query(sql, params);
  } finally {
    await session.close();
  }
}

// Without a server, one skipped test says why (a skipped suite is not counted).
if (pgSkip) test("PgQueue against PostgreSQL", { skip: pgSkip }, () => {});
else {describe("PgQueue", () => {
    test("bad arguments are refused before anything is sent", async () => {
      assert.throws(() => new PgQueue(never, "bad name"), RangeError);
      assert.throws(() => new PgQueue(never, 7 as never), TypeError);
      assert.throws(() => new PgQueue(never, "q", { maxDeliveries: 0 }), RangeError);
      assert.throws(() => new PgQueue(never, "q", { maxDeliveries: 1.5 }), RangeError);
      assert.throws(() => new PgQueue(never, "q", { recoverEvery: "1" as never }), TypeError);
      const queue = new PgQueue(never, "q");
      await assert.rejects(queue.put(42 as never), TypeError);
      await assert.rejects(queue.claim({ wait: -1 }), RangeError);
      await assert.rejects(queue.list("done" as never), RangeError);
      await assert.rejects(queue.watch({ signal: 1 as never }).next(), TypeError);
    });

    for (const kind of CLIENTS) {
      describe(`with ${kind}`, () => {
        test("put, claim, done and release; null when empty; deliveries count", async () => {
          const connect = await connectorOf(kind, server.url);
          await using queue = new PgQueue(connect, table());
          assert.equal(await queue.claim(), null);
          const first = await queue.put("one");
          const second = await queue.put("two");
          assert.deepEqual(await queue.list(), [first, second]);
          const a = (await queue.claim())!;
          assert.equal(a.body, "one");
          assert.equal(a.deliveries, 1);
          assert.deepEqual(await queue.list("claimed"), [first]);
          await a.release();
          assert.ok(a.finished);
          await assert.rejects(a.done(), TypeError);
          {
            await using again = (await queue.claim())!;
            assert.equal(again.id, first);
            assert.equal(again.deliveries, 2);
            // Left without done: await using gives it back.
          }
          const b = (await queue.claim())!;
          assert.equal(b.id, first);
          await b.done();
          const c = (await queue.claim())!;
          assert.equal(c.body, "two");
          await c.done();
          assert.equal(await queue.claim(), null);
          assert.deepEqual(await queue.list("claimed"), []);
        });

        test("a live consumer's claim is never recovered; a closed one's comes back, then is dead-lettered", async () => {
          const connect = await connectorOf(kind, server.url);
          const name = table();
          await using other = new PgQueue(connect, name, {
            maxDeliveries: 2,
            recoverEvery: Infinity,
          });
          const id = await other.put("poison");
          for (const delivery of [1, 2]) {
            const consumer = new PgQueue(connect, name, { maxDeliveries: 2 });
            const claim = (await consumer.claim())!;
            assert.equal(claim.deliveries, delivery);
            assert.deepEqual(await other.recover(), { requeued: [], failed: [] });
            await consumer.close(); // as if it died
            // The server drops the closed session's locks a few ms later.
            let recovered = await other.recover();
            for (
              let i = 0;
              i < 500 && recovered.requeued.length + recovered.failed.length === 0;
              i++
            ) {
              await new Promise((resolve) => setTimeout(resolve, 10));
              recovered = await other.recover();
            }
            assert.deepEqual(
              recovered,
              delivery === 1 ? { requeued: [id], failed: [] } : {
                requeued: [],
                failed: [id],
              },
            );
          }
          assert.deepEqual(await other.list("failed"), [id]);
          assert.equal(await other.claim(), null);
        });

        test("a stale consumer's done changes nothing and says so", async () => {
          const connect = await connectorOf(kind, server.url);
          const name = table();
          await using slow = new PgQueue(connect, name);
          await using fast = new PgQueue(connect, name);
          await slow.put("job");
          const stale = (await slow.claim())!;
          const [row] = await admin(`select claimed_by from ${name}`);
          await admin("select pg_terminate_backend($1::int4)", [row!.claimed_by]);
          await new Promise<void>((resolve) =>
            stale.signal.aborted
              ? resolve()
              : stale.signal.addEventListener("abort", () => resolve(), { once: true })
          );
          const fresh = (await fast.claim())!;
          assert.equal(fresh.id, stale.id);
          assert.equal(fresh.deliveries, 2);
          await assert.rejects(stale.done(), LockException);
          await fresh.done();
          assert.deepEqual(await fast.list(), []);
        });

        test(
          "claim with wait is woken by a put",
          { skip: kind === "bun" ? "Bun's SQL client cannot LISTEN" : false },
          async () => {
            const connect = await connectorOf(kind, server.url);
            const name = table();
            await using consumer = new PgQueue(connect, name);
            await using producer = new PgQueue(connect, name);
            await consumer.list(); // creates the table
            const waiting = consumer.claim({ wait: 60_000 });
            setTimeout(() => void producer.put("late"), 50);
            const claim = await waiting;
            assert.equal(claim?.body, "late");
            await claim!.done();
            const controller = new AbortController();
            const given = consumer.claim({ wait: 60_000, signal: controller.signal });
            controller.abort();
            assert.equal(await given, null);
          },
        );

        test(
          "watch() hands out claims as messages come, until its signal aborts",
          { skip: kind === "bun" ? "Bun's SQL client cannot LISTEN" : false },
          async () => {
            const connect = await connectorOf(kind, server.url);
            const name = table();
            await using consumer = new PgQueue(connect, name);
            await using producer = new PgQueue(connect, name);
            await producer.put("a");
            await producer.put("b");
            const controller = new AbortController();
            const seen: string[] = [];
            for await (const claim of consumer.watch({ signal: controller.signal })) {
              seen.push(claim.body);
              await claim.done();
              if (seen.length === 2) setTimeout(() => void producer.put("c"), 20);
              if (seen.length === 3) controller.abort();
            }
            assert.deepEqual(seen, ["a", "b", "c"]);
            assert.deepEqual(await producer.list(), []);
          },
        );
      });
    }

    if (CLIENTS.includes("bun")) {
      test("with bun: claim with wait is refused (no LISTEN)", async () => {
        await using queue = new PgQueue(await connectorOf("bun", server.url), table());
        await assert.rejects(queue.claim({ wait: 100 }), TypeError);
      });
    }

    test("8 consumers on three runtimes, up to 50 killed: every message done, duplicates at most the kills", async () => {
      const name = table();
      const messages = 800;
      const plannedKills = 50;
      let kills = 0;
      {
        await using queue = new PgQueue(await connectorOf("postgresjs", server.url), name);
        await queue.prepare();
        await admin(
          `insert into ${name} (body) select 'm' || i from generate_series(1, $1::int4) i`,
          [
            messages,
          ],
        );
        assert.equal((await queue.list()).length, messages);
      }
      const kinds: [Runtime, string][] = [
        ["deno", "postgresjs"],
        ["deno", "pg"],
        ["bun", "postgresjs"],
        ["bun", "pg"],
        ["node", "postgresjs"],
        ["node", "pg"],
      ];
      const consumer = (i: number) => {
        const [runtime, kind] = kinds[i % kinds.length]!;
        return start(runtime, "tests/_pg_child.ts", [kind, server.url, "consume", name, "30"]);
      };
      const all: Child[] = [];
      const live: Child[] = [];
      for (let i = 0; i < 8; i++) live.push(consumer(i));
      all.push(...live);
      for (let k = 0; k < plannedKills; k++) {
        const victim = live[k % live.length]!;
        // Killed while it holds a claim: right after it printed one. Without
        // one in time, the messages ran out: no more kills.
        const holding = await victim.line(/^got /, 20_000).then(() => true, () => false);
        if (!holding) break;
        victim.kill("SIGKILL");
        kills++;
        const next = consumer(k + 8);
        live[k % live.length] = next;
        all.push(next);
      }
      for (const child of live) await child.line("idle", 120_000);
      const got = all.flatMap((c) => c.output().split("\n").filter((l) => l.startsWith("got ")));
      const ids = new Set(got.map((l) => l.split(" ")[1]));
      if (process.env.PG_TEST_VERBOSE) {
        console.log(`kills ${kills}, deliveries ${got.length}, distinct ${ids.size}`);
      }
      const [row] = await admin(`select count(*)::int4 as n from ${name}`);
      assert.equal(row!.n, 0, "every message done");
      assert.equal(ids.size, messages);
      assert.ok(
        got.length - ids.size <= kills,
        `${got.length - ids.size} duplicates, ${kills} kills`,
      );
      assert.ok(kills >= 20, `only ${kills} kills before the messages ran out`);
    });
  });}
