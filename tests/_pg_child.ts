// A child process for the PostgreSQL tests, run by any of the three
// runtimes: `_pg_child.ts CLIENT URL COMMAND ARGS...`, CLIENT one of
// postgresjs, pg, bun. Commands:
// - count NAME N: N times, under PgLock NAME, reads counter.n and writes it
//   back plus one on a second connection (a lost update without the lock),
//   with the grant's fencing token, refusing (like a fenced store) a token
//   not larger than the last one written; prints "counted", or "fenced"
//   and exits 1.
// - hold NAME [shared]: takes the lock, prints "held TOKEN PID", and "lost"
//   if its signal aborts; waits until killed.
// - consume QUEUE [PAUSE]: claims messages, prints "got ID DELIVERIES", and
//   marks each done after PAUSE ms (2); ends after "idle" (a claim that waited 1 s in vain).
// - lease QUEUE TTL FILE: claims one message with a lease of TTL ms, prints
//   "got ID DELIVERIES"; when the claim's signal aborts, calls done() and
//   writes "done" or "refused MESSAGE" to FILE (not to standard output: Deno's
//   child_process takes a stopped child for an exited one), then exits.
import { writeFileSync } from "node:fs";
import process from "node:process";
import { PgLock, PgQueue } from "../postgres.ts";
import { connectorOf } from "./_pg.ts";

const [kind, url, command, ...args] = process.argv.slice(2);
const connect = await connectorOf(kind!, url!);

function keepAlive(): void {
  setInterval(() => {}, 1 << 30);
}

if (command === "count") {
  const [name, n] = args;
  await using data = await sessionFor(connect);
  await using lock = new PgLock(connect, name!);
  for (let i = 0; i < Number(n); i++) {
    const { token } = await lock.acquire();
    const [row] = await data.query("select n, token::text as token from counter", []);
    if (token <= BigInt(String(row!.token))) {
      console.log(`fenced ${token} after ${row!.token}`);
      process.exit(1);
    }
    await data.query("update counter set n = $1, token = $2::int8", [
      Number(row!.n) + 1,
      `${token}`,
    ]);
    await lock.release();
  }
  console.log("counted");
} else if (command === "hold") {
  const [name, mode] = args;
  const lock = new PgLock(connect, name!, { shared: mode === "shared" });
  const grant = await lock.acquire();
  grant.signal.addEventListener("abort", () => console.log("lost"));
  console.log(`held ${grant.token} ${grant.backendPid}`);
  keepAlive();
} else if (command === "consume") {
  const [table, pause = "2"] = args;
  const queue = new PgQueue(connect, table!);
  try {
    for (;;) {
      const claim = await queue.claim({ wait: 1000 });
      if (claim === null) break;
      console.log(`got ${claim.id} ${claim.deliveries}`);
      await new Promise((resolve) => setTimeout(resolve, Number(pause)));
      await claim.done();
    }
    console.log("idle");
  } finally {
    await queue.close();
  }
} else if (command === "lease") {
  const [table, ttl, file] = args;
  const queue = new PgQueue(connect, table!, { ttl: Number(ttl), recoverEvery: Infinity });
  const claim = (await queue.claim())!;
  claim.signal.addEventListener("abort", async () => {
    let outcome = "done";
    try {
      await claim.done();
    } catch (e) {
      outcome = `refused ${(e as Error).message}`;
    }
    writeFileSync(file!, outcome);
    await queue.close();
    process.exit(0);
  });
  console.log(`got ${claim.id} ${claim.deliveries}`);
  keepAlive();
} else {
  throw new Error(`unknown command ${command}`);
}

// A plain session for the data, through the package's adapter.
async function sessionFor(connect: () => unknown) {
  const { openSession } = await import("../_pg_session.ts");
  const session = await openSession(connect as () => object);
  return {
    query: session.query,
    [Symbol.asyncDispose]: () => session.close(),
  };
}
