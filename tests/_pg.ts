// A throwaway PostgreSQL server for the tests and benchmarks of postgres.ts:
// initdb in a temporary directory (as the unprivileged user `postgres` when
// run as root, which PostgreSQL refuses to run as), started on a free
// loopback port, stopped and removed afterwards. DATABASE_URL points
// everything at another server instead; without either, pgSkip says why.
import { execFileSync, spawnSync } from "node:child_process";
import {
  chmodSync,
  chownSync,
  existsSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { createServer } from "node:net";
import { tmpdir, userInfo } from "node:os";
import { join } from "node:path";
import process from "node:process";
import { runtimeName } from "../_runtime.ts";

/** A server the tests may use. */
export interface PgServer extends AsyncDisposable {
  /** `postgres://user@127.0.0.1:port/db`. */
  readonly url: string;
  /** Whether this harness started it (and so may stop and restart it). */
  readonly own: boolean;
  /** Its port, when this harness started it. */
  readonly port?: number;
  /** Stops the server at once (like a crash) and starts it again on the same port. */
  restart(): void;
  /** Stops it and removes its directory (nothing for a DATABASE_URL server). */
  stop(): void;
}

function binDir(): string | undefined {
  const base = "/usr/lib/postgresql";
  if (!existsSync(base)) return undefined;
  const versions = readdirSync(base).filter((v) => existsSync(join(base, v, "bin", "initdb")))
    .sort((a, b) => Number(b) - Number(a));
  return versions.length > 0 ? join(base, versions[0]!, "bin") : undefined;
}

const BIN = process.env.DATABASE_URL ? undefined : binDir();
const ROOT = userInfo().uid === 0;
const HAS_USER = !ROOT ||
  spawnSync("id", ["-u", "postgres"], { stdio: "ignore" }).status === 0;

/**
 * Why the PostgreSQL tests cannot run here, or `false` when they can: the
 * `skip` option of their `describe`.
 */
export const pgSkip: string | false = process.env.DATABASE_URL
  ? false
  : BIN === undefined
  ? "no PostgreSQL server: install Debian's postgresql (scripts/setup.sh as root) or set DATABASE_URL"
  : !HAS_USER
  ? "no user 'postgres' to run a throwaway PostgreSQL server as"
  : false;

/** A free TCP port on the loopback interface. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.on("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolve(port));
    });
  });
}

// runuser is in /usr/sbin, which a minimal PATH (CI: /usr/bin:/bin) leaves out.
const RUNUSER = ["/usr/sbin/runuser", "/sbin/runuser", "/usr/bin/runuser", "/bin/runuser"]
  .find((p) => existsSync(p)) ?? "runuser";

// Runs a server program as the unprivileged user.
function asUser(program: string, args: string[]): void {
  const [bin, argv] = ROOT
    ? [RUNUSER, ["-u", "postgres", "--", join(BIN!, program), ...args]]
    : [join(BIN!, program), args];
  execFileSync(bin, argv, { stdio: ["ignore", "ignore", "pipe"], cwd: tmpdir() });
}

/** Starts a throwaway server (or wraps DATABASE_URL); check {@link pgSkip} first. */
export async function startPg(): Promise<PgServer> {
  const external = process.env.DATABASE_URL;
  if (external) {
    return {
      url: external,
      own: false,
      restart() {
        throw new Error("Cannot restart the server of DATABASE_URL");
      },
      stop() {},
      [Symbol.asyncDispose]: () => Promise.resolve(),
    };
  }
  removeAbandoned();
  const dir = mkdtempSync(join(tmpdir(), "filestore-pg-"));
  writeFileSync(join(dir, "owner"), `${process.pid}`);
  const data = join(dir, "data");
  const log = join(dir, "log");
  const port = await freePort();
  if (ROOT) {
    const { uid, gid } = userIdOf("postgres");
    chownSync(dir, uid, gid);
  }
  chmodSync(dir, 0o700);
  const startArgs = [
    "-D",
    data,
    "-l",
    log,
    "-w",
    "-o",
    `-p ${port} -k ${dir} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200`,
    "start",
  ];
  let running = false;
  const stop = () => {
    if (running) {
      running = false;
      try {
        asUser("pg_ctl", ["-D", data, "-m", "immediate", "-w", "stop"]);
      } catch { /* already gone */ }
    }
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    asUser("initdb", [
      "-D",
      data,
      "-U",
      "postgres",
      "-A",
      "trust",
      "--no-sync",
      "-E",
      "UTF8",
      "--locale=C",
    ]);
    asUser("pg_ctl", startArgs);
    running = true;
  } catch (e) {
    stop();
    throw e;
  }
  return {
    url: `postgres://postgres@127.0.0.1:${port}/postgres`,
    own: true,
    port,
    restart() {
      asUser("pg_ctl", ["-D", data, "-m", "immediate", "-w", "stop"]);
      asUser("pg_ctl", startArgs);
    },
    stop,
    [Symbol.asyncDispose]() {
      stop();
      return Promise.resolve();
    },
  };
}

// Stops and removes the servers of test processes that were killed before
// they could stop them (their "owner" pid is gone).
function removeAbandoned(): void {
  for (const name of readdirSync(tmpdir())) {
    if (!name.startsWith("filestore-pg-")) continue;
    const dir = join(tmpdir(), name);
    let owner: number;
    try {
      owner = Number(readFileSync(join(dir, "owner"), "utf8"));
    } catch {
      continue;
    }
    try {
      process.kill(owner, 0);
      continue;
    } catch { /* gone */ }
    try {
      asUser("pg_ctl", ["-D", join(dir, "data"), "-m", "immediate", "-w", "stop"]);
    } catch { /* not running */ }
    rmSync(dir, { recursive: true, force: true });
  }
}

function userIdOf(name: string): { uid: number; gid: number } {
  const uid = Number(execFileSync("id", ["-u", name], { encoding: "utf8" }).trim());
  const gid = Number(execFileSync("id", ["-g", name], { encoding: "utf8" }).trim());
  return { uid, gid };
}

/** The clients a test can use on this runtime: postgres.js and pg everywhere, Bun's SQL on Bun. */
export const CLIENTS: readonly string[] = runtimeName === "bun"
  ? ["postgresjs", "pg", "bun"]
  : ["postgresjs", "pg"];

/**
 * A `connect` function for PgLock and PgQueue with the client `kind`. With
 * `pooled` (a URL of {@link startBouncer}'s), Bun's SQL prepares no named
 * statements: PgBouncer 1.18 in transaction mode does not keep them.
 */
export async function connectorOf(
  kind: string,
  url: string,
  pooled = false,
): Promise<() => object> {
  if (kind === "postgresjs") {
    const { default: postgres } = await import("postgres");
    return () => postgres(url, { max: 1, onnotice: () => {} });
  }
  if (kind === "pg") {
    const { default: pg } = await import("pg");
    return () => new pg.Client(url);
  }
  if (kind === "bun") {
    const { SQL } = await import("bun" as string);
    return () => new SQL(url, { max: 1, ...(pooled ? { prepare: false } : {}) });
  }
  throw new Error(`unknown client ${kind}`);
}

const PGBOUNCER = ["/usr/sbin/pgbouncer", "/usr/bin/pgbouncer"].find((p) => existsSync(p));

/** Why a PgBouncer test cannot run here, or `false`. */
export const bouncerSkip: string | false = pgSkip
  ? pgSkip
  : process.env.DATABASE_URL
  ? "DATABASE_URL: no PgBouncer is started in front of another server"
  : PGBOUNCER === undefined
  ? "no pgbouncer: install Debian's pgbouncer (scripts/setup.sh as root)"
  : false;

/**
 * A PgBouncer in transaction mode in front of `server`, on a free port, with
 * one server connection (unless `settings` say otherwise: more lines of its
 * `[pgbouncer]` section); check {@link bouncerSkip}.
 */
export async function startBouncer(
  server: PgServer,
  settings: Record<string, string> = {},
): Promise<{ url: string; stop(): Promise<void> }> {
  const dir = mkdtempSync(join(tmpdir(), "filestore-pgbouncer-"));
  const port = await freePort();
  writeFileSync(join(dir, "users.txt"), '"postgres" ""\n');
  writeFileSync(
    join(dir, "pgbouncer.ini"),
    [
      "[databases]",
      `postgres = host=127.0.0.1 port=${server.port} dbname=postgres user=postgres`,
      "[pgbouncer]",
      "listen_addr = 127.0.0.1",
      `listen_port = ${port}`,
      "unix_socket_dir =",
      "auth_type = trust",
      `auth_file = ${join(dir, "users.txt")}`,
      "pool_mode = transaction",
      "default_pool_size = 1",
      `logfile = ${join(dir, "log")}`,
      `pidfile = ${join(dir, "pid")}`,
      ...Object.entries(settings).map(([name, value]) => `${name} = ${value}`),
      "",
    ].join("\n"),
  );
  if (ROOT) {
    const { uid, gid } = userIdOf("postgres");
    chownSync(dir, uid, gid);
    for (const f of ["users.txt", "pgbouncer.ini"]) chownSync(join(dir, f), uid, gid);
  }
  const [bin, argv] = ROOT
    ? [RUNUSER, ["-u", "postgres", "--", PGBOUNCER!, "-d", join(dir, "pgbouncer.ini")]]
    : [PGBOUNCER!, ["-d", join(dir, "pgbouncer.ini")]];
  execFileSync(bin, argv, { stdio: ["ignore", "ignore", "pipe"], cwd: tmpdir() });
  // -d returns once it forked; wait for the pid file and the port.
  for (let i = 0; i < 500 && !existsSync(join(dir, "pid")); i++) {
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  return {
    url: `postgres://postgres@127.0.0.1:${port}/postgres`,
    async stop() {
      try {
        const pid = Number(readFileSync(join(dir, "pid"), "utf8"));
        process.kill(pid, "SIGTERM");
        // Removed only once it is gone: it writes its log until it exits.
        for (let i = 0; i < 500; i++) {
          process.kill(pid, 0);
          await new Promise((resolve) => setTimeout(resolve, 10));
        }
      } catch { /* gone */ }
      rmSync(dir, { recursive: true, force: true, maxRetries: 5 });
    },
  };
}
