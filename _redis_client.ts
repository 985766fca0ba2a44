// The one place that knows the Redis clients redis.ts accepts: Bun's
// built-in RedisClient and anything else with send(command, args), ioredis
// (call), node-redis 5/6 (sendCommand). Everything else in the package sees
// a Connection: send() with string arguments, replies with bytes decoded to
// strings, and a second connection for blocking commands.
import { invalid } from "./_check.ts";

/**
 * A Redis client that {@link RedisLock} and {@link RedisSemaphore} accept:
 * Bun's built-in `RedisClient` or anything else with `send(command, args)`,
 * an `ioredis` client (`call`), or a `redis` (node-redis 5 or 6) client
 * (`sendCommand`). Each also needs `duplicate()`, which gives the second
 * connection that a waiting acquire blocks on.
 */
export type RedisClientLike =
  | {
    /** Sends one command: Bun's `RedisClient`. */
    send(command: string, args: string[]): Promise<unknown>;
    /** A new client with the same options. */
    duplicate(): unknown;
  }
  | {
    /** Sends one command: `ioredis`. */
    call(command: string, ...args: string[]): Promise<unknown>;
    /** A new client with the same options. */
    duplicate(): unknown;
  }
  | {
    /** Sends one command: node-redis. */
    sendCommand(args: string[]): Promise<unknown>;
    /** A new client with the same options. */
    duplicate(): unknown;
  };

/** One connection, whatever the client. */
export interface Connection {
  /**
   * Sends a command; replies come back with bytes as strings, integers as
   * numbers. `args` is the connection's from then on: the caller makes a
   * new array for each command.
   */
  send(command: string, args: string[]): Promise<unknown>;
  /** A second connection with the same options, connected. */
  duplicate(): Promise<Connection>;
  /** Closes a connection that came from duplicate(); never rejects. */
  close(): Promise<void>;
  /**
   * Whether a connection that came from duplicate() may keep the host
   * process alive: yes while a wait runs on it, no while it idles in the
   * pool (a library must not delay its host's exit). Bun's `RedisClient`
   * does not keep the process alive when idle, and has no such switch.
   */
  keepAlive(yes: boolean): void;
}

type Flavour = "send" | "call" | "sendCommand";

interface AnyClient {
  send?(command: string, args: string[]): Promise<unknown>;
  call?(command: string, ...args: string[]): Promise<unknown>;
  sendCommand?(args: string[]): Promise<unknown>;
  duplicate(): unknown;
  connect?(): Promise<unknown>;
  ref?(): unknown;
  unref?(): unknown;
  stream?: { ref?(): unknown; unref?(): unknown };
  close?(): unknown;
  quit?(): unknown;
  disconnect?(): unknown;
  on?(event: string, listener: (...args: unknown[]) => void): unknown;
}

const decoder = new TextDecoder();

// Bulk replies may come back as Buffers or Uint8Arrays (a client told to
// return bytes); the scripts' replies are read as text.
function normalise(reply: unknown): unknown {
  if (reply instanceof Uint8Array) return decoder.decode(reply);
  if (Array.isArray(reply)) return reply.map(normalise);
  return reply;
}

// ioredis has sendCommand too (taking its own Command objects): `call`
// is tried first. Bun's RedisClient has neither.
function flavourOf(client: unknown): Flavour | undefined {
  if (client === null || typeof client !== "object") return undefined;
  const c = client as Record<string, unknown>;
  if (typeof c.duplicate !== "function") return undefined;
  if (typeof c.send === "function") return "send";
  if (typeof c.call === "function") return "call";
  if (typeof c.sendCommand === "function") return "sendCommand";
  return undefined;
}

/** Throws the package's TypeError unless `client` is one that {@link connectionOf} accepts. */
export function checkClient(client: unknown, what: string): void {
  if (flavourOf(client) === undefined) {
    throw invalid(
      TypeError,
      what,
      "client",
      "a Redis client with duplicate() and send(), call() or sendCommand()",
      client,
    );
  }
}

/** `client` as a Connection; `owned` ones (our duplicates) close on close(). */
export function connectionOf(client: unknown, owned = false): Connection {
  const flavour = flavourOf(client);
  if (flavour === undefined) throw new TypeError("Not a Redis client");
  const c = client as AnyClient;
  let send: (command: string, args: string[]) => Promise<unknown>;
  if (flavour === "send") send = (command, args) => c.send!(command, args);
  else if (flavour === "call") send = (command, args) => c.call!(command, ...args);
  else send = (command, args) => c.sendCommand!([command, ...args]);
  return {
    send: (command, args) => send(command, args).then(normalise),
    async duplicate() {
      // ioredis sends a command again after a reconnect by default: a
      // BLPOP sent again would wait on for a registration that a restart
      // lost. Failing it instead makes the waiter try again at once.
      const copy =
        (await (flavour === "call"
          ? (c.duplicate as (o: object) => unknown)({ autoResendUnfulfilledCommands: false })
          : c.duplicate())) as AnyClient;
      // node-redis and ioredis are event emitters: an "error" event nobody
      // listens to would end the host process when the server goes away.
      // The commands themselves still reject.
      if (typeof copy.on === "function") copy.on("error", () => {});
      // node-redis hands back a client that is not connected yet; ioredis
      // connects by itself (its connect() would then reject); Bun's is
      // connected on first use.
      if (flavour === "sendCommand" && typeof copy.connect === "function") await copy.connect();
      return connectionOf(copy, true);
    },
    keepAlive: owned ? keepAliveOf(c, flavour) : () => {},
    async close() {
      if (!owned) return;
      try {
        if (flavour === "call" && typeof c.disconnect === "function") c.disconnect();
        else if (typeof c.close === "function") await c.close();
        else if (typeof c.quit === "function") await c.quit();
        else if (typeof c.disconnect === "function") c.disconnect();
      } catch {
        // Already closed, or the server went away: either way it is closed.
      }
    },
  };
}

// node-redis has ref() and unref(), which it applies again after a
// reconnect; ioredis has neither, so its socket is switched, and switched
// again on each new connection; anything else is switched if it can be.
function keepAliveOf(c: AnyClient, flavour: Flavour): (yes: boolean) => void {
  if (flavour === "call") {
    let alive = true;
    c.on?.("connect", () => {
      if (!alive) c.stream?.unref?.();
    });
    return (yes) => {
      alive = yes;
      if (yes) c.stream?.ref?.();
      else c.stream?.unref?.();
    };
  }
  return (yes) => {
    if (yes) c.ref?.();
    else c.unref?.();
  };
}

/** Whether `error` is Redis's reply to EVALSHA for a script it does not know. */
export function isNoScript(error: unknown): boolean {
  return error instanceof Error && error.message.startsWith("NOSCRIPT");
}
