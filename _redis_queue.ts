// The Redis side of RedisQueue: its keys, the scripts that claim, renew,
// finish and hand back a message (each checks, in one step on the server,
// that the message is still this consumer's), and the payload's encoding.
//
// One stream per queue and one consumer group in it: XADD is "delivered to
// new", the group's pending list is `cur` (who has which message, idle since
// when, delivered how often), XACK + XDEL is done. A claim is a lease: its
// consumer resets the entry's idle time every third of `ttl`, and an entry
// idle for `ttl` is taken over by the next claim (XAUTOCLAIM).
import { Script } from "./_redis_scripts.ts";

/**
 * A message claimed from a `RedisQueue` is no longer this consumer's: the
 * reason its claim's `signal` aborts with, and the error of a `done()` or
 * `release()` that Redis refused. Its lease ended (the consumer was paused,
 * cut off or too slow to renew) and another consumer took it over, or it
 * is gone from the queue (finished by that other consumer, moved to the
 * dead-letter stream, lost by a Redis restart without persistence). The
 * message says which.
 *
 * @example Usage
 * ```ts
 * import { ClaimLost } from "@filestore/filestore/redis";
 * import assert from "node:assert/strict";
 *
 * const lost = new ClaimLost("Cannot finish message 1-0 of RedisQueue \"jobs\": taken over");
 * assert.ok(lost instanceof Error);
 * assert.equal(lost.name, "ClaimLost");
 * ```
 */
export class ClaimLost extends Error {
  /**
   * Makes the error.
   *
   * @param message What was refused, and why.
   * @param options The underlying error as `cause`.
   */
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "ClaimLost";
  }
}

/** The consumer group every RedisQueue of a stream reads in. */
export const GROUP = "filestore";

/** The keys of the queue `name`; the hash tag keeps them in one Cluster slot. */
export interface QueueKeys {
  readonly stream: string;
  readonly dead: string;
  /** Hash: message id -> "<server ms when claimed> <consumer>". */
  readonly since: string;
  readonly list: readonly [string, string, string];
}

/** The keys of the queue `name`. */
export function queueKeysOf(name: string): QueueKeys {
  const prefix = `filestore:queue:{${name}}:`;
  const stream = `${prefix}stream`;
  const dead = `${prefix}dead`;
  const since = `${prefix}since`;
  return { stream, dead, since, list: [stream, dead, since] };
}

// The idle time a released entry is given: far beyond any lease, so that
// the next claim takes it at once.
export const RELEASED_IDLE = "315360000000";

// Takes over an entry idle for ttl (moving one delivered maxDeliveries
// times to the dead-letter stream instead), else reads a new one. Replies
// {id, fields, deliveries, cursor}; id '' when none. (max 0: no limit.)
// With forget > 0, first removes from the group the other consumers that
// hold nothing and were last heard from more than forget ms ago: dead ones
// would stay named there for ever. That loses nothing (DELCONSUMER drops
// only what the consumer holds), and a live one is made again by its next
// read, also by a read it is blocked in now.
const TAKE_FUNCTION = `
local function take(stream, dead, since, group, me, ttl, max, cursor, forget)
  if forget > 0 then
    for _, c in ipairs(redis.call('XINFO', 'CONSUMERS', stream, group)) do
      local info = {}
      for i = 1, #c, 2 do info[c[i]] = c[i + 1] end
      if info['name'] ~= me and info['pending'] == 0 and info['idle'] > forget then
        redis.call('XGROUP', 'DELCONSUMER', stream, group, info['name'])
      end
    end
  end
  local t = redis.call('TIME')
  local stamp = (t[1] * 1000 + math.floor(t[2] / 1000)) .. ' ' .. me
  for _ = 1, 10 do
    local r = redis.call('XAUTOCLAIM', stream, group, me, ttl, cursor, 'COUNT', 1)
    cursor = r[1]
    local e = r[2][1]
    if e and not e[2] then
      redis.call('XACK', stream, group, e[1])
      redis.call('HDEL', since, e[1])
    elseif e then
      local n = redis.call('XPENDING', stream, group, e[1], e[1], 1)[1][4]
      if max > 0 and n > max then
        redis.call('XADD', dead, '*', 'id', e[1], 'deliveries', n - 1, unpack(e[2]))
        redis.call('XACK', stream, group, e[1])
        redis.call('XDEL', stream, e[1])
        redis.call('HDEL', since, e[1])
      else
        redis.call('HSET', since, e[1], stamp)
        return {e[1], e[2], n, cursor}
      end
    elseif cursor == '0-0' then
      break
    end
  end
  local r = redis.call('XREADGROUP', 'GROUP', group, me, 'COUNT', 1, 'STREAMS', stream, '>')
  if r then
    local e = r[1][2][1]
    redis.call('HSET', since, e[1], stamp)
    return {e[1], e[2], 1, cursor}
  end
  return {'', {}, 0, cursor}
end
`;

// KEYS: stream, dead, since. ARGV: group, consumer, ttl, maxDeliveries,
// cursor, forget. The next message for `consumer`.
const TAKE = `${TAKE_FUNCTION}
return take(KEYS[1], KEYS[2], KEYS[3], ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4]), ARGV[5],
  tonumber(ARGV[6]))
`;

// The owner check every script of one claimed message starts with: replies
// {0, owner, deliveries} (owner '' when the message is gone) unless `me`
// has it.
const OWNER = `
local stream, since = KEYS[1], KEYS[3]
local group, me, id = ARGV[1], ARGV[2], ARGV[3]
local p = redis.call('XPENDING', stream, group, id, id, 1)[1]
if p == nil then return {0, '', 0} end
if p[2] ~= me then return {0, p[2], p[4]} end
`;

// ARGV: group, consumer, id. Resets the entry's idle time (JUSTID: not a delivery).
const RENEW = `${OWNER}
redis.call('XCLAIM', stream, group, me, 0, id, 'JUSTID')
return {1}
`;

// ARGV: group, consumer, id. Done: the entry leaves the queue.
const DONE = `${OWNER}
redis.call('XACK', stream, group, id)
redis.call('XDEL', stream, id)
redis.call('HDEL', since, id)
return {1}
`;

// ARGV: group, consumer, id, ttl, maxDeliveries, cursor, forget. Done, then the
// next message, in one step: replies {1, id, fields, deliveries, cursor}
// (id '' when none), or the owner check's refusal, having taken nothing.
const DONE_TAKE = `${TAKE_FUNCTION}${OWNER}
redis.call('XACK', stream, group, id)
redis.call('XDEL', stream, id)
redis.call('HDEL', since, id)
local r = take(stream, KEYS[2], since, group, me, ARGV[4], tonumber(ARGV[5]), ARGV[6],
  tonumber(ARGV[7]))
return {1, r[1], r[2], r[3], r[4]}
`;

// ARGV: group, consumer, id, idle. Hands the entry back: idle far beyond
// any lease, so the next claim takes it over (counting a delivery).
const RELEASE = `${OWNER}
redis.call('XCLAIM', stream, group, me, 0, id, 'IDLE', ARGV[4], 'JUSTID')
redis.call('HDEL', since, id)
return {1}
`;

// ARGV: id, consumer. Notes when a blocking read claimed `id`.
const STAMP = `
local t = redis.call('TIME')
redis.call('HSET', KEYS[3], ARGV[1], (t[1] * 1000 + math.floor(t[2] / 1000)) .. ' ' .. ARGV[2])
return 1
`;

// ARGV: group, count. Replies {last-delivered-id, waiting, pending, claimed
// stamps, dead}: up to `count` new entries' ids, the pending entries as
// {id, consumer, idle, deliveries}, their claim stamps, and the dead-letter
// stream's length.
const LIST = `
local stream, dead, since = KEYS[1], KEYS[2], KEYS[3]
local group, count = ARGV[1], ARGV[2]
local last = '0-0'
for _, g in ipairs(redis.call('XINFO', 'GROUPS', stream)) do
  local info = {}
  for i = 1, #g, 2 do info[g[i]] = g[i + 1] end
  if info['name'] == group then last = info['last-delivered-id'] end
end
local waiting = {}
for _, e in ipairs(redis.call('XRANGE', stream, '(' .. last, '+', 'COUNT', count)) do
  waiting[#waiting + 1] = e[1]
end
local pending = redis.call('XPENDING', stream, group, 'IDLE', 0, '-', '+', count)
local stamps = {}
for i, p in ipairs(pending) do stamps[i] = redis.call('HGET', since, p[1]) or '' end
return {waiting, pending, stamps, redis.call('XLEN', dead)}
`;

// ARGV: group, consumer. Removes the consumer from the group if it holds
// nothing (DELCONSUMER would drop what it holds from the pending list).
const FORGET = `
local n = redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', 1, ARGV[2])
if #n == 0 then redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2]) end
return #n
`;

/** The queue's scripts. */
export const queueScripts = {
  take: new Script(TAKE),
  renew: new Script(RENEW),
  done: new Script(DONE),
  doneTake: new Script(DONE_TAKE),
  release: new Script(RELEASE),
  stamp: new Script(STAMP),
  list: new Script(LIST),
  forget: new Script(FORGET),
};

/** Whether `error` is Redis's reply for a stream or group that does not exist. */
export function isNoGroup(error: unknown): boolean {
  return error instanceof Error && /NOGROUP|no such key/i.test(error.message);
}

// ---------------------------------------------------------------------------
// Payloads. Replies reach the package decoded as text (see _redis_client.ts),
// so bytes travel as base64 in a field of their own ("b"); text as it is ("s").

const encoder = new TextEncoder();
const decoder = new TextDecoder();

function toBase64(bytes: Uint8Array): string {
  let binary = "";
  for (let i = 0; i < bytes.length; i += 0x8000) {
    binary += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  }
  return btoa(binary);
}

function fromBase64(text: string): Uint8Array {
  const binary = atob(text);
  const bytes = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
  return bytes;
}

/**
 * Whether the payload is larger than `max` bytes (UTF-8 for text), without
 * encoding a string that is plainly within or beyond it.
 */
export function tooLarge(data: string | Uint8Array, max: number): number | undefined {
  if (typeof data !== "string") return data.length > max ? data.length : undefined;
  if (data.length * 3 <= max) return undefined;
  if (data.length > max) return data.length;
  const size = encoder.encode(data).length;
  return size > max ? size : undefined;
}

/** The stream entry's fields for `data`. */
export function fieldsOf(data: string | Uint8Array): string[] {
  return typeof data === "string" ? ["s", data] : ["b", toBase64(data)];
}

/** A message's payload, as it was put. */
export interface Payload {
  readonly text?: string;
  readonly bytes?: Uint8Array;
}

/** Reads the payload back from an entry's fields [k, v, ...]. */
export function payloadOf(fields: unknown): Payload {
  const list = Array.isArray(fields) ? fields.map(String) : [];
  for (let i = 0; i + 1 < list.length; i += 2) {
    if (list[i] === "s") return { text: list[i + 1]! };
    if (list[i] === "b") return { bytes: fromBase64(list[i + 1]!) };
  }
  return { text: "" };
}

/** The payload as bytes. */
export function bytesOf(p: Payload): Uint8Array {
  return p.bytes ?? encoder.encode(p.text ?? "");
}

/** The payload as text. */
export function textOf(p: Payload): string {
  return p.text ?? decoder.decode(p.bytes);
}

/**
 * The entry of a blocking XREADGROUP's reply, [id, fields], or undefined:
 * node-redis gives [[stream, [[id, fields]]]], ioredis (one stream)
 * [stream, [[id, fields]]], and RESP3 clients (Bun's) a map.
 */
export function entryOfRead(reply: unknown): [string, unknown] | undefined {
  if (reply === null || reply === undefined || typeof reply !== "object") return undefined;
  let entries: unknown;
  if (reply instanceof Map) entries = [...reply.values()][0];
  else if (!Array.isArray(reply)) entries = Object.values(reply as Record<string, unknown>)[0];
  else if (typeof reply[0] === "string") entries = reply[1];
  else entries = Array.isArray(reply[0]) ? reply[0][1] : undefined;
  if (!Array.isArray(entries) || !Array.isArray(entries[0])) return undefined;
  const [id, fields] = entries[0] as [unknown, unknown];
  return [String(id), fields];
}
