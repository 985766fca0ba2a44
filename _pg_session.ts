// One PostgreSQL session of its own, whatever client the user brings:
// postgres.js, Bun's built-in SQL or node-postgres (pg). The rest of
// postgres.ts sees only `query`, `cancel`, `close` and `lost`. It also keeps
// the host process alive when the server ends the session: it never sends a
// query on a session it knows has ended (postgres.js crashes its process on
// the next query of a reserved connection then), it listens for pg's 'error'
// events, and it hears of a closed connection at once through the clients'
// own hooks, since a session advisory lock is gone with its session.
import { invalid, show } from "./_check.ts";
import { unrefTimer } from "./_wait.ts";

/**
 * A client that {@link PgConnect} may return: a postgres.js `Sql` made with
 * `max: 1`, a Bun `SQL` made with `max: 1`, or a `pg.Client` (connected or
 * not). Typed loosely so that the package depends on none of them.
 */
export type PgClient = object;

/**
 * Opens a new connection for a lock or queue session: called once per
 * session, which then belongs to the caller of this function's result (the
 * package closes it).
 */
export type PgConnect = () => PgClient | Promise<PgClient>;

/** A row as the clients give it: column name to value. */
export type Row = Record<string, unknown>;

/** One session, opened by {@link openSession}. */
export interface Session {
  /** The server process id of this session (pg_backend_pid()). */
  readonly pid: number;
  /**
   * Whether the connection goes straight to the server: `true` when the
   * process id the connection announced at startup (its cancel key) is the
   * server's `pg_backend_pid()`, `false` when they differ (a pooler or proxy
   * such as PgBouncer answered the startup with keys of its own), and
   * `undefined` when the client does not show it (Bun's SQL).
   */
  readonly direct: boolean | undefined;
  /**
   * Whether a second connection of the same `connect` may be tried for a
   * probe: not with postgres.js, which reports a connection that fails
   * while it starts (a full pool, a connection limit) as an unhandled
   * rejection, and so would end a Deno or Node host process.
   */
  readonly probes: boolean;
  /**
   * Runs one statement. If `signal` aborts while it runs, the statement is
   * cancelled on the server (not merely abandoned), and the promise settles
   * as the server answered: the rows if the statement had already finished,
   * or the cancellation error (SQLSTATE 57014).
   */
  query(text: string, params?: unknown[], signal?: AbortSignal): Promise<Row[]>;
  /** Aborts when the session ends without {@link Session.close}. */
  readonly lost: AbortSignal;
  /**
   * Calls `onNotify` for each NOTIFY on `channel` (a lowercase SQL
   * identifier); resolves once listening, to the function that stops it.
   * `undefined` where the client cannot LISTEN (a Bun older than its
   * `SQL.listen()`).
   */
  readonly listen:
    | ((channel: string, onNotify: () => void) => Promise<() => Promise<void>>)
    | undefined;
  /** Whether the session is still usable. */
  readonly open: boolean;
  /** Ends the session; never throws. */
  close(): Promise<void>;
}

// What differs between the clients.
interface Driver {
  run(text: string, params: unknown[]): { result: Promise<Row[]>; cancel(): void };
  /** The process id of the connection's BackendKeyData, if the client shows it. */
  announcedPid(): number | undefined;
  /** See {@link Session.probes}. */
  probes: boolean;
  listen?: (channel: string, onNotify: () => void) => Promise<() => Promise<void>>;
  end(): Promise<void>;
}

/** The SQLSTATE of a client's error (pg and postgres.js: `code`; Bun: `errno`), if any. */
export function sqlState(e: unknown): string | undefined {
  if (e === null || typeof e !== "object") return undefined;
  const { code, errno } = e as { code?: unknown; errno?: unknown };
  for (const c of [code, errno]) {
    if (typeof c === "string" && /^[0-9A-Z]{5}$/.test(c)) return c;
  }
  return undefined;
}

const WHAT = "open a PostgreSQL session";

// Errors after which the server has ended the session: connection
// exceptions (08) and operator interventions that terminate (57P01-57P05).
function endsSession(e: unknown): boolean {
  const state = sqlState(e);
  return state !== undefined && (state.startsWith("08") || /^57P0[1-5]$/.test(state));
}

type Fn = (...args: unknown[]) => unknown;
type Loose = Record<string, unknown>;

function has(o: unknown, ...names: string[]): boolean {
  return o !== null && (typeof o === "object" || typeof o === "function") &&
    names.every((n) => typeof (o as Loose)[n] === "function");
}

/**
 * Opens a session with `connect`'s client and learns its backend pid.
 * `setup` runs as the first statement (its rows are ignored).
 *
 * @throws {TypeError} `connect` gave something that is not a supported client.
 * @throws {RangeError} A postgres.js or Bun pool that may use more than one connection.
 */
export async function openSession(connect: PgConnect, signal?: AbortSignal): Promise<Session> {
  const client = await connect();
  const controller = new AbortController();
  let closing = false;
  const onLost = (cause: unknown) => {
    if (!closing && !controller.signal.aborted) {
      controller.abort(new Error("PostgreSQL session lost", { cause }));
    }
  };
  const driver = await driverOf(client, onLost, connect);
  let pid: number;
  // Given up (`signal`): the connection is ended while it may still be
  // starting, so that no answer can come for it later.
  const giveUp = () => {
    closing = true;
    void driver.end().catch(() => {});
  };
  signal?.addEventListener("abort", giveUp, { once: true });
  try {
    if (signal?.aborted) throw signal.reason;
    const rows = await driver.run("select pg_backend_pid()::int4 as pid", []).result;
    if (signal?.aborted) throw signal.reason;
    pid = Number(rows[0]?.pid);
  } catch (e) {
    closing = true;
    await driver.end().catch(() => {});
    throw e;
  } finally {
    signal?.removeEventListener("abort", giveUp);
  }
  const announced = driver.announcedPid();
  return {
    pid,
    direct: announced === undefined ? undefined : announced >>> 0 === pid,
    probes: driver.probes,
    lost: controller.signal,
    listen: driver.listen,
    get open() {
      return !closing && !controller.signal.aborted;
    },
    query(text, params = [], signal) {
      if (closing) return Promise.reject(new Error("Cannot query: the session is closed"));
      if (controller.signal.aborted) return Promise.reject(controller.signal.reason);
      const run = driver.run(text, params);
      const { cancel } = run;
      // The server's answer may arrive before the client's close event.
      const result = run.result.catch((e) => {
        if (endsSession(e)) onLost(e);
        throw e;
      });
      if (signal === undefined) return result;
      const onAbort = () => cancel();
      if (signal.aborted) onAbort();
      else signal.addEventListener("abort", onAbort, { once: true });
      return result.finally(() => signal.removeEventListener("abort", onAbort));
    },
    async close() {
      if (closing) return;
      closing = true;
      await driver.end().catch(() => {});
    },
  };
}

// Chains the client's close hook to `onClose`: postgres.js and Bun read
// `options.onclose` each time a connection closes.
function hookClose(options: Loose, onClose: (e: unknown) => void): void {
  const before = options.onclose as Fn | undefined;
  options.onclose = (...args: unknown[]) => {
    onClose(args[0]);
    if (typeof before === "function") before(...args);
  };
}

async function driverOf(
  client: unknown,
  onLost: (cause: unknown) => void,
  connect: PgConnect,
): Promise<Driver> {
  const c = client as Loose;
  if (has(client, "unsafe", "end") && c.options !== null && typeof c.options === "object") {
    const options = c.options as Loose;
    const bun = "adapter" in options;
    if (options.max !== 1) {
      throw invalid(
        RangeError,
        WHAT,
        "connect",
        `a function that returns a client of one connection (${
          bun ? "new SQL(url, { max: 1 })" : "postgres(url, { max: 1 })"
        }), so that every statement runs in the same session`,
        `a pool of max ${show(options.max)}`,
      );
    }
    hookClose(options, onLost);
    const unsafe = c.unsafe as (text: string, params: unknown[]) => Promise<Row[]> & {
      cancel(): unknown;
    };
    // postgres.js and Bun's SQL (since it has listen()) give the same
    // subscription with unlisten().
    const listen = typeof c.listen !== "function" ? undefined : async (
      channel: string,
      onNotify: () => void,
    ) => {
      const listening = await (c.listen as Fn).call(client, channel, () => onNotify()) as {
        unlisten(): Promise<void>;
      };
      return () => listening.unlisten().catch(() => {});
    };
    // postgres.js puts the BackendKeyData on each result as `state`.
    let state: { pid?: unknown } | undefined;
    return {
      ...(listen === undefined ? {} : { listen }),
      announcedPid: () => typeof state?.pid === "number" ? state.pid : undefined,
      probes: bun,
      run(text, params) {
        // Not prepared (postgres.js's default for unsafe()): a prepared
        // statement belongs to one server session, which a pooler in
        // transaction mode does not keep; PgLock must still run there to
        // tell the user so.
        const q = unsafe.call(client, text, params);
        return {
          result: Promise.resolve(q).then((rows) => {
            state ??= (rows as { state?: { pid?: unknown } }).state;
            return rows;
          }),
          cancel() {
            try {
              void Promise.resolve(q.cancel()).catch(() => {});
            } catch { /* finished already */ }
          },
        };
      },
      async end() {
        // postgres.js waits `timeout` seconds for running queries; Bun's close too.
        await (c.end as Fn).call(client, { timeout: 0 });
      },
    };
  }
  if (has(client, "query", "connect", "end", "on")) {
    if ("totalCount" in c) {
      throw invalid(
        TypeError,
        WHAT,
        "connect",
        "a function that returns a pg.Client, not a pg.Pool (a pool may swap the session)",
        client,
      );
    }
    // An 'error' event without a listener would end the host process.
    (c.on as Fn).call(client, "error", (e: unknown) => onLost(e));
    (c.on as Fn).call(client, "end", () => onLost(new Error("connection ended")));
    if (c.processID === null || c.processID === undefined) await (c.connect as Fn).call(client);
    const query = c.query as (text: string, params: unknown[]) => Promise<{ rows: Row[] }>;
    return {
      announcedPid: () => typeof c.processID === "number" ? c.processID : undefined,
      probes: true,
      async listen(channel, onNotify) {
        const handler = (msg: { channel?: unknown }) => {
          if (msg.channel === channel) onNotify();
        };
        (c.on as Fn).call(client, "notification", handler);
        await query.call(client, `listen ${channel}`, []);
        return async () => {
          (c.removeListener as Fn).call(client, "notification", handler);
          await query.call(client, `unlisten ${channel}`, []).catch(() => {});
        };
      },
      run(text, params) {
        let pid: number | undefined;
        const result = query.call(client, text, params).then((r) => r.rows);
        return {
          result,
          cancel() {
            pid ??= c.processID as number;
            void cancelBackend(connect, pid);
          },
        };
      },
      async end() {
        await (c.end as Fn).call(client);
      },
    };
  }
  throw invalid(
    TypeError,
    WHAT,
    "connect",
    "a function that returns a postgres.js Sql, a Bun SQL or a pg.Client",
    client,
  );
}

/** What each error that finds a pooler in transaction or statement mode says it found. */
export const POOLER =
  "the connection goes through a pooler in transaction or statement mode (such as PgBouncer)";

/** The end of each such error about locks: what it breaks, and what to connect to instead. */
export const POOLED =
  `${POOLER}, which breaks session locks; connect to the server or to a pool in session mode`;

/** The session setting that {@link markSession} writes. */
export const MARK = "filestore.session";

/**
 * Marks the server session behind `session` with a new random token (the
 * setting {@link MARK}, for the session's life), then reads that setting
 * from a second session of `connect`. Only a pooler in transaction or
 * statement mode lets two open clients reach one server session, so seeing
 * the token there proves one; not seeing it proves nothing (a pooler with
 * several server sessions may hand the probe another), and neither does a
 * probe that cannot connect within {@link PROBE_MS} (a session-mode pool
 * with no spare server connection, a connection limit): it is given up.
 * Where the client cannot try a connection safely ({@link Session.probes}:
 * postgres.js), there is no probe.
 * Statements that need the session's own server session check the token
 * afterwards, and so notice when they land on another, or when another
 * client marked theirs. Costs a connection: meant for a session whose
 * `direct` is not `true`.
 *
 * @returns The token, or `undefined` when the second session saw it.
 */
export async function markSession(
  session: Session,
  connect: PgConnect,
): Promise<string | undefined> {
  const token = crypto.randomUUID();
  await session.query(`select set_config('${MARK}', $1, false)`, [token]);
  if (!session.probes) return token;
  const limit = new AbortController();
  const cancel = unrefTimer(PROBE_MS, () => limit.abort(new Error("the probe took too long")));
  try {
    const probe = await openSession(connect, limit.signal);
    try {
      const [row] = await probe.query(
        `select current_setting('${MARK}', true) as mark`,
        [],
        limit.signal,
      );
      return row?.mark === token ? undefined : token;
    } finally {
      await probe.close();
    }
  } catch {
    // No second connection to be had: inconclusive, as an unseen mark.
    return token;
  } finally {
    cancel();
  }
}

/** How long {@link markSession}'s probe may take to connect and look. */
export const PROBE_MS = 1_000;

// Cancels whatever `pid` runs now, from a session of its own (pg has no
// public cancel request); best effort, never throws.
async function cancelBackend(connect: PgConnect, pid: number): Promise<void> {
  let other: Session | undefined;
  try {
    other = await openSession(connect);
    await other.query("select pg_cancel_backend($1::int4)", [pid]);
  } catch {
    // The statement then runs on until it ends by itself.
  } finally {
    await other?.close();
  }
}
