// PgLock and PgQueue against a throwaway PostgreSQL (or DATABASE_URL), run
// by hand, on any runtime:
//   deno run -A bench/postgres.ts [--client postgresjs|pg|bun] [--rounds N]
//   bun bench/postgres.ts --client bun
//   node bench/postgres.ts --client pg
// Each figure pairs this package with a baseline measured in the same
// rounds, interleaved, and prints medians and their ratio.
import process from "node:process";
import { PgLock, PgQueue } from "../postgres.ts";
import { openSession } from "../_pg_session.ts";
import { connectorOf, pgSkip, startPg } from "../tests/_pg.ts";
import { start } from "../tests/_child.ts";
import { runtimeName } from "../_runtime.ts";
import { median, percentile } from "./_stats.ts";

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
  const o = median(ours);
  const b = median(base);
  console.log(
    `${name}: ${ms(o)} ms (p10-p90 ${ms(percentile(ours, 10))}-${ms(percentile(ours, 90))}); ` +
      `${baseName}: ${ms(b)} ms; ratio ${(o / b).toFixed(2)}x`,
  );
}

console.log(`PostgreSQL bench, client ${kind}, runtime ${runtimeName}, ${rounds} rounds`);

// 1. An acquire + release cycle against two bare round trips on a session.
{
  const bare = await openSession(connect);
  await using lock = new PgLock(connect, "bench-cycle");
  await lock.acquire();
  await lock.release();
  const n = 500;
  const ours: number[] = [];
  const base: number[] = [];
  for (let r = 0; r < rounds; r++) {
    let t = performance.now();
    for (let i = 0; i < n; i++) {
      await lock.acquire();
      await lock.release();
    }
    ours.push((performance.now() - t) / n);
    t = performance.now();
    for (let i = 0; i < n; i++) {
      await bare.query("select 1");
      await bare.query("select 1");
    }
    base.push((performance.now() - t) / n);
  }
  await bare.close();
  report("PgLock acquire+release", ours, base, "two bare `select 1`");
}

// 2. Handoff: from the holder's release() to the waiter's grant (two
// sessions of one process), against one `select 1` on an idle session.
{
  const idle = await openSession(connect);
  await using a = new PgLock(connect, "bench-handoff");
  await using b = new PgLock(connect, "bench-handoff");
  const ours: number[] = [];
  const base: number[] = [];
  for (let r = 0; r < rounds * 20; r++) {
    await a.acquire();
    const waiting = b.acquire();
    // Let the waiter's statement reach the server and block.
    await new Promise((resolve) => setTimeout(resolve, 5));
    let t = performance.now();
    await a.release();
    await waiting;
    ours.push(performance.now() - t);
    await b.release();
    await new Promise((resolve) => setTimeout(resolve, 5));
    t = performance.now();
    await idle.query("select 1");
    base.push(performance.now() - t);
  }
  await idle.close();
  report("handoff release -> waiter holds", ours, base, "`select 1` on an idle session");
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
