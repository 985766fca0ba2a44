// A Bun or Node user's program, type-checked by `tsc` with only
// @types/node (tests/consumer/tsconfig.json): the package's types must not
// need Deno's, and a wrong argument must be a type error, not `any`.
import {
  AlreadyLocked,
  BoundedSemaphore,
  FileStore,
  lock,
  LockError,
  LockFile,
  LockFlags,
  type LockTarget,
  openAtomic,
  readLockFile,
} from "../../mod.ts";
import { open } from "node:fs/promises";

export async function main(dir: string): Promise<void> {
  const store = new FileStore(`${dir}/queue`);
  await store.prepare();
  const delivered: string = await store.put("hello");
  const claimed = await store.claim();
  if (claimed !== null) {
    const text: string = await claimed.text();
    console.log(delivered, claimed.path, text, claimed.deliveries);
    await claimed.done({ moveTo: "done" });
  }
  const { requeued, failed } = await store.recover();
  console.log(requeued.length, failed.length);

  const handle = await open(`${dir}/a.lock`, "a+");
  const target: LockTarget = handle;
  await lock(target, LockFlags.EXCLUSIVE);
  await lock(handle.fd, LockFlags.UNBLOCK);
  await handle.close();

  // @ts-expect-error: a path is not an open file
  await lock("not a file", LockFlags.EXCLUSIVE);

  const semaphore = new BoundedSemaphore(2, { directory: dir });
  try {
    await semaphore.acquire({ timeout: 0 });
  } catch (e) {
    if (e instanceof AlreadyLocked) console.log(e.pid, e.hostname);
  } finally {
    await semaphore.release();
  }

  try {
    const owner = new LockFile(`${dir}/app.lock`);
    owner.close();
  } catch (e) {
    if (e instanceof LockError) console.log(e.path, e.pid);
  }
  const info = readLockFile(`${dir}/app.lock`);
  console.log(info.locked);
  await openAtomic(`${dir}/config.json`, (file) => file.write("{}"));
}
