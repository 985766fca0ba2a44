// The FileStore queue from the shell: put, claim, list, recover, cleanup
// and watch, one item a line.
import { CliError, type OptionSpec, parse, seconds, UsageError } from "./_cli_args.ts";
import { joinBytes } from "./_check.ts";
import { host, type Signal } from "./_cli_host.ts";
import { runCommand, signalStatus } from "./_cli_run.ts";
import { type Claim, claimFile } from "./_claim.ts";
import { closeQuietly, rt } from "./_runtime.ts";
import { type Area, FileStore } from "./filestore.ts";

const HELP: OptionSpec = { short: "h", long: "help" };
const JSON_OUT: OptionSpec = { long: "json" };

/** The help of each queue command. */
export const QUEUE_HELP: Record<string, string> = {
  put: `Usage: filestore put DIR [FILE | -]

Delivers FILE's content (standard input with - or no FILE) into the store
DIR as one new message, written whole to tmp/ and then moved to new/, and
prints its path. DIR and its areas are created if missing.

Example:
  echo '{"job": 1}' | filestore put /var/spool/jobs
`,
  claim: `Usage: filestore claim DIR [--wait[=SECONDS]] [--max-deliveries N] -- COMMAND [ARGS...]

Claims the oldest message in DIR/new, runs COMMAND with the message's path
as its last argument while holding the claim, and then marks it done
(removed) when COMMAND exits 0, or releases it (back to new/) otherwise.
If this process or COMMAND is killed, the claim's lock goes with it and
the message is delivered again (recover). COMMAND's exit status is passed
through; signals are passed on to it.

Options:
      --wait[=S]          wait for a message (for at most S seconds)
      --max-deliveries N  a message delivered N times goes to DIR/failed
                          instead of back to new/ when COMMAND fails on it
                          (or, at recover, when its consumer died)
  -h, --help              this help

Exit statuses: 1 nothing to claim (or none came within --wait), 64 bad
usage, 66 DIR is not a store, 69 COMMAND cannot be run.

Example:
  while filestore claim /var/spool/jobs -- ./handle-job.sh; do :; done
`,
  list: `Usage: filestore list [--json] DIR [new|cur|tmp]

Prints the paths of the files in an area of the store (default new), oldest
name first, one a line.

Example:
  filestore list /var/spool/jobs | wc -l
`,
  recover: `Usage: filestore recover [--json] DIR [--max-deliveries N]

Gives back to new/ every claimed file whose consumer died (nobody holds
its lock), and prints their new paths; with --max-deliveries, those that
reached it go to DIR/failed.

Example:
  filestore recover /var/spool/jobs
`,
  cleanup: `Usage: filestore cleanup [--json] DIR [--older-than SECONDS]

Removes files left in tmp/ by writers that died, older than SECONDS
(default 129600, 36 hours), and prints their paths.

Example:
  filestore cleanup /var/spool/jobs --older-than 3600
`,
  watch: `Usage: filestore watch DIR [new|cur|tmp]

Prints the path of each file in the area (default new), first those there
now, then each arrival, one a line, until interrupted.

Example:
  filestore watch /var/spool/jobs | while read -r path; do echo "got $path"; done
`,
};

/** `filestore put`: the exit status. */
export async function putCommand(args: readonly string[]): Promise<number> {
  const { options, operands } = parse(args, [HELP]);
  if (options.has("help")) return help("put");
  if (operands.length < 1 || operands.length > 2) {
    throw new UsageError("requires a store directory and at most one file");
  }
  const [dir, source = "-"] = operands;
  let data: Uint8Array;
  try {
    data = source === "-" ? await host().readStdin() : readFile(source);
  } catch (e) {
    const code = (e as { code?: string }).code;
    const reason = code === "ENOENT"
      ? "no such file"
      : code === "EISDIR"
      ? "a directory"
      : code ?? String(e);
    throw new CliError(66, `cannot read ${source}: ${reason}`);
  }
  const store = new FileStore(dir!);
  await store.prepare();
  host().out(`${await store.put(data)}\n`);
  return 0;
}

/** `filestore claim`: the exit status. */
export async function claimCommand(args: readonly string[]): Promise<number> {
  const { options, operands, dashAt } = parse(args, [
    { long: "wait", value: "optional" },
    { long: "max-deliveries", value: "required" },
    HELP,
  ]);
  if (options.has("help")) return help("claim");
  const dir = operands[0];
  const argv = operands.slice(dashAt ?? 1);
  if (dir === undefined || dashAt === 0) {
    throw new UsageError("requires a store directory and a command");
  }
  if (dashAt !== undefined && dashAt > 1) {
    throw new UsageError("requires one store directory before '--'");
  }
  if (argv.length === 0) throw new UsageError("requires a command to run");
  const wait = options.get("wait");
  const timeout = wait === undefined ? 0 : wait === true ? Infinity : seconds(wait, "--wait");
  const deliveries = maxDeliveries(options.get("max-deliveries"));
  const limit = deliveries.maxDeliveries ?? Infinity;
  const store = new FileStore(dir, deliveries);
  await store.prepare();
  const stop = new AbortController();
  const abort = (signal: Signal) => stop.abort(signal);
  host().onSignal("SIGINT", abort);
  host().onSignal("SIGTERM", abort);
  let claim: Claim | null;
  try {
    claim = await claimWithin(store, timeout, stop.signal);
  } finally {
    host().offSignal("SIGINT", abort);
    host().offSignal("SIGTERM", abort);
  }
  if (stop.signal.aborted) {
    await claim?.release();
    return signalStatus(stop.signal.reason as Signal);
  }
  if (claim === null) return 1;
  // As `filestore lock` does, the command holds the claim's lock too
  // (Bun, Node; Deno cannot pass a descriptor on): if this process is
  // killed, the message is not handed out again while the command runs.
  const inherit = rt.passesFiles ? claimFile(claim).fd : undefined;
  let status: number;
  try {
    status = await runCommand([...argv, claim.path], inherit);
  } catch (e) {
    await claim.release();
    throw e;
  }
  if (status === 0) {
    await claim.done();
  } else if (claim.deliveries >= limit) {
    // A command that fails on it every time must not get it for ever.
    await claim.done({ moveTo: "failed" });
  } else {
    await claim.release({ retry: true });
  }
  return status;
}

// Claims at once, or waits for arrivals in new/ until `timeout` ms pass.
async function claimWithin(
  store: FileStore,
  timeout: number,
  signal: AbortSignal,
): Promise<Claim | null> {
  const first = await store.claim();
  if (first !== null || timeout === 0) return first;
  const limit = new AbortController();
  const timer = Number.isFinite(timeout)
    ? setTimeout(() => limit.abort(), Math.min(timeout, 2 ** 31 - 1))
    : undefined;
  const both = AbortSignal.any([signal, limit.signal]);
  try {
    for await (const _ of store.watch("new", { signal: both })) {
      const claim = await store.claim({ rescan: true });
      if (claim !== null) return claim;
    }
    return null;
  } finally {
    clearTimeout(timer);
  }
}

/** `filestore list`: the exit status. */
export async function listCommand(args: readonly string[]): Promise<number> {
  const { options, operands } = parse(args, [JSON_OUT, HELP]);
  if (options.has("help")) return help("list");
  const [dir, area] = storeAndArea(operands);
  const store = new FileStore(dir);
  const paths = (await store.list(area)).map((name) => store.pathOf(name, area));
  print(paths, options.has("json"));
  return 0;
}

/** `filestore recover`: the exit status. */
export async function recoverCommand(args: readonly string[]): Promise<number> {
  const { options, operands } = parse(args, [
    JSON_OUT,
    { long: "max-deliveries", value: "required" },
    HELP,
  ]);
  if (options.has("help")) return help("recover");
  if (operands.length !== 1) throw new UsageError("requires exactly one store directory");
  const store = new FileStore(operands[0]!, maxDeliveries(options.get("max-deliveries")));
  const recovered = await store.recover();
  if (options.has("json")) host().out(JSON.stringify(recovered) + "\n");
  else print([...recovered.requeued, ...recovered.failed], false);
  return 0;
}

/** `filestore cleanup`: the exit status. */
export async function cleanupCommand(args: readonly string[]): Promise<number> {
  const { options, operands } = parse(args, [
    JSON_OUT,
    { long: "older-than", value: "required" },
    HELP,
  ]);
  if (options.has("help")) return help("cleanup");
  if (operands.length !== 1) throw new UsageError("requires exactly one store directory");
  const age = options.get("older-than");
  const store = new FileStore(operands[0]!);
  const removed = await store.cleanup(
    typeof age === "string" ? { olderThan: seconds(age, "--older-than") } : {},
  );
  print(removed, options.has("json"));
  return 0;
}

/** `filestore watch`: the exit status (128 + the signal that ended it). */
export async function watchCommand(args: readonly string[]): Promise<number> {
  const { options, operands } = parse(args, [HELP]);
  if (options.has("help")) return help("watch");
  const [dir, area] = storeAndArea(operands);
  const store = new FileStore(dir);
  await store.prepare();
  const stop = new AbortController();
  const abort = (signal: Signal) => stop.abort(signal);
  host().onSignal("SIGINT", abort);
  host().onSignal("SIGTERM", abort);
  try {
    for await (const path of store.watch(area, { signal: stop.signal })) {
      host().out(`${path}\n`);
    }
  } finally {
    host().offSignal("SIGINT", abort);
    host().offSignal("SIGTERM", abort);
  }
  return stop.signal.aborted ? signalStatus(stop.signal.reason as Signal) : 0;
}

function storeAndArea(operands: string[]): [string, Area] {
  if (operands.length < 1 || operands.length > 2) {
    throw new UsageError("requires a store directory and at most one area");
  }
  const area = operands[1] ?? "new";
  if (area !== "new" && area !== "cur" && area !== "tmp") {
    throw new UsageError(`unknown area '${area}' (new, cur or tmp)`);
  }
  return [operands[0]!, area];
}

function maxDeliveries(value: string | true | undefined): { maxDeliveries?: number } {
  if (value === undefined) return {};
  const n = typeof value === "string" && /^[1-9]\d{0,8}$/.test(value) ? Number(value) : NaN;
  if (!Number.isInteger(n)) {
    throw new UsageError(`--max-deliveries: '${value}' is not a positive whole number`);
  }
  return { maxDeliveries: n };
}

function print(paths: string[], json: boolean): void {
  host().out(json ? JSON.stringify(paths) + "\n" : paths.map((p) => `${p}\n`).join(""));
}

function help(command: string): number {
  host().out(QUEUE_HELP[command]!);
  return 0;
}

function readFile(path: string): Uint8Array {
  const f = rt.openSync(path, { read: true });
  try {
    const chunks: Uint8Array[] = [];
    for (;;) {
      const buf = new Uint8Array(64 * 1024);
      const n = rt.readSync(f, buf);
      if (n === 0) return joinBytes(chunks);
      chunks.push(buf.subarray(0, n));
    }
  } finally {
    closeQuietly(f);
  }
}
