// Issue 16's long-run memory check: millions of lock cycles (Lock,
// LockFile, BoundedSemaphore in turn) and put/claim/done cycles in one
// process, with RSS and the JavaScript heap read after a garbage
// collection every twentieth of the run, to tell a leak (steady growth)
// from a level (growth that stops). Run by hand, with the collector exposed:
//   deno run -A --v8-flags=--expose-gc bench/memory.ts [cycles] [putClaims]
//   node --expose-gc bench/memory.ts ...   bun bench/memory.ts ...
import { mkdtempSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import process from "node:process";
import { runtimeName } from "../_runtime.ts";
import { churn } from "../tests/_reliability.ts";
import { collectGarbage } from "./_util.ts";

const cycles = Number(process.argv[2] ?? 5_000_000);
const putClaims = Number(process.argv[3] ?? 500_000);
const dir = mkdtempSync(join(tmpdir(), "filestore-memory-"));
const { cycle, putClaim } = churn(dir);
const mib = (n: number) => Number((n / 2 ** 20).toFixed(1));

const total = cycles + putClaims;
const step = Math.max(1, Math.floor(total / 20));
const samples: { ops: number; rssMiB: number; heapMiB: number; fds: number }[] = [];
function sample(ops: number): void {
  collectGarbage();
  const m = process.memoryUsage();
  samples.push({
    ops,
    rssMiB: mib(m.rss),
    heapMiB: mib(m.heapUsed),
    fds: readdirSync("/proc/self/fd").length,
  });
  console.error(JSON.stringify(samples.at(-1)));
}
const began = performance.now();
try {
  for (let i = 0; i < 3000; i++) await cycle(i);
  sample(0);
  for (let i = 0; i < total; i++) {
    if (i < cycles) await cycle(i);
    else putClaim(i - cycles);
    if ((i + 1) % step === 0) sample(i + 1);
  }
} finally {
  rmSync(dir, { recursive: true, force: true });
}
// Growth over the first and the second half of the run: a leak keeps
// growing in the second half; a level does not.
const first = samples[Math.floor(samples.length / 2)]!.rssMiB - samples[0]!.rssMiB;
const second = samples.at(-1)!.rssMiB - samples[Math.floor(samples.length / 2)]!.rssMiB;
console.log(JSON.stringify({
  runtime: runtimeName,
  cycles,
  putClaims,
  seconds: Number(((performance.now() - began) / 1000).toFixed(0)),
  rssFirstHalfMiB: Number(first.toFixed(1)),
  rssSecondHalfMiB: Number(second.toFixed(1)),
  samples,
}));
