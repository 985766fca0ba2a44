// What the figure scripts share: options, the row format main.ts collects,
// temporary directories, and child processes of the running runtime.
import { type ChildProcess, spawn } from "node:child_process";
import { existsSync, mkdtempSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import process from "node:process";
import { fileURLToPath } from "node:url";
import { median, range, ratios } from "./_stats.ts";
import { runtimeName } from "../_runtime.ts";

export { runtimeName };

/** The bench/ directory. */
export const benchDir: string = dirname(fileURLToPath(import.meta.url));

/** The command-line arguments after the script. */
export const args: string[] = process.argv.slice(2);

/** `--full` runs the sizes; the default is the quick run. */
export const full: boolean = args.includes("--full");

/** The value after `--name`, if given. */
export function option(name: string): string | undefined {
  const at = args.indexOf(`--${name}`);
  return at >= 0 ? args[at + 1] : undefined;
}

/** One line of the final table. */
export interface Row {
  figure: string;
  case: string;
  runtime: string;
  unit: string;
  /** This package's median. */
  value: number;
  /** Spread of `value`: min-max over rounds, or p10-p90 over samples. */
  spread?: [number, number];
  baselineName?: string;
  baseline?: number;
  /** Median of the per-round ratios value / baseline. */
  ratio?: number;
  ratioSpread?: [number, number];
  target?: string;
  met?: boolean;
  note?: string;
}

/** Prints a row as one JSON line, the format main.ts collects. */
export function emit(row: Omit<Row, "runtime">): void {
  console.log(JSON.stringify({ runtime: runtimeName, ...row }));
}

/** A row comparing per-round times of a candidate to a baseline's. */
export function compared(
  figure: string,
  name: string,
  unit: string,
  times: Map<string, number[]>,
  baselineName: string,
  extra: Partial<Row> = {},
): Omit<Row, "runtime"> {
  const mine = times.get(name)!;
  const base = times.get(baselineName)!;
  const r = ratios(mine, base);
  return {
    figure,
    case: name,
    unit,
    value: median(mine),
    spread: range(mine),
    baselineName,
    baseline: median(base),
    ratio: median(r),
    ratioSpread: range(r),
    ...extra,
  };
}

/** A temporary directory, removed on dispose. */
export function tempDir(prefix: string): { path: string } & Disposable {
  const path = mkdtempSync(join(tmpdir(), `filestore-bench-${prefix}-`));
  return { path, [Symbol.dispose]: () => rmSync(path, { recursive: true, force: true }) };
}

/** Resolves after `ms` milliseconds. */
export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/**
 * Wall-clock time in milliseconds with sub-millisecond resolution, which
 * processes on one machine can compare.
 */
export function wallMs(): number {
  return performance.timeOrigin + performance.now();
}

/** Resident set size in MiB. */
export function rssMiB(): number {
  return process.memoryUsage().rss / 2 ** 20;
}

/** Open descriptors of this process (Linux). */
export function openFds(): number {
  return readdirSync("/proc/self/fd").length;
}

/** Collects garbage where the runtime lets us (main.ts passes the flags). */
export function collectGarbage(): void {
  const g = globalThis as { gc?: () => void; Bun?: { gc(force: boolean): void } };
  if (g.Bun) g.Bun.gc(true);
  else g.gc?.();
}

/** The command that runs a bench script with the running runtime. */
export function selfCommand(script: string, scriptArgs: string[]): [string, string[]] {
  const file = join(benchDir, script);
  if (runtimeName === "deno") {
    // Deno rewrites the arguments of a spawn of its own execPath as if they
    // were Node's when it runs under another Deno's child_process; the
    // symlink in node_modules/.bin is another path to the same binary.
    const local = join(benchDir, "..", "node_modules", ".bin", "deno");
    const bin = existsSync(local) ? local : process.execPath;
    return [bin, ["run", "-A", "--quiet", file, ...scriptArgs]];
  }
  if (runtimeName === "bun") return [process.execPath, [file, ...scriptArgs]];
  return [process.execPath, ["--no-warnings", file, ...scriptArgs]];
}

/** A child process that talks in lines. */
export interface Child {
  readonly process: ChildProcess;
  /** The next output line (queued lines first). */
  next(): Promise<string>;
  send(line: string): void;
  readonly exited: Promise<number>;
}

// The lines of a text stream, one per call of the function it returns;
// once the stream has ended, each call gets `last()`.
function lineReader(
  stream: NodeJS.ReadableStream,
  last: () => string,
): { next: () => Promise<string>; end: () => void } {
  const queue: string[] = [];
  const takers: ((line: string) => void)[] = [];
  let partial = "";
  let ended = false;
  stream.setEncoding("utf8");
  stream.on("data", (chunk: string) => {
    partial += chunk;
    const lines = partial.split("\n");
    partial = lines.pop()!;
    for (const line of lines) {
      const take = takers.shift();
      if (take) take(line);
      else queue.push(line);
    }
  });
  const end = () => {
    ended = true;
    for (const take of takers.splice(0)) take(last());
  };
  return {
    next() {
      const line = queue.shift();
      if (line !== undefined) return Promise.resolve(line);
      if (ended) return Promise.resolve(last());
      return new Promise((resolve) => takers.push(resolve));
    },
    end,
  };
}

/** Starts a bench script under the running runtime. */
export function startChild(script: string, scriptArgs: string[]): Child {
  const [bin, argv] = selfCommand(script, scriptArgs);
  const child = spawn(bin, argv, { stdio: ["pipe", "pipe", "inherit"] });
  let code: number | null = null;
  const lines = lineReader(child.stdout!, () => code === null ? "exit" : `exit ${code}`);
  const exited = new Promise<number>((resolve) =>
    child.on("exit", (exitCode) => {
      code = exitCode;
      lines.end();
      resolve(exitCode ?? -1);
    })
  );
  return {
    process: child,
    exited,
    next: lines.next,
    send: (line) => void child.stdin!.write(line + "\n"),
  };
}

/** Lines of this process's standard input, one at a time. */
export function stdinLines(): () => Promise<string> {
  const lines = lineReader(process.stdin, () => "");
  process.stdin.on("end", lines.end);
  return lines.next;
}
