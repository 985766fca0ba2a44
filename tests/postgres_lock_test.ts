// PgLock against a real PostgreSQL: a throwaway cluster (tests/_pg.ts) or
// DATABASE_URL; skipped with one line without either.
import assert from "node:assert/strict";
import process from "node:process";
import { after, before, describe, test } from "node:test";
import { AlreadyLocked, keyOf, LockException, PgAlreadyLocked, PgLock } from "../postgres.ts";
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
import { type Runtime, sleep, start } from "./_util.ts";

let server: PgServer;

before(async () => {
  if (!pgSkip) server = await startPg();
});
after(() => server?.stop());

// A connect function that must never be called.
function never(): object {
  throw new Error("connect() was called");
}

// Runs `sql` on a session of its own.
async function admin(sql: string, params: unknown[] = []) {
  const session = await openSession(await connectorOf("postgresjs", server.url));
  try {
    return await session.query(sql, params);
  } finally {
    await session.close();
  }
}

function until(signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) resolve();
    else signal.addEventListener("abort", () => resolve(), { once: true });
  });
}

// Without a server, one skipped test says why (a skipped suite is not counted).
if (pgSkip) test("PgLock against PostgreSQL", { skip: pgSkip }, () => {});
else {describe("PgLock", () => {
    test("bad names and options are refused before anything is sent", async () => {
      const cases: [unknown, unknown, ErrorConstructor][] = [
        [42, {}, TypeError],
        ["", {}, RangeError],
        [2n ** 63n, {}, RangeError],
        ["a", { timeout: -1 }, RangeError],
        ["a", { timeout: "1" }, TypeError],
        ["a", { shared: 1 }, TypeError],
        ["a", { signal: {} }, TypeError],
        ["a", { sequence: "x; drop table y" }, RangeError],
        ["a", { sequence: 7 }, TypeError],
        ["a", { keepalive: { idle: 0 } }, RangeError],
        ["a", { keepalive: { count: 1.5 } }, RangeError],
        ["a", null, TypeError],
      ];
      for (const [name, options, Class] of cases) {
        assert.throws(
          () => new PgLock(never, name as string, options as object),
          (e: Error) => e instanceof Class && /^Cannot create PgLock: '/.test(e.message),
          `${String(name)} ${JSON.stringify(options)}`,
        );
      }
      assert.throws(() => new PgLock("url" as never, "a"), TypeError);
      const lock = new PgLock(never, "a");
      await assert.rejects(lock.acquire({ timeout: -5 }), RangeError);
      await assert.rejects(lock.acquire({ failWhenLocked: "yes" as never }), TypeError);
    });

    test("a name's key is the one keyOf() documents in SQL, and a bigint name is its own key", async () => {
      const connect = await connectorOf("postgresjs", server.url);
      const holder = await openSession(connect);
      try {
        const [row] = await holder.query(
          "select pg_advisory_lock(k), k::text as key from (select ('x' || left(encode(sha256(convert_to($1, 'UTF8')), 'hex'), 16))::bit(64)::bigint as k) as s",
          ["nightly-é"],
        );
        assert.equal(BigInt(String(row!.key)), await keyOf("nightly-é"));
        await using byName = new PgLock(connect, "nightly-é");
        const refused = await byName.acquire({ timeout: 0 }).catch((e) => e);
        assert.ok(refused instanceof PgAlreadyLocked);
        assert.equal(refused.pid, holder.pid);
        await holder.query("select pg_advisory_lock(-42::bigint)");
        await using byKey = new PgLock(connect, -42n);
        await assert.rejects(byKey.acquire({ timeout: 0 }), PgAlreadyLocked);
      } finally {
        await holder.close();
      }
    });

    test("a pool of more than one connection is refused", async () => {
      const { default: postgres } = await import("postgres");
      const pool = postgres(server.url, { max: 3 });
      try {
        const lock = new PgLock(() => pool, "pool");
        await assert.rejects(lock.acquire(), /max: 1/);
      } finally {
        await pool.end();
      }
    });

    for (const kind of CLIENTS) {
      describe(`with ${kind}`, () => {
        test("a connection straight to the server is known as one (Bun's SQL cannot tell)", async () => {
          const session = await openSession(await connectorOf(kind, server.url));
          try {
            assert.equal(session.direct, kind === "bun" ? undefined : true);
          } finally {
            await session.close();
          }
        });

        test("a held lock is refused, naming its holder; a timeout gives up; tokens grow", async () => {
          const connect = await connectorOf(kind, server.url);
          await using a = new PgLock(connect, `refuse-${kind}`);
          await using b = new PgLock(connect, `refuse-${kind}`);
          const first = await a.acquire();
          assert.equal(await a.acquire(), first);
          const refused = await b.acquire({ timeout: 0 }).catch((e) => e);
          assert.ok(refused instanceof PgAlreadyLocked);
          assert.ok(refused instanceof AlreadyLocked);
          assert.equal(refused.pid, first.backendPid);
          assert.match(refused.message, new RegExp(`held by backend pid ${first.backendPid}`));
          assert.equal(refused.holders[0]?.mode, "ExclusiveLock");
          const timedOut = await b.acquire({ timeout: 100 }).catch((e) => e);
          assert.ok(timedOut instanceof PgAlreadyLocked, String(timedOut));
          assert.match(timedOut.message, /gave up after/);
          // The same timeout again: the server still ends the wait.
          await assert.rejects(b.acquire({ timeout: 100 }), PgAlreadyLocked);
          assert.equal(b.locked, false);
          const waiting = b.acquire();
          await a.release();
          assert.ok(first.signal.aborted);
          assert.equal(a.locked, false);
          const second = await waiting;
          assert.ok(second.token > first.token);
          assert.ok(b.locked);
        });

        test("an aborted wait cancels the statement on the server", async () => {
          const connect = await connectorOf(kind, server.url);
          await using holder = new PgLock(connect, `cancel-${kind}`);
          await using waiter = new PgLock(connect, `cancel-${kind}`);
          await holder.acquire();
          const controller = new AbortController();
          const waiting = waiter.acquire({ signal: controller.signal });
          // Wait until the server shows the waiter blocked on the lock.
          for (let i = 0; i < 500; i++) {
            const [row] = await admin(
              "select count(*)::int4 as n from pg_stat_activity where wait_event_type = 'Lock' and wait_event = 'advisory'",
            );
            if (row!.n === 1) break;
            await sleep(10);
          }
          const reason = new Error("no longer needed");
          controller.abort(reason);
          await assert.rejects(waiting, (e) => e === reason);
          const [row] = await admin(
            "select count(*)::int4 as n from pg_stat_activity where wait_event_type = 'Lock' and wait_event = 'advisory'",
          );
          assert.equal(row!.n, 0);
          assert.equal(waiter.locked, false);
          await holder.release();
          await waiter.acquire({ timeout: 0 });
        });

        test("shared holders exclude a writer until both let go", async () => {
          const connect = await connectorOf(kind, server.url);
          const name = `shared-${kind}`;
          await using r1 = new PgLock(connect, name, { shared: true });
          await using r2 = new PgLock(connect, name, { shared: true });
          await using writer = new PgLock(connect, name);
          await r1.acquire();
          await r2.acquire({ timeout: 0 });
          const refused = await writer.acquire({ timeout: 0 }).catch((e) => e);
          assert.ok(refused instanceof PgAlreadyLocked);
          assert.equal(refused.holders.length, 2);
          const waiting = writer.acquire();
          await r1.release();
          await assert.rejects(writer.acquire({ timeout: 50 }), PgAlreadyLocked);
          await r2.release();
          await waiting;
          await assert.rejects(r1.acquire({ timeout: 0 }), PgAlreadyLocked);
        });

        test("a session lost while waiting: the acquire rejects with LockException", async () => {
          const connect = await connectorOf(kind, server.url);
          await using holder = new PgLock(connect, `lost-wait-${kind}`);
          await using waiter = new PgLock(connect, `lost-wait-${kind}`);
          const held = await holder.acquire();
          const waiting = waiter.acquire().catch((e) => e);
          let pid: unknown;
          for (let i = 0; i < 500 && pid === undefined; i++) {
            const [row] = await admin(
              "select pid from pg_stat_activity where wait_event_type = 'Lock' and wait_event = 'advisory' and pid <> $1::int4",
              [held.backendPid],
            );
            pid = row?.pid;
            if (pid === undefined) await sleep(10);
          }
          await admin("select pg_terminate_backend($1::int4)", [pid]);
          const error = await waiting;
          assert.ok(error instanceof LockException, String(error));
          assert.match(error.message, /session was lost/);
          assert.equal(waiter.locked, false);
          assert.ok(holder.locked);
        });

        test("pg_terminate_backend: the signal aborts, release says so, the process lives on", async () => {
          const connect = await connectorOf(kind, server.url);
          await using lock = new PgLock(connect, `terminate-${kind}`);
          const grant = await lock.acquire();
          await admin("select pg_terminate_backend($1::int4)", [grant.backendPid]);
          await until(grant.signal);
          assert.equal(lock.locked, false);
          await assert.rejects(lock.release(), LockException);
          // A new session: the lock is free, and the token still grows.
          const again = await lock.acquire({ timeout: 1000 });
          assert.notEqual(again.backendPid, grant.backendPid);
          assert.ok(again.token > grant.token);
        });
      });
    }

    test("through PgBouncer in transaction mode, a second holder is refused with a clear error", {
      skip: bouncerSkip,
    }, async () => {
      const bouncer = await startBouncer(server);
      try {
        for (const kind of ["postgresjs", "pg"]) {
          const connect = await connectorOf(kind, bouncer.url);
          await using first = new PgLock(connect, `bouncer-${kind}`);
          await using second = new PgLock(connect, `bouncer-${kind}`);
          await using third = new PgLock(connect, `bouncer-${kind}`);
          const session = await openSession(connect);
          // The pooler's cancel key is not the server's backend pid.
          assert.equal(session.direct, false);
          await session.close();
          await first.acquire({ timeout: 0 });
          // Without the check, both would hold it too (one server session).
          await assert.rejects(second.acquire({ timeout: 0 }), /pooler in transaction/);
          await assert.rejects(third.acquire({ timeout: 1000 }), /pooler in transaction/);
          assert.equal(second.locked, false);
          assert.equal(third.locked, false);
          // The first holder learns it too, and that server session takes no more.
          await assert.rejects(first.release(), /not exclusive: .*pooler in transaction/);
          await assert.rejects(second.acquire({ timeout: 0 }), /pooler in transaction/);
        }
      } finally {
        await bouncer.stop();
      }
    });

    test("a SIGKILLed holder in another process: the waiter takes the lock", async () => {
      const holder = start("node", "tests/_pg_child.ts", ["pg", server.url, "hold", "killed"]);
      await holder.line(/^held /);
      await using waiter = new PgLock(await connectorOf("postgresjs", server.url), "killed");
      await assert.rejects(waiter.acquire({ timeout: 0 }), PgAlreadyLocked);
      const waiting = waiter.acquire({ timeout: 10_000 });
      holder.kill("SIGKILL");
      await waiting;
      assert.ok(waiter.locked);
    });

    test("a SIGSTOPped holder keeps the lock: a waiter with a timeout gives up cleanly", async () => {
      const holder = start("bun", "tests/_pg_child.ts", [
        "postgresjs",
        server.url,
        "hold",
        "stopped",
      ]);
      try {
        const [, , pid] = (await holder.line(/^held /)).split(" ");
        holder.kill("SIGSTOP");
        await using waiter = new PgLock(await connectorOf("postgresjs", server.url), "stopped");
        const refused = await waiter.acquire({ timeout: 300 }).catch((e) => e);
        assert.ok(refused instanceof PgAlreadyLocked, String(refused));
        assert.equal(refused.pid, Number(pid));
        assert.equal(waiter.locked, false);
        const [row] = await admin(
          "select count(*)::int4 as n from pg_stat_activity where wait_event_type = 'Lock'",
        );
        assert.equal(row!.n, 0);
      } finally {
        holder.kill("SIGKILL");
        holder.kill("SIGCONT");
      }
    });

    test("8 processes on three runtimes, each 1,000 increments under the lock: none lost, tokens grow", async () => {
      await admin("create table if not exists counter (n int4, token int8)");
      await admin("truncate counter");
      await admin("insert into counter values (0, 0)");
      const each = 1000;
      const who: [Runtime, string][] = [
        ["deno", "postgresjs"],
        ["deno", "pg"],
        ["bun", "postgresjs"],
        ["bun", "bun"],
        ["bun", "pg"],
        ["node", "postgresjs"],
        ["node", "pg"],
        ["node", "postgresjs"],
      ];
      const children = who.map(([runtime, kind]) =>
        start(runtime, "tests/_pg_child.ts", [kind, server.url, "count", "counter", `${each}`])
      );
      for (const child of children) await child.line("counted", 120_000);
      const [row] = await admin("select n from counter");
      assert.equal(row!.n, each * children.length);
    });

    test("a server restart aborts the holders' signals, and tokens only grow", {
      skip: process.env.DATABASE_URL ? "DATABASE_URL: the server is not ours to restart" : false,
    }, async () => {
      const grants = [];
      const locks = [];
      for (const kind of CLIENTS) {
        const lock = new PgLock(await connectorOf(kind, server.url), `restart-${kind}`);
        locks.push(lock);
        grants.push(await lock.acquire());
      }
      const child = start("deno", "tests/_pg_child.ts", ["postgresjs", server.url, "hold", "r"]);
      await child.line(/^held /);
      server.restart();
      await Promise.all(grants.map((g) => until(g.signal)));
      await child.line("lost");
      child.kill("SIGKILL");
      const highest = grants.reduce((m, g) => g.token > m ? g.token : m, 0n);
      for (const lock of locks) {
        const again = await lock.acquire({ timeout: 5000 });
        assert.ok(again.token > highest);
        await lock.close();
      }
    });
  });}
