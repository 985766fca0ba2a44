// PgQueue against a real PostgreSQL: a throwaway cluster (tests/_pg.ts) or
// DATABASE_URL; skipped with one line without either.
import assert from "node:assert/strict";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import process from "node:process";
import { after, before, describe, test } from "node:test";
import { LockException, PgQueue } from "../postgres.ts";
import { openSession } from "../_pg_session.ts";
import {
  bouncerSkip,
  CLIENTS,
  connectorOf,
  type PgServer,
  pgSkip,
  startBouncer,
  startPg,
} from "./_pg.ts";
import { type Child, type Runtime, sleep, start, tempDir } from "./_util.ts";

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
      assert.throws(() => new PgQueue(never, "q", { ttl: 50 }), /'ttl' must be an integer/);
      assert.throws(() => new PgQueue(never, "q", { ttl: 1000.5 }), RangeError);
      assert.throws(() => new PgQueue(never, "q", { ttl: "1000" as never }), TypeError);
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
          async () => {
            const connect = await connectorOf(kind, server.url);
            const name = table();
            await using consumer = new PgQueue(connect, name);
            await using producer = new PgQueue(connect, name);
            await consumer.list(); // creates the table
            const waiting = consumer.claim({ wait: 60_000 });
            // Awaited below: a put still running when the test ends would fail it.
            const putting = sleep(50).then(() => producer.put("late"));
            const claim = await waiting;
            await putting;
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

        test("with ttl: a claim renewed past its lease stays; done and release work", async () => {
          const connect = await connectorOf(kind, server.url);
          const name = table();
          await using queue = new PgQueue(connect, name, { ttl: 1000 });
          await using other = new PgQueue(connect, name, { ttl: 1000, recoverEvery: 0 });
          const id = await queue.put("slow job");
          const claim = (await queue.claim())!;
          // More than two leases long: only the renewals keep it.
          for (let i = 0; i < 24; i++) {
            await sleep(100);
            assert.deepEqual(await other.recover(), { requeued: [], failed: [] });
            assert.equal(await other.claim(), null);
          }
          assert.equal(claim.signal.aborted, false);
          await claim.done();
          assert.deepEqual(await other.list("claimed"), []);
          await queue.put("again");
          const given = (await queue.claim())!;
          await given.release();
          const back = (await other.claim())!;
          assert.equal(back.body, "again");
          assert.equal(back.deliveries, 2);
          await back.done();
          assert.notEqual(id, back.id);
          // A closed queue renews nothing and opens no session for a done.
          await queue.put("left");
          const left = (await queue.claim())!;
          await queue.close();
          await assert.rejects(left.done(), /its queue was closed/);
        });

        test("with ttl: a lease that ended is taken over; the stale done is refused and the signal aborts", async () => {
          const connect = await connectorOf(kind, server.url);
          const name = table();
          await using stale = new PgQueue(connect, name, { ttl: 60_000 });
          await using fresh = new PgQueue(connect, name, { ttl: 60_000, recoverEvery: 0 });
          await stale.put("job");
          const old = (await stale.claim())!;
          // As if its renewals had stopped long ago.
          await admin(`update ${name} set lease_until = now() - interval '1 second'`);
          const taken = (await fresh.claim())!;
          assert.equal(taken.id, old.id);
          assert.equal(taken.deliveries, 2);
          await assert.rejects(old.done(), /taken back \(its lease ended without renewal\)/);
          assert.ok(old.signal.aborted);
          assert.ok(old.signal.reason instanceof LockException);
          await taken.done();
          assert.deepEqual(await fresh.list(), []);
          assert.deepEqual(await fresh.list("claimed"), []);
        });

        test(
          "through PgBouncer in transaction mode, a claim held by liveness is refused with a clear error and hands nothing out",
          {
            skip: bouncerSkip,
          },
          async () => {
            const bouncer = await startBouncer(server);
            try {
              const name = table();
              await using pooled = new PgQueue(await connectorOf(kind, bouncer.url, true), name);
              await using direct = new PgQueue(await connectorOf(kind, server.url), name);
              const id = await pooled.put("job");
              if (kind === "postgresjs") {
                // No probe with postgres.js (a failed one would end the
                // process): the first claim goes out, and a second queue
                // on the same server session shows the first one the
                // pooler at its next claim.
                const early = await pooled.put("early");
                await using other = new PgQueue(await connectorOf(kind, bouncer.url, true), name);
                const first = (await pooled.claim())!;
                assert.equal(first.id, id);
                const second = (await other.claim())!;
                assert.equal(second.id, early);
                await second.release();
                await first.release();
              }
              const refused = await pooled.claim().catch((e) => e);
              assert.ok(refused instanceof LockException, String(refused));
              assert.match(
                refused.message,
                /^Cannot claim from '.+' on PostgreSQL: .*pooler in transaction or statement mode .*connect to the server or to a pool in session mode, or use PgQueue's ttl option/,
              );
              // Refused again, also before waiting: no LISTEN through the pooler either.
              await assert.rejects(pooled.claim(), /pooler in transaction/);
              await assert.rejects(pooled.claim({ wait: 50 }), /pooler in transaction/);
              const ready = await pooled.list();
              assert.ok(ready.includes(id), String(ready));
              assert.deepEqual(await pooled.list("claimed"), []);
              const claim = (await direct.claim())!;
              assert.equal(claim.id, id);
              assert.equal(claim.deliveries, kind === "postgresjs" ? 2 : 1);
              await claim.done();
            } finally {
              await bouncer.stop();
            }
          },
        );

        test(
          "through PgBouncer in session mode with no spare server connection, claims work and the process lives",
          {
            skip: bouncerSkip,
          },
          async () => {
            // The probe for a transaction pooler finds no second connection:
            // it is given up, and the claim goes on (on postgres.js, which
            // reports a failed connection as an unhandled rejection, there
            // is no probe).
            const bouncer = await startBouncer(server, {
              pool_mode: "session",
              default_pool_size: "1",
              query_wait_timeout: "3",
            });
            try {
              const name = table();
              await using pooled = new PgQueue(await connectorOf(kind, bouncer.url, true), name);
              const id = await pooled.put("job");
              const claim = (await pooled.claim())!;
              assert.equal(claim.id, id);
              await claim.done();
              assert.deepEqual(await pooled.list(), []);
              // Past PgBouncer's query_wait_timeout: a probe still waiting
              // would have failed by now.
              await new Promise((resolve) => setTimeout(resolve, 3_500));
            } finally {
              await bouncer.stop();
            }
          },
        );

        test("through PgBouncer resetting each server session, the claim's own check refuses it", {
          skip: bouncerSkip,
        }, async () => {
          // DISCARD ALL after each transaction: the second connection never
          // sees the queue's mark, and the claim finds it gone.
          const bouncer = await startBouncer(server, { server_reset_query_always: "1" });
          try {
            const name = table();
            await using pooled = new PgQueue(await connectorOf(kind, bouncer.url, true), name);
            const id = await pooled.put("job");
            await assert.rejects(
              pooled.claim(),
              /: the claim ran on a server session other than the queue's own, so .*pooler in transaction/,
            );
            await assert.rejects(pooled.claim(), /pooler in transaction/);
            assert.deepEqual(await pooled.list(), [id]);
            const [row] = await admin(`select state, deliveries from ${name}`);
            assert.deepEqual({ ...row }, { state: "ready", deliveries: 0 });
          } finally {
            await bouncer.stop();
          }
        });

        test("through PgBouncer in transaction mode, ttl claims work and a wait is refused", {
          skip: bouncerSkip,
        }, async () => {
          const bouncer = await startBouncer(server);
          try {
            const connect = await connectorOf(kind, bouncer.url, true);
            const name = table();
            await using a = new PgQueue(connect, name, { ttl: 1000 });
            await using b = new PgQueue(connect, name, { ttl: 1000, recoverEvery: 0 });
            const first = await a.put("one");
            const second = await b.put("two");
            // A wait would LISTEN, which hears nothing through the pooler;
            // seen by the probe, which postgres.js cannot try safely.
            if (kind !== "postgresjs") {
              await assert.rejects(
                a.claim({ wait: 50 }),
                /^LockException: Cannot wait for messages in '.+' on PostgreSQL: .*pooler in transaction or statement mode .*LISTEN hears nothing/,
              );
            }
            const x = (await a.claim())!;
            const y = (await b.claim())!;
            assert.deepEqual([x.id, y.id], [first, second]);
            assert.equal(await b.claim(), null);
            await x.release();
            const again = (await b.claim())!;
            assert.equal(again.id, first);
            assert.equal(again.deliveries, 2);
            await again.done();
            await y.done();
            assert.deepEqual(await a.list(), []);
            assert.deepEqual(await a.list("claimed"), []);
          } finally {
            await bouncer.stop();
          }
        });
      });
    }

    test("with ttl: a SIGSTOPped consumer loses its message to another after the lease; its done after SIGCONT is refused", async () => {
      const name = table();
      await using queue = new PgQueue(await connectorOf("postgresjs", server.url), name, {
        ttl: 400,
        recoverEvery: 0,
      });
      const id = await queue.put("job");
      using dir = tempDir();
      const outcome = join(dir.path, "outcome");
      const child = start("node", "tests/_pg_child.ts", [
        "pg",
        server.url,
        "lease",
        name,
        "400",
        outcome,
      ]);
      try {
        assert.equal(await child.line(/^got /), `got ${id} 1`);
        child.kill("SIGSTOP");
        // Renewed by a live consumer, it would never come back.
        let taken = await queue.claim();
        for (let i = 0; i < 300 && taken === null; i++) {
          await sleep(10);
          taken = await queue.claim();
        }
        assert.ok(taken !== null, "the stopped consumer's message never came back");
        assert.equal(taken.id, id);
        assert.equal(taken.deliveries, 2);
        // process.kill: Deno's ChildProcess.kill() sends nothing to a child it
        // took for exited when it stopped.
        process.kill(child.pid, "SIGCONT");
        // Its signal aborts (the renewal finds the claim taken), and its done is refused.
        for (let i = 0; i < 1000 && !existsSync(outcome); i++) await sleep(10);
        assert.match(readFileSync(outcome, "utf8"), /^refused .*taken back/);
        await taken.done();
        assert.deepEqual(await queue.list(), []);
        assert.deepEqual(await queue.list("claimed"), []);
      } finally {
        for (const signal of ["SIGKILL", "SIGCONT"] as const) {
          try {
            process.kill(child.pid, signal);
          } catch { /* gone */ }
        }
      }
    });

    test("a table of version 1 (no lease column) is migrated on first use", async () => {
      const name = table();
      await admin(
        `create table ${name} (id bigserial primary key, body text not null,
          state text not null default 'ready', deliveries int4 not null default 0,
          created timestamptz not null default now(), claimed_at timestamptz, claimed_by int4)`,
      );
      await admin(`comment on table ${name} is 'filestore queue 1'`);
      await admin(`insert into ${name} (body) values ('old')`);
      await using queue = new PgQueue(await connectorOf("postgresjs", server.url), name, {
        ttl: 1000,
      });
      const claim = (await queue.claim())!;
      assert.equal(claim.body, "old");
      await claim.done();
      const [row] = await admin(
        `select obj_description($1::regclass, 'pg_class') as version,
           exists (select 1 from information_schema.columns
                   where table_name = $2 and column_name = 'lease_until') as has`,
        [name, name],
      );
      assert.deepEqual({ ...row }, { version: "filestore queue 2", has: true });
    });

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
        ["bun", "bun"],
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
