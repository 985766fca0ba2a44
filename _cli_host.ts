// What the `filestore` command needs of the process it runs in: its
// arguments and standard streams, signals, exit, and a child process for
// the guarded command. The CLI's one runtime boundary, as _runtime.ts is
// the library's: _cli_deno.ts uses Deno's own API, _cli_node.ts (Bun, Node)
// node:process and node:child_process. Each is imported only on its own
// runtime, so that Deno never starts its Node layer (15-23 ms, most of a
// `filestore lock` run).
import { runtimeName } from "./_runtime.ts";

/** The signals the command handles: it passes them on to the command it guards. */
export type Signal = "SIGINT" | "SIGTERM" | "SIGHUP" | "SIGQUIT" | "SIGUSR1" | "SIGUSR2";

/** A command started by {@link Host.spawn}. */
export interface Child {
  /** Resolves to the exit status, 128 + the signal's number for a command a signal ended; rejects with CommandFailed if it could not start. */
  readonly status: Promise<number>;
  /** Sends `signal` to the command, unless it has already ended. */
  signal(signal: Signal): void;
}

/** The process around the command, on one runtime. */
export interface Host {
  /** The program's arguments, without the runtime and the script. */
  args(): string[];
  /** Writes to standard output. */
  out(text: string): void;
  /** Writes to standard error. */
  err(text: string): void;
  /** From then on, a standard output whose reader went away ends the process with 141, as SIGPIPE would (for a program only). */
  exitOnBrokenPipe(): void;
  /** Standard input, read to its end. */
  readStdin(): Promise<Uint8Array>;
  /** An environment variable, or undefined where it is unset or may not be read. */
  env(name: string): string | undefined;
  /** Calls `listener` with `signal` when the process gets it, instead of dying of it. */
  onSignal(signal: Signal, listener: (signal: Signal) => void): void;
  offSignal(signal: Signal, listener: (signal: Signal) => void): void;
  /** The signal's number on this system. */
  signalNumber(signal: Signal): number;
  /**
   * Starts `argv` with this process's standard streams; `inherit`, a
   * descriptor, becomes its descriptor 3 (only where Runtime.passesFiles).
   *
   * @throws {CommandFailed} The command cannot be started (on some runtimes the status rejects instead).
   */
  spawn(argv: readonly string[], inherit?: number): Child;
  exit(status: number): never;
}

let loaded: Host | undefined;

/** The running runtime's host, loaded on first use. */
export async function loadHost(): Promise<Host> {
  loaded ??= runtimeName === "deno"
    ? (await import("./_cli_deno.ts")).denoHost()
    : (await import("./_cli_node.ts")).nodeHost();
  return loaded;
}

/** The host that {@link loadHost} loaded; the commands run only after main() has loaded it. */
export function host(): Host {
  if (loaded === undefined) {
    throw new Error("The command's host is not loaded: call loadHost() first");
  }
  return loaded;
}

/** How a spawn error reads, by its errno name: as flock(1) says it. */
export function spawnFailure(file: string, code: string | undefined, message: string): string {
  const reason = code === "ENOENT"
    ? "No such file or directory"
    : code === "EACCES"
    ? "Permission denied"
    : code ?? message;
  return `failed to execute ${file}: ${reason}`;
}
