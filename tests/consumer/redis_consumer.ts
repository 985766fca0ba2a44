// A Node user's program with ./redis, type-checked by `tsc` with only
// @types/node and the clients' own types: node-redis and ioredis clients
// are accepted as they are, without a cast, and the lease's token is a bigint.
import {
  AlreadyLocked,
  ClaimLost,
  LockLost,
  type RedisClaim,
  RedisLock,
  RedisQueue,
  RedisSemaphore,
} from "../../redis.ts";
import { createClient } from "redis";
import { Redis } from "ioredis";

export async function main(url: string): Promise<void> {
  const nodeRedis = await createClient({ url }).connect();
  const ioredis = new Redis(url);
  await using lock = new RedisLock(nodeRedis, "consumer", { ttl: 5000, shared: false });
  const { token, signal }: { token: bigint; signal: AbortSignal } = await lock.acquire();
  signal.addEventListener("abort", () => {
    if (signal.reason instanceof LockLost) console.log(signal.reason.message);
  });
  const slots = new RedisSemaphore(ioredis, "consumer", 2, { timeout: 1000 });
  try {
    await slots.acquire({ failWhenLocked: true });
  } catch (e) {
    if (e instanceof AlreadyLocked) console.log(e.pid, e.hostname);
  }
  console.log(token + 1n, slots.maximum, lock.locked);
  // @ts-expect-error: a name is a string
  new RedisLock(ioredis, 42);
  await using queue = new RedisQueue(ioredis, "consumer", { ttl: 5000, maxDeliveries: 3 });
  const id: string = await queue.put(new Uint8Array([1, 2]));
  const claim: RedisClaim | null = await queue.claim({ timeout: 1000 });
  if (claim !== null) {
    const text: string = await claim.text();
    try {
      await claim.done();
    } catch (e) {
      if (e instanceof ClaimLost) console.log(e.message);
    }
    console.log(id, text, claim.deliveries);
  }
  const second: RedisClaim | null = await queue.claim();
  if (second !== null) {
    const third: RedisClaim | null = await second.doneAndClaim({ timeout: 1000 });
    await third?.release();
    // @ts-expect-error: doneAndClaim takes claim()'s options
    await second.doneAndClaim({ timeout: "1s" });
  }
  for await (const next of new RedisQueue(nodeRedis, "consumer").watch()) await next.release();
  // @ts-expect-error: a payload is text or bytes
  await queue.put(42);
}
