// Figure 6: memory and descriptors over many lock cycles and many
// put/claim pairs. Garbage is collected before each reading where the
// runtime allows it (main.ts passes the flags); the second half of the run
// must add nothing.
import { join } from "node:path";
import { FileStore } from "../filestore.ts";
import { Lock } from "../lock.ts";
import { collectGarbage, emit, full, openFds, rssMiB, sleep, tempDir } from "./_util.ts";

const FIGURE = "6 resources";
const cycles = full ? 100_000 : 20_000;

interface Reading {
  rss: number;
  fds: number;
}

async function reading(): Promise<Reading> {
  collectGarbage();
  await sleep(20);
  collectGarbage();
  return { rss: rssMiB(), fds: openFds() };
}

async function measure(name: string, step: () => Promise<void>): Promise<void> {
  for (let i = 0; i < 1000; i++) await step();
  const before = await reading();
  for (let i = 0; i < cycles / 2; i++) await step();
  const mid = await reading();
  for (let i = 0; i < cycles / 2; i++) await step();
  const after = await reading();
  const rssNote = `RSS ${before.rss.toFixed(1)} -> ${mid.rss.toFixed(1)} -> ${
    after.rss.toFixed(1)
  } MiB (start, half, end)`;
  emit({
    figure: FIGURE,
    case: `${name} x ${cycles}: RSS after`,
    unit: "MiB",
    value: after.rss,
    baselineName: "RSS before",
    baseline: before.rss,
    ratio: after.rss / before.rss,
    target: "flat: second half adds < 5 MiB",
    met: after.rss - mid.rss < 5,
    note: rssNote,
  });
  emit({
    figure: FIGURE,
    case: `${name} x ${cycles}: open fds after`,
    unit: "fds",
    value: after.fds,
    baselineName: "open fds before",
    baseline: before.fds,
    ratio: after.fds / before.fds,
    target: "flat: equal",
    met: after.fds === before.fds && mid.fds === before.fds,
  });
}

using dir = tempDir("resources");
const lock = new Lock(join(dir.path, "cycle.lock"));
await measure("Lock acquire()+release()", async () => {
  await lock.acquire();
  await lock.release();
});

const store = new FileStore(join(dir.path, "queue"));
await store.prepare();
const data = new Uint8Array(100);
await measure("put({ sync: false })+claim()+done()", async () => {
  await store.put(data, { sync: false });
  const claim = await store.claim();
  if (claim === null) throw new Error("claim() found nothing after a put()");
  await claim.done();
});
