// `filestore lock` and `filestore holders`: flock(1)'s command, which also
// says who holds the lock.
import {
  CliError,
  exitCode,
  oneLine,
  type OptionSpec,
  parse,
  seconds,
  UsageError,
} from "./_cli_args.ts";
import { host, type Signal } from "./_cli_host.ts";
import { runCommand, signalStatus } from "./_cli_run.ts";
import { fileOf, type OpenFile } from "./_file.ts";
import { type LockHolderProcess, lockHolders } from "./_holders.ts";
import { Lock } from "./_lock.ts";
import { rt } from "./_runtime.ts";
import { heldBy } from "./_check.ts";
import { AlreadyLocked, type LockHolder, PermissionDenied } from "./errors.ts";

const LOCK_OPTIONS: readonly OptionSpec[] = [
  { short: "s", long: "shared" },
  { short: "x", long: "exclusive" },
  { short: "e", long: "exclusive" },
  { short: "n", long: "nonblock", aliases: ["nonblocking", "nb"] },
  { short: "w", long: "wait", value: "required", aliases: ["timeout"] },
  { short: "E", long: "conflict-exit-code", value: "required" },
  { short: "o", long: "close" },
  { short: "c", long: "command", value: "required" },
  { long: "verbose" },
  { long: "pid" },
  { short: "F", long: "no-fork" },
  { short: "u", long: "unlock" },
  { short: "V", long: "version" },
  { short: "h", long: "help" },
];

/** The help of `filestore lock`. */
export const LOCK_HELP = `Usage: filestore lock [options] FILE [--] COMMAND [ARGS...]
       filestore lock [options] FILE -c STRING

Runs COMMAND while holding a flock(2) lock on FILE (created if missing), as
util-linux flock(1) does, with the same options and exit statuses. The lock
is the one flock(1), Python's fcntl.flock and this package's Lock take.

Options:
  -x, -e, --exclusive     an exclusive lock (the default)
  -s, --shared            a shared lock
  -n, --nonblock, --nb    fail at once if the lock is held
  -w, --wait, --timeout S give up after S seconds (fractions allowed; 0 = -n)
  -E, --conflict-exit-code N  exit status when the lock is held (default 1)
  -o, --close             COMMAND does not inherit the lock (always so on Deno)
  -c, --command STRING    run STRING with $SHELL -c (default /bin/sh)
  -F, --no-fork           accepted for flock(1)'s sake; COMMAND always runs as
                          a child process, which holds the lock with filestore
      --pid               write " PID HOST" into FILE while holding it
      --verbose           say how long the wait took, and what runs
  -h, --help              this help

When the lock is held, a line on stderr names its holders: pid, shared or
exclusive, command line and since when (from /proc/locks on Linux).
COMMAND's exit status is passed through (128+N if signal N ended it).
SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1 and SIGUSR2 sent to filestore are
passed on to COMMAND (Ctrl-C at a terminal reaches it directly, once);
the lock is released when COMMAND has ended. On Deno, COMMAND cannot
inherit the lock (-o is always in effect): a filestore killed with SIGKILL
frees the lock while COMMAND may still run.
Exit statuses: 64 bad usage, 66 FILE cannot be opened, 69 COMMAND cannot
be run.

Example:
  filestore lock -n /tmp/backup.lock -- ./backup.sh --full
`;

/** The help of `filestore holders`. */
export const HOLDERS_HELP = `Usage: filestore holders [--json] FILE

Lists every process holding a flock(2) lock on FILE, one a line:
PID, "shared" or "exclusive", then its command line. Read from /proc/locks
(Linux), without taking the lock.

Options:
      --json   one JSON array of {pid, shared, command, startedAt}
  -h, --help   this help

Exit statuses: 0 somebody holds it, 1 nobody does, 66 FILE cannot be
opened, 69 the system cannot tell (no /proc/locks).

Example:
  filestore holders /var/lock/backup.lock | cut -d' ' -f1
`;

/** `filestore lock`: the exit status. */
export async function lockCommand(args: readonly string[]): Promise<number> {
  const { options, order, operands } = parse(args, LOCK_OPTIONS, 1);
  if (options.has("help")) {
    host().out(LOCK_HELP);
    return 0;
  }
  if (options.has("version")) {
    host().out("filestore lock (@filestore/filestore)\n");
    return 0;
  }
  if (options.has("unlock")) {
    throw new UsageError(
      "-u works on an inherited descriptor (flock 9), which filestore does not take",
    );
  }
  const [file, ...rest] = operands;
  if (file === undefined) throw new UsageError("requires a file and a command");
  let argv = rest[0] === "--" ? rest.slice(1) : rest;
  let script = options.get("command");
  if (script === undefined && (argv[0] === "-c" || argv[0] === "--command")) {
    if (argv.length !== 2) throw new UsageError(`${argv[0]} takes exactly one argument`);
    script = argv[1]!;
    argv = [];
  }
  if (typeof script === "string") {
    if (argv.length > 0) throw new UsageError("-c and a command cannot both be given");
    argv = [host().env("SHELL") || "/bin/sh", "-c", script];
  }
  if (argv.length === 0) throw new UsageError("requires a command to run");
  // flock(1) lets the last of -s and -x win.
  const shared = order.findLast((o) => o === "shared" || o === "exclusive") === "shared";
  const pid = options.has("pid");
  if (pid && shared) throw new UsageError("--pid needs an exclusive lock (without -s)");
  const wait = options.get("wait");
  const timeout = typeof wait === "string" ? seconds(wait, "-w") : Infinity;
  const failWhenLocked = options.has("nonblock") || timeout === 0;
  const conflict = options.has("conflict-exit-code")
    ? exitCode(String(options.get("conflict-exit-code")), "-E")
    : 1;
  const verbose = options.has("verbose");

  const stop = new AbortController();
  const abort = (signal: Signal) => stop.abort(signal);
  host().onSignal("SIGINT", abort);
  host().onSignal("SIGTERM", abort);
  const started = performance.now();
  let lock: Lock | undefined;
  let opened: OpenFile | undefined;
  try {
    const modes = pid ? ["a"] as const : ["a", "r"] as const;
    for (const mode of modes) {
      const candidate = new Lock(file, {
        mode,
        shared,
        timeout,
        failWhenLocked,
        signal: stop.signal,
      });
      try {
        opened = await candidate.acquire();
        lock = candidate;
        break;
      } catch (e) {
        if (!(e instanceof PermissionDenied) || mode === modes.at(-1)) throw e;
      }
    }
  } catch (e) {
    if (e instanceof AlreadyLocked) {
      host().err(`filestore: ${oneLine(`${file}: ${refusal(file)}`)}\n`);
      if (verbose) host().err("filestore: failed to get lock\n");
      return conflict;
    }
    if (stop.signal.aborted) return signalStatus(stop.signal.reason as Signal);
    throw e;
  } finally {
    host().offSignal("SIGINT", abort);
    host().offSignal("SIGTERM", abort);
  }
  const held = lock!;
  const raw = fileOf(opened!);
  if (verbose) {
    const took = ((performance.now() - started) / 1000).toFixed(6);
    host().err(`filestore: getting lock took ${took} seconds\n`);
    host().err(`filestore: executing ${argv[0]}\n`);
  }
  if (pid) {
    // As the package's other writers: a file with another name (a hard
    // link someone planted) is never overwritten.
    if (rt.fstatSync(raw).nlink > 1) {
      held.release();
      throw new CliError(
        66,
        `${file} has more than one name (hard links): --pid does not overwrite it`,
      );
    }
    rt.truncateSync(raw, 0);
    rt.writeSync(raw, new TextEncoder().encode(` ${rt.pid} ${rt.hostname()}\n`), 0);
  }
  // Without -o the command holds the lock too, through the same open file,
  // as under flock(1): what it leaves running keeps it after it exits, so
  // this process then lets its own descriptor go without unlocking.
  const inherit = options.has("close") || !rt.passesFiles ? undefined : raw.fd;
  try {
    return await runCommand(argv, inherit);
  } finally {
    if (inherit === undefined) held.release();
  }
}

/** `filestore holders`: the exit status. */
export function holdersCommand(args: readonly string[]): number {
  const { options, operands } = parse(args, [
    { long: "json" },
    { short: "h", long: "help" },
  ]);
  if (options.has("help")) {
    host().out(HOLDERS_HELP);
    return 0;
  }
  if (operands.length !== 1) throw new UsageError("requires exactly one file");
  const holders = lockHolders(operands[0]!);
  if (holders === undefined) {
    host().err(
      `filestore: ${oneLine(`cannot tell who holds ${operands[0]}: ${noProcLocks()}`)}\n`,
    );
    return 69;
  }
  if (options.has("json")) {
    host().out(JSON.stringify(holders) + "\n");
  } else {
    for (const h of holders) {
      host().out(
        `${h.pid} ${h.shared ? "shared" : "exclusive"} ${commandOf(h)}\n`,
      );
    }
  }
  return holders.length > 0 ? 0 : 1;
}

/** Who holds `file`, in words, for the line on stderr. */
export function refusal(file: string): string {
  let holders: LockHolderProcess[] | undefined;
  try {
    holders = lockHolders(file);
  } catch {
    holders = undefined;
  }
  if (holders === undefined || holders.length === 0) {
    // Only then is the file's own word worth reading.
    const named = holderInFile(file);
    return named ? `locked; the file says ${heldBy(named)}` : `locked (${noProcLocks()})`;
  }
  const each = holders.map((h) => {
    const since = h.startedAt ? `, running since ${h.startedAt.toISOString()}` : "";
    return `pid ${h.pid} (${h.shared ? "shared" : "exclusive"}): ${commandOf(h)}${since}`;
  });
  return `locked by ${each.join("; ")}`;
}

// /proc/locks names the process that took the lock; when it has exited
// and a child that inherited the descriptor holds the lock on, there is no
// command line to show.
function commandOf(h: LockHolderProcess): string {
  if (h.command !== undefined) return oneLine(h.command);
  return exists(`/proc/${h.pid}`)
    ? "?"
    : "(exited; a process that inherited its descriptor holds it)";
}

// A holder that ran with --pid (or a zc.lockfile user) wrote " PID HOST".
function holderInFile(file: string): LockHolder | undefined {
  try {
    const m = /^ ?(\d+)(?:[ /](\S+))?/.exec(rt.readTextSync(file).slice(0, 300));
    if (!m) return undefined;
    return m[2] === undefined ? { pid: Number(m[1]) } : { pid: Number(m[1]), hostname: m[2] };
  } catch {
    return undefined;
  }
}

function exists(path: string): boolean {
  try {
    rt.lstatSync(path);
    return true;
  } catch {
    return false;
  }
}

function noProcLocks(): string {
  return "/proc/locks cannot be read (Linux only; Deno opens it only with --allow-all)";
}
