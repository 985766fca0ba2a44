// The package's main job in one run: a drop-directory worker that only one
// process may run at a time (LockFile), producers of three runtimes that
// deliver files into a queue (FileStore.put), consumers that claim each file
// exactly once (FileStore.claim), and a report file that they append to
// under an OS lock (Lock). Run: npm run demo (or deno run -A scripts/demo.ts).
import { spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import process from "node:process";
import { fileURLToPath } from "node:url";
import { FileStore, Lock, LockError, LockFile, readLockFile } from "../mod.ts";

// Claims files until none is left, appending each to the report while it
// holds the report's lock, so that lines never interleave.
async function consume(store: FileStore, report: string, id: string): Promise<number> {
  let done = 0;
  for (let claim = await store.claim(); claim !== null; claim = await store.claim()) {
    const text = await claim.text();
    await using lock = new Lock(report, { timeout: 5_000 });
    const file = await lock.acquire();
    await file.write(`${id} handled ${text}`);
    await claim.done();
    done++;
  }
  return done;
}

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const dir = mkdtempSync(join(tmpdir(), "filestore-demo-"));
try {
  // 1. Only one worker per directory: the lock file names its owner.
  using owner = new LockFile(join(dir, "worker.lock"));
  console.log(`worker lock taken by pid ${readLockFile(owner.path).pid}`);
  try {
    new LockFile(join(dir, "worker.lock")).close();
  } catch (error) {
    if (!(error instanceof LockError)) throw error;
    console.log(`a second worker is refused: ${error.message}`);
  }

  // 2. Producers in separate processes, one per runtime installed here.
  const store = new FileStore(join(dir, "inbox"));
  await store.prepare();
  const script = join(root, "scripts", "demo_producer.ts");
  const runtimes: [string, string[]][] = [
    ["deno", ["run", "-A", "--quiet", script]],
    ["bun", [script]],
    ["node", ["--no-warnings", script]],
  ];
  for (const [name, args] of runtimes) {
    const bin = join(root, "node_modules", ".bin", name);
    if (!existsSync(bin)) continue;
    const result = spawnSync(bin, [...args, store.path, "3"], { stdio: "inherit" });
    if (result.status !== 0) throw new Error(`The ${name} producer failed: ${result.status}`);
  }
  console.log(`delivered: ${(await store.list("new")).length} files in new/`);

  // 3. Two consumers race for the files.
  const report = join(dir, "report.txt");
  const counts = await Promise.all([
    consume(store, report, "consumer A"),
    consume(store, report, "consumer B"),
  ]);
  console.log(`claimed: ${counts.join(" + ")} = ${counts[0]! + counts[1]!} files, now in cur/`);
  console.log(`left in new/: ${(await store.list("new")).length}`);
  console.log("report:");
  process.stdout.write(readFileSync(report, "utf8"));
} finally {
  rmSync(dir, { recursive: true, force: true });
}
