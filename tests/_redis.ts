// A Redis server for the tests and benchmarks of redis.ts, and the clients
// each runtime can use against it. REDIS_URL points at a server of your own;
// otherwise a private redis-server is started on a free loopback port, in a
// temporary directory, without persistence, and stopped at the end. Where
// neither is possible, `skip` says why in one line.
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createServer, Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import process from "node:process";
import { runtimeName } from "../_runtime.ts";
import type { RedisClientLike } from "../redis.ts";

/** A server the tests may use. */
export interface RedisServer {
  readonly url: string;
  readonly port: number;
  /** Whether it is ours (then it may be restarted and must be stopped). */
  readonly own: boolean;
  /**
   * Kills the server (SIGKILL: losing its data unless it was started with
   * persistence) and starts it again on the same port and directory.
   */
  restart(): Promise<void>;
  stop(): Promise<void>;
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolve(port));
    });
  });
}

function ping(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = new Socket();
    let answer = "";
    const done = (ok: boolean) => {
      socket.destroy();
      resolve(ok);
    };
    socket.setTimeout(500, () => done(false));
    socket.once("error", () => done(false));
    socket.on("data", (d) => {
      answer += d.toString();
      if (answer.includes("\r\n")) done(answer.startsWith("+PONG"));
    });
    socket.connect(port, "127.0.0.1", () => socket.write("PING\r\n"));
  });
}

async function until(ok: () => Promise<boolean>, ms: number): Promise<boolean> {
  const end = performance.now() + ms;
  while (performance.now() < end) {
    if (await ok()) return true;
    await new Promise((r) => setTimeout(r, 10));
  }
  return false;
}

function hasRedisServer(): boolean {
  return spawnSync("redis-server", ["--version"], { stdio: "ignore" }).status === 0;
}

/** Why the Redis tests cannot run here, or undefined when they can. */
export const skip: string | undefined = process.env.REDIS_URL || hasRedisServer()
  ? undefined
  : "no redis-server on PATH and no REDIS_URL (scripts/setup.sh installs it as root)";

/**
 * Starts (or, with REDIS_URL, names) the server. `extra` arguments (such as
 * `--appendonly yes`) start a server of our own whatever REDIS_URL says;
 * its restart keeps the directory, and with it what was persisted.
 */
export async function startRedis(extra: readonly string[] = []): Promise<RedisServer> {
  const given = process.env.REDIS_URL;
  if (given && extra.length === 0) {
    const port = Number(new URL(given).port || 6379);
    return {
      url: given,
      port,
      own: false,
      restart: () => Promise.reject(new Error("not ours")),
      stop: async () => {},
    };
  }
  const dir = mkdtempSync(join(tmpdir(), "filestore-redis-"));
  const port = await freePort();
  let child: ChildProcess | undefined;
  const launch = async () => {
    child = spawn("redis-server", [
      "--port",
      String(port),
      "--bind",
      "127.0.0.1",
      "--save",
      "",
      "--appendonly",
      "no",
      "--dir",
      dir,
      "--logfile",
      join(dir, "redis.log"),
      ...extra,
    ], { stdio: "ignore" });
    if (!await until(() => ping(port), 10_000)) {
      throw new Error(`redis-server on port ${port} did not start`);
    }
  };
  const halt = async () => {
    const c = child;
    if (c === undefined || c.exitCode !== null || c.signalCode !== null) return;
    const gone = new Promise((r) => c.once("exit", r));
    c.kill("SIGKILL");
    await gone;
  };
  await launch();
  return {
    url: `redis://127.0.0.1:${port}`,
    port,
    own: true,
    async restart() {
      await halt();
      await launch();
    },
    async stop() {
      await halt();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** A kind of client: Bun's built-in, node-redis or ioredis. */
export type ClientKind = "bun" | "node-redis" | "ioredis";

/** The clients this runtime can run. */
export const CLIENT_KINDS: readonly ClientKind[] = runtimeName === "bun"
  ? ["bun", "node-redis", "ioredis"]
  : ["node-redis", "ioredis"];

/** A connected client of `kind`, and how to close it. */
export interface TestClient {
  readonly client: RedisClientLike;
  /** A command, whatever the client. */
  send(command: string, ...args: string[]): Promise<unknown>;
  close(): Promise<void>;
}

/** How a test client behaves when its connection is lost. */
export interface ConnectOptions {
  /**
   * Connect again only after this many milliseconds (ioredis), or never:
   * Bun's client has no such delay, and node-redis makes its first attempt
   * at once whatever its strategy says.
   */
  reconnectAfter?: number;
}

/** Connects a client of `kind` to `url`. */
export async function connect(
  kind: ClientKind,
  url: string,
  options: ConnectOptions = {},
): Promise<TestClient> {
  const { reconnectAfter } = options;
  if (kind === "bun") {
    // deno-lint-ignore no-explicit-any
    const Bun = (globalThis as any).Bun;
    const client = new Bun.RedisClient(
      url,
      reconnectAfter === undefined ? {} : { autoReconnect: false },
    );
    await client.connect();
    return {
      client,
      send: (command, ...args) => client.send(command, args),
      close: () => Promise.resolve(client.close()),
    };
  }
  if (kind === "node-redis") {
    const { createClient } = await import("redis");
    const client = createClient(
      reconnectAfter === undefined ? { url } : { url, socket: { reconnectStrategy: false } },
    );
    client.on("error", () => {});
    await client.connect();
    return {
      client,
      send: (command, ...args) => client.sendCommand([command, ...args]),
      close: async () => {
        try {
          await client.close();
        } catch { /* already closed */ }
      },
    };
  }
  const { Redis } = await import("ioredis");
  const client = reconnectAfter === undefined
    ? new Redis(url)
    : new Redis(url, { retryStrategy: () => reconnectAfter });
  client.on("error", () => {});
  return {
    client,
    send: (command, ...args) => client.call(command, ...args),
    close: () => Promise.resolve(client.disconnect()),
  };
}

/**
 * A store that checks fencing tokens, as a file "TOKEN DATA": a write with
 * a token smaller than the stored one is refused. (A real store does the
 * same in one step, in a transaction or a conditional update.)
 */
export function fencedWrite(path: string, token: bigint, data: string): boolean {
  let stored = -1n;
  try {
    stored = BigInt(readFileSync(path, "utf8").split(" ")[0]!);
  } catch { /* no write yet */ }
  if (token < stored) return false;
  writeFileSync(path, `${token} ${data}`);
  return true;
}
