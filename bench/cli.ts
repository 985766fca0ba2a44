// The filestore command as a whole process: `filestore lock -n FILE true`
// against `flock -n FILE true` and against a bare run of an empty script on
// the same runtime, and the steps between them, measured in interleaved
// rounds. Run by hand:
//   deno run -A bench/cli.ts [--rounds N] [--runtime deno|bun|node]
import { spawnSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import process from "node:process";
import { median, range } from "./_stats.ts";
import { benchDir, option } from "./_util.ts";

const rounds = Number(option("rounds") ?? 30);
const runtimes = option("runtime") ? [option("runtime")!] : ["deno", "bun", "node"];
const root = join(benchDir, "..");
const dir = mkdtempSync(join(tmpdir(), "bench-cli-"));
const lockFile = join(dir, "x.lock");
const empty = join(dir, "empty.ts");
writeFileSync(empty, "");
// Loads what `filestore lock` loads, and stops there.
const loadOnly = join(dir, "load_lock.ts");
writeFileSync(loadOnly, `import "${join(root, "_cli_lock.ts")}";\n`);
const cli = join(root, "cli.ts");

function runtimeArgv(runtime: string, script: string, rest: string[]): string[] {
  const bin = join(root, "node_modules", ".bin", runtime);
  if (runtime === "deno") return [bin, "run", "-A", "--quiet", script, ...rest];
  if (runtime === "bun") return [bin, script, ...rest];
  return [bin, "--no-warnings", script, ...rest];
}

function time(argv: string[]): number {
  const start = performance.now();
  const r = spawnSync(argv[0]!, argv.slice(1), { stdio: "ignore" });
  const ms = performance.now() - start;
  if (r.status !== 0) throw new Error(`${argv.join(" ")} exited ${r.status}`);
  return ms;
}

try {
  for (const runtime of runtimes) {
    const cases: [string, string[]][] = [
      ["flock -n FILE true", ["flock", "-n", lockFile, "true"]],
      [`bare ${runtime} run of an empty script`, runtimeArgv(runtime, empty, [])],
      ["cli.ts --help (the entry point alone)", runtimeArgv(runtime, cli, ["--help"])],
      ["import of the lock command's modules", runtimeArgv(runtime, loadOnly, [])],
      ["filestore lock -n FILE true", runtimeArgv(runtime, cli, ["lock", "-n", lockFile, "true"])],
    ];
    const times = new Map<string, number[]>(cases.map(([name]) => [name, []]));
    for (const [, argv] of cases) time(argv); // caches warm
    for (let r = 0; r < rounds; r++) {
      for (const [name, argv] of cases) times.get(name)!.push(time(argv));
    }
    const bare = median(times.get(cases[1]![0])!);
    console.log(`\n${runtime} (${rounds} rounds, ms)`);
    console.log("| case | min | median | max | median - bare run |");
    console.log("| --- | --- | --- | --- | --- |");
    for (const [name] of cases) {
      const t = times.get(name)!;
      const [lo, hi] = range(t);
      const m = median(t);
      console.log(
        `| ${name} | ${lo.toFixed(1)} | ${m.toFixed(1)} | ${hi.toFixed(1)} | ${
          (m - bare).toFixed(1)
        } |`,
      );
    }
  }
} finally {
  rmSync(dir, { recursive: true });
}
process.exit(0);
