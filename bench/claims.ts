// Figure 8: claimed work that survives its consumer. (a) What holding a
// claim costs per message: claimSync() + doneSync() against the claim this
// package had before locks (rename from new into cur, then remove), on a
// queue that stays 1,000 messages long. (b) How long the file of a consumer
// killed with SIGKILL takes to be back in `new` while another process runs
// recover() in a loop, beside the lease a lease-based queue would wait out.
import * as fs from "node:fs";
import { join } from "node:path";
import { FileStore } from "../filestore.ts";
import { type Case, interleave, median, percentile } from "./_stats.ts";
import { compared, emit, full, sleep, tempDir } from "./_util.ts";
import { spawn } from "node:child_process";
import { runtimeName } from "../_runtime.ts";

const FIGURE = "8 claims";
const RENAME = "rename new->cur, rename cur->done (the claim before locks)";
const CLAIM = 'claimSync() + doneSync({ moveTo: "done" })';
const QUEUE = 1_000;

using dir = tempDir("claims");
const store = new FileStore(join(dir.path, "q"), { recoverEvery: Infinity });
store.prepareSync();
const newDir = join(store.path, "new");
const curDir = join(store.path, "cur");
const doneDir = join(store.path, "done");
fs.mkdirSync(doneDir);
for (let i = 0; i < QUEUE; i++) fs.writeFileSync(join(newDir, `${1e12 + i}.msg`), "payload");
// Each message taken is put back from done into new in the timed loop of
// both cases, with one rename, so that the queue keeps its length.
const refill = (name: string) => fs.renameSync(join(doneDir, name), join(newDir, name));

// The old claim: a backlog from one reading, rename into cur, then out.
let backlog: string[] = [];
function renameClaim(): string {
  for (;;) {
    if (backlog.length === 0) backlog = fs.readdirSync(newDir).sort().reverse();
    const name = backlog.pop()!;
    try {
      fs.renameSync(join(newDir, name), join(curDir, name));
      fs.renameSync(join(curDir, name), join(doneDir, name));
      return name;
    } catch { /* taken; next */ }
  }
}

const cases: Case[] = [
  {
    name: RENAME,
    run(n) {
      for (let i = 0; i < n; i++) refill(renameClaim());
    },
  },
  {
    name: CLAIM,
    run(n) {
      for (let i = 0; i < n; i++) {
        const claim = store.claimSync()!;
        claim.doneSync({ moveTo: "done" });
        refill(claim.name);
      }
    },
  },
];
const times = await interleave(cases, {
  rounds: full ? 9 : 7,
  roundMs: full ? 80 : 40,
  warmupMs: 40,
});
const row = compared(FIGURE, CLAIM, "us/msg", times, RENAME);
emit({
  ...row,
  target: "ratio <= 1.3 (the lock and the handle cost at most 30%)",
  met: row.ratio! <= 1.3,
  note: `per message, each put back into new with one rename in both cases; queue ${QUEUE} long`,
});

// (b) A consumer holds a claim; another process... here, this one, loops
// recover() while the consumer is SIGKILLed.
const runtime = runtimeName;
const bin = join(import.meta.dirname ?? ".", "..", "node_modules", ".bin", runtime);
const worker = join(import.meta.dirname ?? ".", "..", "tests", "fixtures", "claim_worker.ts");
const args = runtime === "deno" ? ["run", "-A", "--quiet", worker] : [worker];
const samples: number[] = [];
for (let i = 0; i < (full ? 30 : 12); i++) {
  await store.put(`job ${i}`, { sync: false });
  const child = spawn(bin, [...args, "hold", store.path], { stdio: ["pipe", "pipe", "inherit"] });
  await new Promise<void>((resolve) => {
    child.stdout!.setEncoding("utf8");
    child.stdout!.on("data", (s: string) => s.includes("claimed") && resolve());
  });
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  const killed = performance.now();
  child.kill("SIGKILL");
  let back = NaN;
  while (Number.isNaN(back)) {
    if (store.recoverSync().requeued.length > 0) back = performance.now() - killed;
  }
  await exited;
  samples.push(back);
  store.claimSync()!.doneSync();
  await sleep(5);
}
emit({
  figure: FIGURE,
  case: "SIGKILLed consumer's file back in new, recover() in a loop: p50",
  unit: "ms",
  value: median(samples),
  spread: [percentile(samples, 10), percentile(samples, 90)],
  baselineName: "a 30 s lease (BullMQ's default lockDuration)",
  baseline: 30_000,
  ratio: median(samples) / 30_000,
  target: "p50 < 10 ms",
  met: median(samples) < 10,
  note:
    `${samples.length} kills; from kill() to the file in new, measured in the recovering process`,
});
