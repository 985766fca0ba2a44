// Figure 8: claimed work that survives its consumer. (a) What holding a
// claim costs per message: claimSync() + doneSync() against the claim this
// package had before locks (rename from new into cur, then remove), and
// beside both the least any locked claim can cost: the same rename and
// unlink plus the open, flock and close of the file (bare calls, with none
// of the checks: the no-replace move, the identity of the file locked).
// Each round fills `new` with a batch (not timed), then each case empties
// it. (b) How long the file of a consumer killed with SIGKILL takes to be
// back in `new` while another process runs recover() in a loop, beside the
// lease a lease-based queue would wait out.
import * as fs from "node:fs";
import { join } from "node:path";
import { FileStore } from "../filestore.ts";
import { median, percentile } from "./_stats.ts";
import { compared, emit, full, sleep, tempDir } from "./_util.ts";
import { spawn } from "node:child_process";
import { rt, runtimeName } from "../_runtime.ts";

const FIGURE = "8 claims";
const RENAME = "rename new->cur, unlink (the claim before locks, then remove)";
const CLAIM = "claimSync() + doneSync()";
const FLOOR = "bare open, flock, rename, unlink, close (no checks)";
const BATCH = 500;

using dir = tempDir("claims");
const store = new FileStore(join(dir.path, "q"), { recoverEvery: Infinity });
store.prepareSync();
const newDir = join(store.path, "new");
const curDir = join(store.path, "cur");
let serial = 0;
function fill(): void {
  for (let i = 0; i < BATCH; i++) {
    fs.writeFileSync(join(newDir, `${1e12 + serial++}.msg`), "payload");
  }
}
const sorted = () => fs.readdirSync(newDir).sort();

const cases: [string, () => void][] = [
  [RENAME, () => {
    for (const name of sorted()) {
      fs.renameSync(join(newDir, name), join(curDir, name));
      fs.unlinkSync(join(curDir, name));
    }
  }],
  [CLAIM, () => {
    for (;;) {
      const claim = store.claimSync();
      if (claim === null) return;
      claim.doneSync();
    }
  }],
  [FLOOR, () => {
    for (const name of sorted()) {
      // The runtime layer's own calls, bare (no O_NOFOLLOW check on Deno).
      const raw = rt.openSync(join(newDir, name), { read: true, noFollow: true });
      rt.tryLockSync(raw, true);
      fs.renameSync(join(newDir, name), join(curDir, name));
      fs.unlinkSync(join(curDir, name));
      rt.closeSync(raw);
    }
  }],
];
const times = new Map<string, number[]>(cases.map(([name]) => [name, []]));
const rounds = full ? 25 : 15;
for (let r = -1; r < rounds; r++) {
  for (let i = 0; i < cases.length; i++) {
    const [name, run] = cases[(i + Math.max(r, 0)) % cases.length]!;
    fill();
    const t0 = performance.now();
    run();
    if (r >= 0) times.get(name)!.push((performance.now() - t0) * 1000 / BATCH);
  }
}
const row = compared(FIGURE, CLAIM, "us/msg", times, RENAME);
emit({
  ...row,
  target: "ratio <= 1.3 (the lock and the handle cost at most 30%)",
  met: row.ratio! <= 1.3,
  note: `per message, batches of ${BATCH} filled into new before each round (not timed)`,
});
emit({
  ...compared(FIGURE, FLOOR, "us/msg", times, RENAME),
  note: "the least a claim held by flock adds: an open, a flock and a close per message",
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
