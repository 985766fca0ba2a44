// Child processes of each runtime, started from the project's own
// node_modules/.bin. No test runner needed: tests, the stress run and the
// benchmarks' helpers can all use it.
import { type ChildProcess, spawn } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

/** The project's root directory. */
export const root: string = join(dirname(fileURLToPath(import.meta.url)), "..");

/** The runtimes a child process can be started with. */
export type Runtime = "deno" | "bun" | "node";

/** All three, in a fixed order. */
export const RUNTIMES: readonly Runtime[] = ["deno", "bun", "node"];

/** The command line that runs `script` (a path under tests/) with `runtime`. */
export function command(runtime: Runtime, script: string, args: string[] = []): [string, string[]] {
  const bin = join(root, "node_modules", ".bin", runtime);
  const file = join(root, script);
  if (runtime === "deno") return [bin, ["run", "-A", "--quiet", file, ...args]];
  if (runtime === "bun") return [bin, [file, ...args]];
  return [bin, ["--no-warnings", file, ...args]];
}

/** A child process with line-by-line access to its standard output. */
export interface Child {
  readonly process: ChildProcess;
  readonly pid: number;
  /** Resolves with the first output line that satisfies `match`. */
  line(match: string | RegExp, timeoutMs?: number): Promise<string>;
  /** All standard output so far. */
  output(): string;
  /** Resolves with the exit code (or the signal's name) once it ends. */
  readonly exited: Promise<number | string>;
  /** Writes a line to its standard input. */
  send(text: string): void;
  kill(signal?: NodeJS.Signals): void;
}

const children = new Set<ChildProcess>();

/** Kills every child started here that is still running. */
export function killChildren(): void {
  for (const child of children) child.kill("SIGKILL");
}

/** Starts `script` (a path under the project root) with `runtime`. */
export function start(
  runtime: Runtime,
  script: string,
  args: string[] = [],
  env?: Record<string, string>,
): Child {
  const [bin, argv] = command(runtime, script, args);
  const child = spawn(bin, argv, {
    stdio: ["pipe", "pipe", "pipe"],
    ...(env ? { env: { ...process.env, ...env } } : {}),
  });
  children.add(child);
  child.on("exit", () => children.delete(child));
  let out = "";
  let err = "";
  const waiters: { match: string | RegExp; resolve(line: string): void }[] = [];
  const lines: string[] = [];
  let partial = "";
  child.stdout!.setEncoding("utf8");
  child.stderr!.setEncoding("utf8");
  child.stdout!.on("data", (chunk: string) => {
    out += chunk;
    partial += chunk;
    const parts = partial.split("\n");
    partial = parts.pop() ?? "";
    for (const l of parts) {
      lines.push(l);
      for (let i = waiters.length - 1; i >= 0; i--) {
        const w = waiters[i]!;
        if (typeof w.match === "string" ? l.includes(w.match) : w.match.test(l)) {
          waiters.splice(i, 1);
          w.resolve(l);
        }
      }
    }
  });
  child.stderr!.on("data", (chunk: string) => err += chunk);
  // A write to a child that was just killed fails with EPIPE: not our error.
  child.stdin!.on("error", () => {});
  const exited = new Promise<number | string>((resolve) =>
    child.on("exit", (code, signal) => resolve(code ?? signal ?? -1))
  );
  return {
    process: child,
    pid: child.pid!,
    exited,
    output: () => out,
    send: (text) => child.stdin!.write(text + "\n"),
    kill: (signal = "SIGTERM") => child.kill(signal),
    line(match, timeoutMs = 30_000) {
      const found = lines.find((l) =>
        typeof match === "string" ? l.includes(match) : match.test(l)
      );
      if (found !== undefined) return Promise.resolve(found);
      return new Promise<string>((resolve, reject) => {
        const timer = setTimeout(
          () =>
            reject(
              new Error(
                `${runtime} ${script}: no line matching ${match} within ${timeoutMs} ms\nstdout: ${out}\nstderr: ${err}`,
              ),
            ),
          timeoutMs,
        );
        const w = {
          match,
          resolve: (l: string) => {
            clearTimeout(timer);
            resolve(l);
          },
        };
        waiters.push(w);
        void exited.then((code) => {
          const at = waiters.indexOf(w);
          if (at < 0) return;
          waiters.splice(at, 1);
          clearTimeout(timer);
          reject(
            new Error(
              `${runtime} ${script} exited (${code}) before a line matching ${match}\nstdout: ${out}\nstderr: ${err}`,
            ),
          );
        });
      });
    },
  };
}

/** Runs `script` to its end; resolves with its exit code and output. */
export async function run(
  runtime: Runtime,
  script: string,
  args: string[] = [],
): Promise<{ code: number | string; stdout: string }> {
  const child = start(runtime, script, args);
  const code = await child.exited;
  return { code, stdout: child.output() };
}

/** Resolves after `ms` milliseconds. */
export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/**
 * Resolves once /proc/locks lists `pid` as blocked waiting for a flock (a
 * "->" line): then a thread of that process is in the kernel's wait for
 * sure. Without /proc/locks, after half a second.
 */
export async function blockedInFlock(pid: number): Promise<void> {
  if (!existsSync("/proc/locks")) return await sleep(500);
  for (let i = 0; i < 3000; i++) {
    const table = readFileSync("/proc/locks", "utf8");
    if (table.split("\n").some((l) => l.includes("->") && l.includes(` ${pid} `))) return;
    await sleep(10);
  }
  throw new Error(`pid ${pid} never blocked in flock`);
}
