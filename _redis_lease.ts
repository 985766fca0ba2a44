// What RedisLock and RedisSemaphore share: the acquire loop (try, then
// block on a wake-up list until a release or the end of the lease in the
// way), the lease kept alive in the background, and the connections that
// waits block on.
import { randomHex } from "./_check.ts";
import type { Connection } from "./_redis_client.ts";
import { type Keys, scripts } from "./_redis_scripts.ts";
import { after, deadline, unrefTimer, untilAbort, type WaitRules } from "./_wait.ts";
import { LockException } from "./errors.ts";

/**
 * A lock from `./redis` is no longer certainly held: the reason a lease's
 * `signal` aborts with. Its message says why (a renewal was refused, or
 * none was confirmed within the lease). Stop writing under the lock.
 *
 * @example Usage
 * ```ts
 * import { LockLost } from "@filestore/filestore/redis";
 * import { LockException } from "@filestore/filestore/errors";
 * import assert from "node:assert/strict";
 *
 * const controller = new AbortController();
 * controller.abort(new LockLost("Lost RedisLock \"jobs\" (token 7): its lease ended"));
 * assert.throws(() => controller.signal.throwIfAborted(), LockLost);
 * assert.ok(controller.signal.reason instanceof LockException);
 * ```
 */
export class LockLost extends LockException {}

// ---------------------------------------------------------------------------
// Blocking connections: BLPOP holds a connection until it returns, so a wait
// runs on a duplicate of the user's client. Idle duplicates are kept for a
// second for the next wait, then closed.

const IDLE_MS = 1000;

export interface Blocker {
  conn: Connection;
  id: string;
  // Settles once the connection is free for another BLPOP.
  busy: Promise<unknown> | undefined;
  broken: boolean;
}

export class Pool {
  #base: Connection;
  #idle: { blocker: Blocker; cancel: () => void }[] = [];

  constructor(base: Connection) {
    this.#base = base;
  }

  async take(): Promise<Blocker> {
    const entry = this.#idle.pop();
    if (entry !== undefined) {
      entry.cancel();
      return entry.blocker;
    }
    const conn = await this.#base.duplicate();
    try {
      const id = String(await conn.send("CLIENT", ["ID"]));
      return { conn, id, busy: undefined, broken: false };
    } catch (e) {
      await conn.close();
      throw e;
    }
  }

  give(blocker: Blocker): void {
    if (blocker.broken) {
      void blocker.conn.close();
      return;
    }
    if (blocker.busy !== undefined) {
      // An unblocked BLPOP still on its way back: the connection is free
      // once it returns.
      void blocker.busy.then(() => {
        blocker.busy = undefined;
        this.give(blocker);
      });
      return;
    }
    const entry = {
      blocker,
      cancel: after(IDLE_MS, () => {
        const at = this.#idle.indexOf(entry);
        if (at >= 0) this.#idle.splice(at, 1);
        void blocker.conn.close();
      }),
    };
    this.#idle.push(entry);
  }

  /**
   * Blocks on the lists `keys` until something is pushed to one, `ms` pass
   * or `signal` aborts (rejecting with its reason); resolves to BLPOP's
   * reply ([key, element], or null). Redis checks the timeouts of blocked
   * clients only about every 100 ms (hz 10), so the time is kept here, and
   * the BLPOP ended with CLIENT UNBLOCK; its own timeout is a safety net for
   * when that cannot be sent. A reply that comes after the signal aborted
   * goes to `late`.
   */
  block(
    blocker: Blocker,
    keys: readonly string[],
    ms: number,
    signal: AbortSignal | undefined,
    late: (reply: unknown) => void,
  ): Promise<unknown> {
    const seconds = ((Math.min(ms, 2 ** 31) + 1000) / 1000).toFixed(3);
    return this.blockOn(blocker, "BLPOP", [...keys, seconds], ms, signal, late);
  }

  /**
   * Sends the blocking `command` (BLPOP, XREADGROUP ... BLOCK) whose own
   * timeout is a little longer than `ms`, and ends it with CLIENT UNBLOCK
   * after `ms` or when `signal` aborts; see {@link Pool.prototype.block}.
   */
  async blockOn(
    blocker: Blocker,
    command: string,
    args: readonly string[],
    ms: number,
    signal: AbortSignal | undefined,
    late: (reply: unknown) => void,
  ): Promise<unknown> {
    const reply = blocker.conn.send(command, args);
    // Redis answers CLIENT UNBLOCK with 0 when that connection is not
    // blocked: it was lost and made again under another id (some clients
    // then send the BLPOP again, or never fail it). The connection is then
    // dropped and the wait goes on without it; should the old BLPOP still
    // be handed a lock, `late` lets go of it.
    let lost!: (value: null) => void;
    const gone = new Promise<null>((resolve) => lost = resolve);
    let answered = false;
    blocker.busy = Promise.race([
      reply.then(() => answered = true, () => {
        answered = true;
        blocker.broken = true;
      }),
      gone,
    ]);
    const unblock = () => {
      this.#base.send("CLIENT", ["UNBLOCK", blocker.id]).then((count) => {
        if (Number(count) !== 0 || answered) return;
        blocker.broken = true;
        reply.then(late, () => {});
        lost(null);
      }, () => {});
    };
    const cancel = after(ms, unblock);
    signal?.addEventListener("abort", unblock, { once: true });
    try {
      const answer = await untilAbort(Promise.race([reply, gone]), signal);
      if (!blocker.broken) blocker.busy = undefined;
      return answer;
    } catch (e) {
      if (signal?.aborted && e === signal.reason) {
        reply.then(late, () => {});
        throw e;
      }
      // The connection failed (killed, server restarted): drop it; the
      // caller tries again on a new one.
      blocker.broken = true;
      return null;
    } finally {
      cancel();
      signal?.removeEventListener("abort", unblock);
    }
  }
}

const pools = new WeakMap<object, Pool>();

/** The pool of blocking connections of the user's client `client`. */
export function poolOf(client: object, base: Connection): Pool {
  let pool = pools.get(client);
  if (pool === undefined) pools.set(client, pool = new Pool(base));
  return pool;
}

// ---------------------------------------------------------------------------
// Acquiring.

/** What one acquire asks for. */
export interface Claim {
  readonly conn: Connection;
  readonly pool: Pool;
  readonly keys: Keys;
  /** "x" exclusive, "s" shared, "n" one of `max` semaphore slots. */
  readonly mode: "x" | "s" | "n";
  readonly max: number;
  readonly ttl: number;
  /** The holder's description stored with the lease (JSON). */
  readonly who: string;
}

/** Who holds what is in the way, from the info the holder stored. */
export interface Holder {
  pid?: number | undefined;
  hostname?: string | undefined;
  /** When it took the lock, server ms since the epoch. */
  since?: number | undefined;
}

/** Parses "<mode> <since> <JSON>" as the scripts store it. */
export function holderOf(info: string): Holder {
  const match = /^[xsn] (\d+) (.*)$/s.exec(info);
  if (match === null) return {};
  try {
    const { pid, hostname } = JSON.parse(match[2]!) as Record<string, unknown>;
    return {
      pid: typeof pid === "number" ? pid : undefined,
      hostname: typeof hostname === "string" ? hostname : undefined,
      since: Number(match[1]),
    };
  } catch {
    return { since: Number(match[1]) };
  }
}

/**
 * A lease just granted: its token, a local time no later than when the
 * lease started on the server (when the request that got it was sent), and
 * the length of that first lease.
 */
export interface Grant {
  token: string;
  sentAt: number;
  ttl: number;
  /** Handed over by a release: renew at once (which also names the new holder). */
  handedOver: boolean;
}

type Reply = [1, string] | [0, number, string, number];

/** A lock handed over through the baton list: "TOKEN MINTED TTL". */
function batonOf(reply: unknown, batonKey: string): [string, number, number] | undefined {
  if (!Array.isArray(reply) || reply[0] !== batonKey) return undefined;
  const match = /^(\d+) (\d+) (\d+)$/.exec(String(reply[1]));
  if (match === null) return undefined;
  return [match[1]!, Number(match[2]), Number(match[3])];
}

function attempt(claim: Claim, waiter: string, registered: boolean): Promise<Reply> {
  const { mode, max, ttl, who, keys } = claim;
  return scripts.acquire.run(
    claim.conn,
    keys,
    [mode, String(max), String(ttl), who, waiter, keys.prefix, registered ? "1" : "0"],
  ) as Promise<Reply>;
}

/** Ends a lease if it is ours; resolves to whether it was. */
export async function releaseToken(claim: Claim, token: string): Promise<boolean> {
  const handOver = claim.mode === "n" ? "0" : "1";
  const args = [token, claim.keys.prefix, String(claim.ttl), handOver];
  return await scripts.release.run(claim.conn, claim.keys, args) === 1;
}

/**
 * Acquires under `rules`: resolves with the grant, or rejects with
 * `refuse(holder, waited)` (refused, or the timeout ran out) or the
 * signal's reason.
 */
export async function acquireLease(
  claim: Claim,
  rules: WaitRules,
  refuse: (holder: Holder, waited?: number) => Error,
): Promise<Grant> {
  const start = performance.now();
  const waits = !rules.failWhenLocked && rules.timeout !== 0;
  const waiter = waits ? `${claim.mode}:${randomHex(8)}` : "";
  const batonKey = `${claim.keys.prefix}baton`;
  const lists = claim.mode === "x"
    ? [`${claim.keys.prefix}wake:${waiter}`, batonKey]
    : [`${claim.keys.prefix}wake:${waiter}`];
  // A lock handed over after this acquire gave up is let go at once.
  const late = (reply: unknown) => {
    const baton = batonOf(reply, batonKey);
    if (baton !== undefined) releaseToken(claim, baton[0]).catch(() => {});
  };
  const limit = deadline(rules.timeout, rules.signal);
  let blocker: Blocker | undefined;
  let holder: Holder = {};
  let registered = false;
  // A wait rides out connection trouble (a restart, a failover, a killed
  // connection, while the client reconnects), trying again with a growing
  // pause, for up to one lease; then the error is thrown. A single try
  // throws it at once.
  let troubleSince: number | undefined;
  let pauseMs = 25;
  const ridden = async (e: unknown): Promise<void> => {
    if (limit.signal?.aborted && e === limit.signal.reason) {
      if (limit.timedOut) throw refuse(holder, rules.timeout);
      throw e;
    }
    troubleSince ??= performance.now();
    if (!waits || performance.now() - troubleSince >= claim.ttl) throw e;
    try {
      await pause(pauseMs, limit.signal);
    } catch (reason) {
      if (limit.timedOut) throw refuse(holder, rules.timeout);
      throw reason;
    }
    pauseMs = Math.min(pauseMs * 2, 1000);
  };
  try {
    for (;;) {
      const sentAt = performance.now();
      const pending = attempt(claim, waiter, registered);
      let reply: Reply;
      try {
        // A single try waits for its answer, whatever the timeout.
        reply = await untilAbort(pending, waits ? limit.signal : rules.signal);
      } catch (e) {
        if (limit.signal?.aborted && e === limit.signal.reason) {
          // Given up while the attempt was on its way: should it still be
          // granted, the lease is let go at once rather than left to lapse.
          void pending.then(
            (late) => late[0] === 1 && releaseToken(claim, late[1]),
          ).catch(() => {});
        }
        await ridden(e);
        continue;
      }
      troubleSince = undefined;
      pauseMs = 25;
      if (reply[0] === 1) {
        registered = false;
        return { token: String(reply[1]), sentAt, ttl: claim.ttl, handedOver: false };
      }
      registered = waits;
      holder = holderOf(String(reply[2]));
      const waited = performance.now() - start;
      if (!waits) throw refuse(holder);
      if (waited >= rules.timeout) throw refuse(holder, rules.timeout);
      // Until a release pushes to the list, or the lease in the way ends
      // (a holder that died is noticed then), or the timeout; and at least
      // once a lease of its own, in case Redis lost the registration (a
      // restart or failover that the connection survived).
      const ms = Math.min(Number(reply[1]) + 1, rules.timeout - waited, claim.ttl);
      if (blocker === undefined) {
        const taking = claim.pool.take();
        try {
          blocker = await untilAbort(taking, limit.signal);
        } catch (e) {
          // Given up while the connection was being made: it goes to the
          // pool (and is closed there) once it is.
          taking.then((b) => claim.pool.give(b), () => {});
          await ridden(e);
          continue;
        }
      }
      let woken: unknown;
      try {
        woken = await claim.pool.block(blocker, lists, ms, limit.signal, late);
      } catch (e) {
        if (limit.timedOut && e === limit.signal?.reason) throw refuse(holder, rules.timeout);
        throw e;
      }
      const baton = batonOf(woken, batonKey);
      if (baton !== undefined) {
        // Minted at server time baton[1]; the refusal was computed at
        // server time reply[3], after `sentAt` here: so the lease began no
        // earlier than this, on the local clock.
        const [token, minted, ttl] = baton;
        return { token, sentAt: sentAt + (minted - Number(reply[3])), ttl, handedOver: true };
      }
      if (blocker.broken) {
        claim.pool.give(blocker);
        blocker = undefined;
      }
    }
  } finally {
    limit[Symbol.dispose]();
    if (blocker !== undefined) claim.pool.give(blocker);
    if (registered) {
      scripts.leave.run(claim.conn, claim.keys, [waiter, claim.keys.prefix]).catch(() => {});
    }
  }
}

/** Resolves after `ms`, or rejects with `signal`'s reason when it aborts first. */
function pause(ms: number, signal: AbortSignal | undefined): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const onAbort = () => {
      clearTimeout(id);
      reject(signal!.reason);
    };
    const id = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}

// ---------------------------------------------------------------------------
// Holding: renewal in the background, and the signal that says when the
// lease can no longer be relied on.

/** The share of the lease after which it is renewed. */
const RENEW_AT = 1 / 3;
/** After a renewal that failed (no answer, an error), the next try, as a share of the lease. */
const RETRY_AT = 1 / 10;

/** A held lease, kept alive until released or lost. */
export class Keeper {
  readonly token: bigint;
  readonly tokenText: string;
  readonly #controller = new AbortController();
  readonly #claim: Claim;
  readonly #describe: string;
  #confirmedSentAt: number;
  // The length of the lease last confirmed (a handed-over one has the
  // releaser's).
  #leaseTtl: number;
  #cancelRenew: (() => void) | undefined;
  #cancelExpiry: (() => void) | undefined;
  #done = false;

  constructor(claim: Claim, grant: Grant, describe: string) {
    this.#claim = claim;
    this.tokenText = grant.token;
    this.token = BigInt(grant.token);
    this.#describe = describe;
    this.#confirmedSentAt = grant.sentAt;
    this.#leaseTtl = grant.ttl;
    this.#armExpiry();
    this.#scheduleRenew(grant.handedOver ? 0 : claim.ttl * RENEW_AT);
  }

  get signal(): AbortSignal {
    return this.#controller.signal;
  }

  /** Held and not lost. */
  get held(): boolean {
    return !this.#done;
  }

  // The lease ended on the server no earlier than `ttl` after the request
  // that started or last renewed it was sent (the server's clock ran from
  // receipt); a small margin covers clocks that run at slightly different
  // rates and a late timer.
  #limit(): number {
    const ttl = this.#leaseTtl;
    return this.#confirmedSentAt + ttl - ttl / 50 - 1;
  }

  #armExpiry(): void {
    this.#cancelExpiry?.();
    this.#cancelExpiry = unrefTimer(Math.max(0, this.#limit() - performance.now()), () => {
      this.#lose(`no renewal was confirmed within its lease of ${this.#leaseTtl} ms`);
    });
  }

  #scheduleRenew(ms: number): void {
    this.#cancelRenew?.();
    this.#cancelRenew = unrefTimer(ms, () => void this.#renew());
  }

  async #renew(): Promise<void> {
    if (this.#done) return;
    const sentAt = performance.now();
    if (sentAt >= this.#limit()) {
      this.#lose(`no renewal was confirmed within its lease of ${this.#leaseTtl} ms`);
      return;
    }
    const { conn, keys, ttl, who } = this.#claim;
    let ours: boolean;
    try {
      ours = await scripts.renew.run(conn, keys, [this.tokenText, String(ttl), who]) === 1;
    } catch {
      if (!this.#done) this.#scheduleRenew(ttl * RETRY_AT);
      return;
    }
    if (this.#done) return;
    if (!ours) {
      this.#lose("its lease ended or Redis lost it, and another holder may have it now");
      return;
    }
    this.#confirmedSentAt = sentAt;
    this.#leaseTtl = ttl;
    this.#armExpiry();
    this.#scheduleRenew(Math.max(0, sentAt + ttl * RENEW_AT - performance.now()));
  }

  #stop(): void {
    this.#done = true;
    this.#cancelRenew?.();
    this.#cancelExpiry?.();
  }

  // Lost for good: nothing brings it back, whatever a reconnecting client
  // later delivers. The lease is ended on the server too, if it still runs
  // there, so that the next holder need not wait for it to lapse.
  #lose(why: string): void {
    if (this.#done) return;
    this.#stop();
    this.#controller.abort(new LockLost(`Lost ${this.#describe} (token ${this.token}): ${why}`));
    releaseToken(this.#claim, this.tokenText).catch(() => {});
  }

  /** Ends the lease; resolves to whether it was still ours on the server. */
  async release(): Promise<boolean> {
    const wasHeld = !this.#done;
    this.#stop();
    const ours = await releaseToken(this.#claim, this.tokenText);
    return wasHeld && ours;
  }
}

// unrefTimer lives with the other waiting helpers; redis.ts imports it from here.
export { unrefTimer };
