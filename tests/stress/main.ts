// The long versions of issue 7's reliability scenarios: `deno task stress`.
// Prints each scenario's figures (processes, operations, kills, inputs
// tried, losses) and exits non-zero on any violation. The in-process
// scenarios run in a child of each runtime.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import process from "node:process";
import {
  canMountTmpfs,
  exactlyOnce,
  type Figures,
  figures,
  fullDisk,
  holders,
  killedClaimers,
  killedConsumer,
  killedHolder,
  killedProducer,
  LONG,
  mutualExclusion,
} from "../_reliability.ts";
import { RUNTIMES, start } from "../_child.ts";

const only = process.argv[2];
const results: Figures[] = [];

function report(f: Figures, seconds: number): void {
  results.push(f);
  const status = f.violations.length === 0 ? "ok" : "FAILED";
  console.log(
    `${status.padEnd(6)} ${f.scenario} (${seconds.toFixed(1)} s): processes ${f.processes}, ` +
      `operations ${f.operations}, kills ${f.kills}, inputs ${f.inputs}, losses ${f.losses}`,
  );
  for (const note of f.notes) console.log(`         ${note}`);
  for (const v of f.violations) console.log(`  !! ${v}`);
}

async function scenario(name: string, fn: (dir: string) => Promise<Figures>): Promise<void> {
  if (only !== undefined && !name.includes(only)) return;
  const dir = mkdtempSync(join(tmpdir(), "filestore-stress-"));
  const began = performance.now();
  try {
    report(await fn(dir), (performance.now() - began) / 1000);
  } catch (e) {
    const f: Figures = {
      scenario: name,
      processes: 0,
      operations: 0,
      kills: 0,
      inputs: 0,
      losses: 0,
      violations: [`threw ${(e as Error).stack ?? e}`],
      notes: [],
    };
    report(f, (performance.now() - began) / 1000);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

async function inChild(name: string, runtime: typeof RUNTIMES[number]): Promise<Figures> {
  const child = start(runtime, "tests/fixtures/rel_worker.ts", ["inproc", name, "long"]);
  const line = await child.line("{", 3_600_000);
  await child.exited;
  const f = JSON.parse(line) as Figures;
  f.scenario = `${f.scenario} [${runtime}]`;
  f.processes = 1;
  return f;
}

await scenario(
  "mutual exclusion lock",
  (d) => mutualExclusion(d, "lock", LONG.processes, LONG.increments),
);
await scenario(
  "mutual exclusion lockfile",
  (d) => mutualExclusion(d, "lockfile", LONG.processes, LONG.increments),
);
await scenario("shared exclusive", (d) => holders(d, "rw", LONG.processes, LONG.holds));
await scenario("semaphore", (d) => holders(d, "sem", LONG.processes, LONG.holds));
for (const kind of ["lock", "pid", "lockfile"] as const) {
  await scenario(`killed holder ${kind}`, (d) => killedHolder(d, kind, LONG.holderKills));
}
await scenario("killed producer", (d) => killedProducer(d, LONG.producerKills));
await scenario("killed consumer", (d) => killedConsumer(d, LONG.consumerKills));
await scenario("exactly once", (d) => exactlyOnce(d, LONG.messages, LONG.consumers));
await scenario("killed claimers", (d) => killedClaimers(d, 8, 20_000, 100));
await scenario("full disk", async (d) => {
  if (canMountTmpfs(d)) return await fullDisk(d);
  return figures("full disk (skipped: cannot mount a tmpfs)");
});
for (
  const name of [
    "waiters",
    "bad-filestore",
    "bad-lock",
    "bad-lockfile",
    "escapes",
    "paths",
    "resources",
  ]
) {
  for (const runtime of RUNTIMES) {
    await scenario(`${name} ${runtime}`, () => inChild(name, runtime));
  }
}

const sum = (key: "processes" | "operations" | "kills" | "inputs" | "losses") =>
  results.reduce((n, f) => n + f[key], 0);
const violations = results.reduce((n, f) => n + f.violations.length, 0);
console.log(
  `\ntotal: ${results.length} scenarios, processes ${sum("processes")}, operations ${
    sum("operations")
  }, kills ${sum("kills")}, inputs ${sum("inputs")}, losses ${
    sum("losses")
  }, violations ${violations}`,
);
process.exit(violations === 0 && sum("losses") === 0 ? 0 : 1);
