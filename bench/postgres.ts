// PgLock and PgQueue against a throwaway PostgreSQL (or DATABASE_URL), run
// by hand, on any runtime:
//   deno run -A bench/postgres.ts [--client postgresjs|pg|bun] [--rounds N]
//   bun bench/postgres.ts --client bun
//   node bench/postgres.ts --client pg
// Each figure pairs this package with a baseline measured in the same
// rounds, interleaved, and prints medians and their ratio.
import process from "node:process";
import { PgLock, PgQueue } from "../postgres.ts";
import { openSession, type Session } from "../_pg_session.ts";
import { connectorOf, pgSkip, startPg } from "../tests/_pg.ts";
import { start } from "../tests/_child.ts";
import { runtimeName } from "../_runtime.ts";
import { interleave, median, percentile, ratios } from "./_stats.ts";

const args = process.argv.slice(2);
const option = (name: string) => {
  const at = args.indexOf(`--${name}`);
  return at >= 0 ? args[at + 1] : undefined;
};
const kind = option("client") ?? "postgresjs";
const rounds = Number(option("rounds") ?? 9);

if (pgSkip) {
  console.log(`skipped: ${pgSkip}`);
  process.exit(0);
}
await using server = await startPg();
const connect = await connectorOf(kind, server.url);
const ms = (x: number) => x.toFixed(3);

function report(name: string, ours: number[], base: number[], baseName: string): void {
  // The ratio is the median of the ratios of the samples taken together
  // (a round, or one handoff and its baseline).
  console.log(
    `${name}: ${ms(median(ours))} ms (p10-p90 ${ms(percentile(ours, 10))}-${
      ms(percentile(ours, 90))
    }); ${baseName}: ${ms(median(base))} ms; ratio ${median(ratios(ours, base)).toFixed(2)}x`,
  );
}

console.log(`PostgreSQL bench, client ${kind}, runtime ${runtimeName}, ${rounds} rounds`);

// The baselines run on the very sessions the locks use: each PgLock is
// given a connect() that hands out one client, and the bench sends its
// bare statements through a second Session on that client, between the
// lock's own. Two sessions of one kind differ by up to 3x from round to
// round here (likely where the scheduler puts their backends on the 2
// cores), so a baseline on a session of its own measured that more than
// the lock.
async function shared(): Promise<{ connect: () => object; bare: Session }> {
  const client = await connect();
  const bare = await openSession(() => client);
  return { connect: () => client, bare };
}

// 1. An acquire + release cycle against two bare round trips on the same
// session, in interleaved rounds of about 4 ms each.
{
  const { connect: same, bare } = await shared();
  await using lock = new PgLock(same, "bench-cycle");
  await lock.acquire();
  await lock.release();
  const times = await interleave([
    {
      name: "ours",
      async run(n) {
        for (let i = 0; i < n; i++) {
          await lock.acquire();
          await lock.release();
        }
      },
    },
    {
      name: "bare",
      async run(n) {
        for (let i = 0; i < n; i++) {
          await bare.query("select 1");
          await bare.query("select 1");
        }
      },
    },
  ], { rounds: rounds * 25, roundMs: 4, warmupMs: 50 });
  const inMs = (k: string) => times.get(k)!.map((us) => us / 1000);
  report(
    "PgLock acquire+release",
    inMs("ours"),
    inMs("bare"),
    "two bare `select 1` on its session",
  );
}

// 2. Handoff: from the holder's release() to the waiter's grant (two
// sessions of one process), against one `select 1` on the waiter's
// session after it was idle as long, and against the server's own
// handoff: the same two sessions, bare pg_advisory_lock/unlock statements.
{
  const holder = await shared();
  const waiter = await shared();
  await using a = new PgLock(holder.connect, "bench-handoff");
  await using b = new PgLock(waiter.connect, "bench-handoff");
  const ours: number[] = [];
  const base: number[] = [];
  const raw: number[] = [];
  const pause = () => new Promise((resolve) => setTimeout(resolve, 5));
  for (let r = 0; r < rounds * 20; r++) {
    await a.acquire();
    let waiting: Promise<unknown> = b.acquire();
    // Let the waiter's statement reach the server and block.
    await pause();
    let t = performance.now();
    await a.release();
    await waiting;
    ours.push(performance.now() - t);
    await b.release();
    await holder.bare.query("select pg_advisory_lock(7)");
    waiting = waiter.bare.query("select pg_advisory_lock(7)");
    await pause();
    t = performance.now();
    await holder.bare.query("select pg_advisory_unlock(7)");
    await waiting;
    raw.push(performance.now() - t);
    await waiter.bare.query("select pg_advisory_unlock(7)");
    await pause();
    t = performance.now();
    await waiter.bare.query("select 1");
    base.push(performance.now() - t);
  }
  report("handoff release -> waiter holds", ours, base, "`select 1` on the idle waiter's session");
  report("bare pg_advisory_unlock -> pg_advisory_lock", raw, base, "the same `select 1`");
}

// 3. A consumer killed with kill -9 while holding a claim: time from the
// kill to its message being ready again (recover() called in a loop).
{
  await using queue = new PgQueue(connect, "bench_death", { recoverEvery: Infinity });
  await queue.prepare();
  const back: number[] = [];
  for (let r = 0; r < Math.min(rounds, 7); r++) {
    await queue.put(`m${r}`);
    const child = start("node", "tests/_pg_child.ts", [
      "pg",
      server.url,
      "consume",
      "bench_death",
      "600000",
    ]);
    await child.line(/^got /);
    const t = performance.now();
    child.kill("SIGKILL");
    for (;;) {
      const { requeued } = await queue.recover();
      if (requeued.length > 0) break;
    }
    back.push(performance.now() - t);
    await child.exited;
    await (await queue.claim())!.done();
  }
  console.log(
    `kill -9 -> message ready again: median ${ms(median(back))} ms, max ${
      ms(Math.max(...back))
    } ms (${back.length} kills)`,
  );
}

// 4. Queue rate: 4 consumers in this process drain 2,000 messages (claim
// + done, one at a time), then pg-boss's fetch + complete the same way on
// the same server, where pg-boss is installed (a devDependency; Node 22+).
{
  const n = 2000;
  const workers = 4;
  const name = "bench_rate";
  const producer = new PgQueue(connect, name);
  for (let i = 0; i < n; i++) await producer.put(`m${i}`);
  const consumers = Array.from({ length: workers }, () => new PgQueue(connect, name));
  let t = performance.now();
  let done = 0;
  await Promise.all(consumers.map(async (q) => {
    for (;;) {
      const claim = await q.claim();
      if (claim === null) return;
      await claim.done();
      done++;
    }
  }));
  const ours = done / ((performance.now() - t) / 1000);
  await Promise.all([producer, ...consumers].map((q) => q.close()));
  let line = `queue: ${done} messages by ${workers} consumers, ${Math.round(ours)} per second`;
  try {
    const { PgBoss } = await import("pg-boss" as string);
    const boss = new PgBoss({ connectionString: server.url, max: workers + 2 });
    boss.on("error", () => {});
    await boss.start();
    await boss.createQueue("bench_rate");
    await boss.insert("bench_rate", Array.from({ length: n }, (_, i) => ({ data: { m: i } })));
    t = performance.now();
    let theirs = 0;
    await Promise.all(Array.from({ length: workers }, async () => {
      for (;;) {
        const jobs = await boss.fetch("bench_rate", { batchSize: 1 });
        if (jobs.length === 0) return;
        await boss.complete("bench_rate", jobs[0].id);
        theirs++;
      }
    }));
    const rate = theirs / ((performance.now() - t) / 1000);
    await boss.stop({ graceful: false, wait: true });
    line += `; pg-boss fetch+complete: ${theirs} messages, ${Math.round(rate)} per second; ratio ${
      (ours / rate).toFixed(2)
    }x`;
  } catch (e) {
    line += `; pg-boss not measured (${(e as Error).message.split("\n")[0]})`;
  }
  console.log(line);
}
