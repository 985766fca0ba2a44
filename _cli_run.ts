// Runs the command that cli.ts guards: its exit status comes back as a
// shell would report it, and the signals that would end the guard are
// passed on to it, so that the guard lives (and holds its lock or claim)
// until the command has ended, whatever ends it.
import { type Child, host, type Signal } from "./_cli_host.ts";
import { rt } from "./_runtime.ts";

/** The signals that are passed on to the command instead of ending the guard. */
export const FORWARDED: readonly Signal[] = [
  "SIGINT",
  "SIGTERM",
  "SIGHUP",
  "SIGQUIT",
  "SIGUSR1",
  "SIGUSR2",
];

/** The exit status a shell gives for a process ended by `signal`: 128 + its number. */
export function signalStatus(signal: Signal): number {
  return 128 + host().signalNumber(signal);
}

/**
 * Runs `argv` with this process's standard streams and waits for it to end.
 * `inherit`, a descriptor, is passed to it as descriptor 3, so that it holds
 * what the descriptor holds (a lock) for as long as it or its children keep
 * it open.
 *
 * @returns The exit status, 128 + the signal number for a command a signal ended.
 * @throws {CommandFailed} The command cannot be started (_cli_args.ts).
 */
export async function runCommand(argv: readonly string[], inherit?: number): Promise<number> {
  let child: Child | undefined;
  const pass = (signal: Signal) => {
    // Ctrl-C and Ctrl-\ reach the terminal's whole foreground group, the
    // command too: passing them on would deliver them twice.
    if ((signal === "SIGINT" || signal === "SIGQUIT") && inForeground()) return;
    child?.signal(signal);
  };
  // Listening before the command starts: a signal sent once it runs (it
  // may run before this process is scheduled again) must not find this
  // process without a handler, which would end it. Listeners run from the
  // event loop, after the spawn below has returned.
  for (const signal of FORWARDED) host().onSignal(signal, pass);
  try {
    child = host().spawn(argv, inherit);
    return await child.status;
  } finally {
    for (const signal of FORWARDED) host().offSignal(signal, pass);
  }
}

// Whether this process is in the foreground process group of its terminal
// (Linux: /proc/self/stat's pgrp and tpgid agree); false where /proc cannot
// tell.
function inForeground(): boolean {
  try {
    const stat = rt.readTextSync("/proc/self/stat");
    const [, , pgrp, , tty, tpgid] = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    return tty !== "0" && pgrp === tpgid;
  } catch {
    return false;
  }
}
