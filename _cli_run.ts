// Runs the command that cli.ts guards: its exit status comes back as a
// shell would report it, and the signals that would end the guard are
// passed on to it, so that the guard lives (and holds its lock or claim)
// until the command has ended, whatever ends it.
import { spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import { constants } from "node:os";
import process from "node:process";

/** What kept the command from starting: exit status 69 as flock(1) has it, and this message. */
export class CommandFailed extends Error {
  override name = "CommandFailed";
}

/** The signals that are passed on to the command instead of ending the guard. */
export const FORWARDED = ["SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT", "SIGUSR1", "SIGUSR2"] as const;

/** The exit status a shell gives for a process ended by `signal`: 128 + its number. */
export function signalStatus(signal: string): number {
  return 128 + (constants.signals[signal as keyof typeof constants.signals] ?? 0);
}

/**
 * Runs `argv` with this process's standard streams and waits for it to end.
 * `inherit`, a descriptor, is passed to it as descriptor 3, so that it holds
 * what the descriptor holds (a lock) for as long as it or its children keep
 * it open.
 *
 * @returns The exit status, 128 + the signal number for a command a signal ended.
 */
export function runCommand(argv: readonly string[], inherit?: number): Promise<number> {
  const [file, ...args] = argv;
  return new Promise((resolve, reject) => {
    const child = spawn(file!, args, {
      stdio: inherit === undefined ? "inherit" : ["inherit", "inherit", "inherit", inherit],
    });
    // process.kill, not child.kill: after child.kill(signal) Deno 2.9
    // reports that signal as the cause of the exit even when the command
    // caught it and exited with a status of its own.
    const pass = (signal: NodeJS.Signals) => {
      if (child.pid === undefined || child.exitCode !== null) return;
      // Ctrl-C and Ctrl-\ reach the terminal's whole foreground group, the
      // command too: passing them on would deliver them twice.
      if ((signal === "SIGINT" || signal === "SIGQUIT") && inForeground()) return;
      process.kill(child.pid, signal);
    };
    for (const signal of FORWARDED) process.on(signal, pass);
    const stop = () => {
      for (const signal of FORWARDED) process.off(signal, pass);
    };
    child.once("error", (e: NodeJS.ErrnoException) => {
      stop();
      reject(new CommandFailed(`failed to execute ${file}: ${describe(e)}`));
    });
    child.once("exit", (code, signal) => {
      stop();
      resolve(code ?? signalStatus(signal ?? ""));
    });
  });
}

// Whether this process is in the foreground process group of its terminal
// (Linux: /proc/self/stat's pgrp and tpgid agree); false where /proc cannot
// tell.
function inForeground(): boolean {
  try {
    const stat = readFileSync("/proc/self/stat", "utf8");
    const [, , pgrp, , tty, tpgid] = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    return tty !== "0" && pgrp === tpgid;
  } catch {
    return false;
  }
}

function describe(e: NodeJS.ErrnoException): string {
  if (e.code === "ENOENT") return "No such file or directory";
  if (e.code === "EACCES") return "Permission denied";
  return e.code ?? e.message;
}
