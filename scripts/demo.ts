// The package's main job in one run: a drop-directory worker that only one
// process may run at a time (LockFile), producers of three runtimes that
// deliver files into a queue (FileStore.put), a consumer that dies with
// kill -9 in the middle of a job, and consumers of three runtimes that race
// for the files (FileStore.claim), get the dead one's job back, and append
// to a report under an OS lock (Lock). Run: npm run demo (or deno run -A
// scripts/demo.ts).
import { spawn, spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import process from "node:process";
import { fileURLToPath } from "node:url";
import { FileStore, LockError, LockFile, readLockFile } from "../mod.ts";

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
    const result = spawnSync(bin, [...args, store.path, "5"], { stdio: "inherit" });
    if (result.status !== 0) throw new Error(`The ${name} producer failed: ${result.status}`);
  }
  console.log(`delivered: ${(await store.list("new")).length} files in new/`);

  // 3. A consumer that takes a job and dies with it (kill -9).
  const report = join(dir, "report.txt");
  const consumer = join(root, "scripts", "demo_consumer.ts");
  const start = (name: string, id: string, mode?: string) => {
    const run = runtimes.find(([r]) => r === name)!;
    const args = [...run[1].slice(0, -1), consumer, store.path, report, id];
    return spawn(join(root, "node_modules", ".bin", name), mode ? [...args, mode] : args, {
      stdio: ["ignore", "pipe", "inherit"],
    });
  };
  const dying = start("bun", "consumer X", "die");
  dying.stdout!.pipe(process.stdout);
  await new Promise((resolve) => dying.stdout!.once("data", resolve));
  dying.kill("SIGKILL");
  await new Promise((resolve) => dying.once("exit", resolve));
  console.log("consumer X was killed with kill -9, holding its job");

  // 4. Consumers of three runtimes race for the files; the dead one's job
  // comes back to new (claim() recovers it when new runs empty).
  const racers = [["deno", "consumer A"], ["bun", "consumer B"], ["node", "consumer C"]].map(
    ([name, id]) => {
      const child = start(name!, id!);
      child.stdout!.pipe(process.stdout);
      return new Promise((resolve) => child.once("exit", resolve));
    },
  );
  await Promise.all(racers);
  const lines = readFileSync(report, "utf8").trim().split("\n");
  const orders = new Set(
    lines.map((l) => l.replace(/^consumer \w handled /, "").replace(/ \(.*$/, "")),
  );
  console.log(`report: ${lines.length} lines, ${orders.size} different orders`);
  console.log(
    `left in new/: ${(await store.list("new")).length}, in cur/: ${
      (await store.list("cur")).length
    }`,
  );
  process.stdout.write(readFileSync(report, "utf8"));
} finally {
  rmSync(dir, { recursive: true, force: true });
}
