// The `filestore` command's host on Bun and Node: node:process and
// node:child_process. Imported by _cli_host.ts on those runtimes only.
import { spawn } from "node:child_process";
import { constants } from "node:os";
import process from "node:process";
import { CommandFailed } from "./_cli_args.ts";
import { joinBytes } from "./_check.ts";
import { type Child, type Host, type Signal, spawnFailure } from "./_cli_host.ts";

function signalNumber(signal: string): number {
  return constants.signals[signal as keyof typeof constants.signals] ?? 0;
}

/** The host on Bun and Node. */
export function nodeHost(): Host {
  return {
    args: () => process.argv.slice(2),
    out: (text) => void process.stdout.write(text),
    err: (text) => void process.stderr.write(text),
    exitOnBrokenPipe() {
      process.stdout.on("error", (e: NodeJS.ErrnoException) => {
        process.exit(e.code === "EPIPE" ? 141 : 74);
      });
    },
    async readStdin() {
      const chunks: Uint8Array[] = [];
      for await (const chunk of process.stdin) chunks.push(chunk as Uint8Array);
      return joinBytes(chunks);
    },
    env: (name) => process.env[name],
    onSignal: (signal, listener) => void process.on(signal, listener),
    offSignal: (signal, listener) => void process.off(signal, listener),
    signalNumber,
    spawn(argv, inherit): Child {
      const [file, ...args] = argv;
      const child = spawn(file!, args, {
        stdio: inherit === undefined ? "inherit" : ["inherit", "inherit", "inherit", inherit],
      });
      const status = new Promise<number>((resolve, reject) => {
        child.once("error", (e: NodeJS.ErrnoException) => {
          reject(new CommandFailed(spawnFailure(file!, e.code, e.message)));
        });
        child.once("exit", (code, signal) => {
          resolve(code ?? 128 + signalNumber(signal ?? ""));
        });
      });
      return {
        status,
        signal(signal: Signal) {
          if (child.pid === undefined || child.exitCode !== null || child.signalCode !== null) {
            return;
          }
          // process.kill, not child.kill: after child.kill(signal) Deno 2.9's
          // node:child_process reports that signal as the cause of the exit
          // even when the command caught it and exited with a status of its own.
          process.kill(child.pid, signal);
        },
      };
    },
    exit: (status) => process.exit(status),
  };
}
