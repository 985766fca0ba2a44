// The `filestore` command's host on Deno: Deno's own API only, since the
// first node: module a Deno process imports costs 15-23 ms. Imported by
// _cli_host.ts on Deno only. Deno's types are described here by what is
// used, as in _deno.ts.
import { CommandFailed } from "./_cli_args.ts";
import { joinBytes } from "./_check.ts";
import { type Child, type Host, type Signal, spawnFailure } from "./_cli_host.ts";

interface DenoChild {
  readonly pid: number;
  readonly status: Promise<{ code: number; signal: string | null }>;
}

interface DenoHostApi {
  args: string[];
  build: { os: string };
  stdout: { writeSync(p: Uint8Array): number };
  stderr: { writeSync(p: Uint8Array): number };
  stdin: { readable: AsyncIterable<Uint8Array> };
  env: { get(name: string): string | undefined };
  addSignalListener(signal: Signal, handler: () => void): void;
  removeSignalListener(signal: Signal, handler: () => void): void;
  kill(pid: number, signal: Signal): void;
  exit(status: number): never;
  Command: new (
    file: string,
    o: { args: string[]; stdin: "inherit"; stdout: "inherit"; stderr: "inherit" },
  ) => { spawn(): DenoChild };
  errors: { BrokenPipe: abstract new (...a: never[]) => Error };
}

// The numbers of the signals the command handles, where they differ
// between Linux and the BSDs (macOS); Deno has no table of its own.
const NUMBERS: Record<Signal, [linux: number, bsd: number]> = {
  SIGHUP: [1, 1],
  SIGINT: [2, 2],
  SIGQUIT: [3, 3],
  SIGTERM: [15, 15],
  SIGUSR1: [10, 30],
  SIGUSR2: [12, 31],
};

/** The host on Deno. */
export function denoHost(): Host {
  const D = (globalThis as unknown as { Deno: DenoHostApi }).Deno;
  const encoder = new TextEncoder();
  let brokenPipeExits = false;
  const write = (stream: { writeSync(p: Uint8Array): number }, text: string) => {
    const bytes = encoder.encode(text);
    try {
      for (let done = 0; done < bytes.length;) done += stream.writeSync(bytes.subarray(done));
    } catch (e) {
      if (brokenPipeExits && e instanceof D.errors.BrokenPipe) D.exit(141);
      throw e;
    }
  };
  // Deno's listeners take no argument, and each must be removed as added.
  const handlers = new Map<(signal: Signal) => void, Map<Signal, () => void>>();
  return {
    args: () => [...D.args],
    out: (text) => write(D.stdout, text),
    err: (text) => write(D.stderr, text),
    exitOnBrokenPipe() {
      brokenPipeExits = true;
    },
    async readStdin() {
      const chunks: Uint8Array[] = [];
      for await (const chunk of D.stdin.readable) chunks.push(chunk);
      return joinBytes(chunks);
    },
    env(name) {
      try {
        return D.env.get(name);
      } catch {
        return undefined; // no --allow-env
      }
    },
    onSignal(signal, listener) {
      let bySignal = handlers.get(listener);
      if (bySignal === undefined) handlers.set(listener, bySignal = new Map());
      if (bySignal.has(signal)) return;
      const handler = () => listener(signal);
      bySignal.set(signal, handler);
      D.addSignalListener(signal, handler);
    },
    offSignal(signal, listener) {
      const handler = handlers.get(listener)?.get(signal);
      if (handler === undefined) return;
      handlers.get(listener)!.delete(signal);
      D.removeSignalListener(signal, handler);
    },
    signalNumber: (signal) => NUMBERS[signal][D.build.os === "linux" ? 0 : 1],
    spawn(argv): Child {
      const [file, ...args] = argv;
      let child: DenoChild;
      try {
        child = new D.Command(file!, {
          args,
          stdin: "inherit",
          stdout: "inherit",
          stderr: "inherit",
        }).spawn();
      } catch (e) {
        const { code, message } = e as { code?: string; message?: string };
        throw new CommandFailed(spawnFailure(file!, code, message ?? String(e)));
      }
      let ended = false;
      // Deno gives a command that a signal ended the code 128 + its number.
      const status = child.status.then((s) => {
        ended = true;
        return s.code;
      });
      return {
        status,
        signal(signal) {
          if (ended) return;
          // Deno.kill, not child.kill(): after child.kill(signal) Deno 2.9
          // reports that signal as the cause of the exit even when the
          // command caught it and exited with a status of its own.
          try {
            D.kill(child.pid, signal);
          } catch { /* ended meanwhile */ }
        },
      };
    },
    exit: (status) => D.exit(status),
  };
}
