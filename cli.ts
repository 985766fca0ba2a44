/**
 * The `filestore` command, for shell scripts and cron jobs: util-linux
 * `flock(1)` with the same options and exit statuses that also says who
 * holds a lock (`filestore lock`), the holders of a lock from `/proc/locks`
 * (`filestore holders`), and the `FileStore` queue from the shell
 * (`put`, `claim`, `list`, `recover`, `cleanup`, `watch`). Every command
 * has `--help`; bad usage exits with 64 and one line on stderr.
 *
 * ```sh
 * deno run -A jsr:@filestore/filestore/cli lock -n /tmp/backup.lock -- ./backup.sh
 * deno install -g -A -n filestore jsr:@filestore/filestore/cli
 * echo hello | filestore put /tmp/jobs
 * filestore claim /tmp/jobs -- cat
 * ```
 *
 * Programs call {@link main} with the arguments instead.
 *
 * @module
 */
import { CliError, CommandFailed, oneLine, UsageError } from "./_cli_args.ts";
import { loadHost } from "./_cli_host.ts";
import { FsError, NoSpace } from "./errors.ts";

const HELP = `Usage: filestore COMMAND [options] ...

Locks and a file queue for shell scripts, shared with every flock(2) user.

Commands:
  lock [options] FILE -- COMMAND   run COMMAND holding a lock (as flock(1))
  holders FILE                     who holds a lock on FILE
  put DIR [FILE | -]               deliver a message into the store DIR
  claim DIR -- COMMAND             run COMMAND on the oldest message
  list DIR [AREA]                  the messages in an area (default new)
  recover DIR                      give back the messages of dead consumers
  cleanup DIR                      remove what dead writers left in tmp
  watch DIR [AREA]                 print arrivals, one path a line

'filestore COMMAND --help' tells more, with an example.

Example:
  filestore lock -n /tmp/backup.lock -- ./backup.sh
`;

type Command = (args: readonly string[]) => number | Promise<number>;

// Each command's module is loaded when it is asked for, so that a lock
// does not pay for the queue's code.
const COMMANDS: Record<string, () => Promise<Command>> = {
  lock: async () => (await import("./_cli_lock.ts")).lockCommand,
  holders: async () => (await import("./_cli_lock.ts")).holdersCommand,
  put: async () => (await import("./_cli_queue.ts")).putCommand,
  claim: async () => (await import("./_cli_queue.ts")).claimCommand,
  list: async () => (await import("./_cli_queue.ts")).listCommand,
  recover: async () => (await import("./_cli_queue.ts")).recoverCommand,
  cleanup: async () => (await import("./_cli_queue.ts")).cleanupCommand,
  watch: async () => (await import("./_cli_queue.ts")).watchCommand,
};

/**
 * Runs the `filestore` command with `args` (without the program's name)
 * and resolves to its exit status; messages go to the process's stdout and
 * stderr. Bad usage is reported on stderr and resolves to 64, never thrown.
 *
 * @param args The arguments, e.g. `["lock", "-n", "x.lock", "true"]`.
 * @returns The exit status: the command's own for `lock` and `claim`,
 * 0 for success, 1 for "locked" or "nothing", 64 for bad usage, 66 for a
 * file or store that cannot be opened, 69 for a command that cannot be run,
 * 73 for a full disk, 70 for anything else.
 *
 * @example Usage
 * ```ts
 * import { main } from "@filestore/filestore/cli";
 * import assert from "node:assert/strict";
 * import { mkdtempSync, rmSync } from "node:fs";
 * import { tmpdir } from "node:os";
 * import { join } from "node:path";
 *
 * const dir = mkdtempSync(join(tmpdir(), "cli-"));
 * try {
 *   const lock = join(dir, "job.lock");
 *   assert.equal(await main(["lock", "-n", lock, "--", "true"]), 0);
 *   assert.equal(await main(["lock", "-n", lock, "--", "sh", "-c", "exit 3"]), 3);
 *   assert.equal(await main(["lock", "--no-such-option", lock, "true"]), 64);
 * } finally {
 *   rmSync(dir, { recursive: true });
 * }
 * ```
 */
export async function main(args: readonly string[]): Promise<number> {
  const [name, ...rest] = args;
  const host = await loadHost();
  try {
    if (name === "-h" || name === "--help" || name === "help") {
      host.out(HELP);
      return 0;
    }
    if (name === undefined) throw new UsageError("requires a command");
    const load = Object.hasOwn(COMMANDS, name) ? COMMANDS[name] : undefined;
    if (load === undefined) throw new UsageError(`unknown command '${name}'`);
    return await (await load())(rest);
  } catch (e) {
    const where = name && Object.hasOwn(COMMANDS, name) ? ` ${name}` : "";
    // One line, whatever file names and command lines the message holds.
    const say = (text: string) => host.err(`filestore${where}: ${oneLine(text)}\n`);
    if (e instanceof UsageError) {
      say(`${e.message}; see 'filestore${where} --help'`);
      return 64;
    }
    say(e instanceof Error ? e.message : String(e));
    if (e instanceof CliError) return e.status;
    if (e instanceof CommandFailed) return 69;
    if (e instanceof NoSpace) return 73;
    // Any other file-system refusal (missing, forbidden, a link or a FIFO
    // at the path) is a file that cannot be opened: flock(1)'s EX_NOINPUT.
    if (e instanceof FsError) return 66;
    return e instanceof TypeError || e instanceof RangeError ? 64 : 70;
  }
}

// Run as a program (deno run, bun, node) rather than imported. Node 22 has
// no import.meta.main; there (never on Deno, which has it) node:url and the
// script's path say.
function isProgram(): boolean {
  const meta = import.meta as { main?: boolean };
  if (typeof meta.main === "boolean") return meta.main;
  try {
    const script = process.argv[1];
    const { fileURLToPath } = process.getBuiltinModule("node:url");
    return script !== undefined && fileURLToPath(import.meta.url) === script;
  } catch {
    return false;
  }
}

if (isProgram()) {
  const host = await loadHost();
  // A reader that went away (`filestore watch DIR | head -1`) ends the
  // command as SIGPIPE would, quietly.
  host.exitOnBrokenPipe();
  const status = await main(host.args());
  // The commands leave nothing to wait for; the exit is explicit so that a
  // handle left open by a killed child's pipe cannot keep the command alive.
  host.exit(status);
}
