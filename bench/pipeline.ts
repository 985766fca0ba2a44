// Figure 4: the FileStore pipeline. Per message: create in tmp, write 100
// bytes, close, move to new, move to cur, through the store's Sync and
// async API and through plain node:fs, taking turns round by round. Then
// put + claim end to end with 1, 2 and 4 consumer processes.
import * as fs from "node:fs";
import { join } from "node:path";
import process from "node:process";
import { FileStore } from "../filestore.ts";
import { type Case, interleave } from "./_stats.ts";
import {
  args,
  type Child,
  compared,
  emit,
  full,
  sleep,
  startChild,
  stdinLines,
  tempDir,
  wallMs,
} from "./_util.ts";

const FIGURE = "4 pipeline";
const DATA = new Uint8Array(100).fill(42);
const FS_SYNC = "node:fs Sync: open+write+close+rename x2";
const FS_PROMISES = "node:fs promises: open+write+close+rename x2";

async function consumer(root: string): Promise<void> {
  const next = stdinLines();
  const store = new FileStore(root);
  const done = join(root, "done");
  console.log("ready");
  await next();
  let count = 0;
  for (;;) {
    const claim = await store.claim();
    if (claim) {
      await claim.done();
      count++;
      continue;
    }
    if (fs.existsSync(done)) {
      // Everything was put before `done` appeared: one more full look.
      const last = await store.claim({ rescan: true });
      if (last) {
        await last.done();
        count++;
        continue;
      }
      break;
    }
    await sleep(1);
  }
  console.log(`${count} ${wallMs()}`);
  process.exit(0);
}

function storeIn(dir: string, name: string): FileStore {
  const store = new FileStore(join(dir, name));
  store.prepareSync();
  return store;
}

async function steps(dir: string): Promise<void> {
  let seq = 0;
  const sync = storeIn(dir, "sync");
  const async = storeIn(dir, "async");
  const plain = (name: string) => {
    const root = storeIn(dir, name).path;
    return (area: string, file: string) => `${root}/${area}/${file}`;
  };
  const fsSync = plain("fs-sync");
  const fsAsync = plain("fs-async");
  const cases: Case[] = [
    {
      name: FS_SYNC,
      run(n) {
        for (let i = 0; i < n; i++) {
          const name = `m${seq++}`;
          const fd = fs.openSync(fsSync("tmp", name), "w+", 0o666);
          fs.writeSync(fd, DATA);
          fs.closeSync(fd);
          fs.renameSync(fsSync("tmp", name), fsSync("new", name));
          fs.renameSync(fsSync("new", name), fsSync("cur", name));
        }
      },
    },
    {
      name: "FileStore Sync: createSync+writeSync+closeSync+moveSync x2",
      run(n) {
        for (let i = 0; i < n; i++) {
          const name = `m${seq++}`;
          const file = sync.createSync(name);
          file.writeSync(DATA);
          file.closeSync();
          sync.moveSync(name, "tmp", "new");
          sync.moveSync(name, "new", "cur");
        }
      },
    },
    {
      name: FS_PROMISES,
      async run(n) {
        for (let i = 0; i < n; i++) {
          const name = `m${seq++}`;
          const handle = await fs.promises.open(fsAsync("tmp", name), "w+", 0o666);
          await handle.write(DATA);
          await handle.close();
          await fs.promises.rename(fsAsync("tmp", name), fsAsync("new", name));
          await fs.promises.rename(fsAsync("new", name), fsAsync("cur", name));
        }
      },
    },
    {
      name: "FileStore async: create+write+close+move x2",
      async run(n) {
        for (let i = 0; i < n; i++) {
          const name = `m${seq++}`;
          const file = await async.create(name);
          await file.write(DATA);
          await file.close();
          await async.move(name, "tmp", "new");
          await async.move(name, "new", "cur");
        }
      },
    },
  ];
  const times = await interleave(cases, {
    rounds: full ? 15 : 9,
    roundMs: full ? 80 : 30,
    warmupMs: full ? 200 : 60,
  });
  for (const [name, base] of [[cases[1]!.name, FS_SYNC], [cases[3]!.name, FS_PROMISES]]) {
    const row = compared(FIGURE, name!, "us/msg", times, base!);
    emit({ ...row, target: "ratio <= 1.2", met: row.ratio! <= 1.2 });
  }
}

async function endToEnd(dir: string): Promise<void> {
  const messages = full ? 10_000 : 2_000;
  for (const consumers of [1, 2, 4]) {
    const root = join(dir, `queue-${consumers}`);
    const store = new FileStore(root);
    await store.prepare();
    // The producer alone first: the rate the consumers have to keep up with.
    let t0 = wallMs();
    for (let i = 0; i < messages; i++) await store.put(DATA, { sync: false });
    const putOnly = messages / ((wallMs() - t0) / 1000);
    for (const path of await store.list("new")) await store.remove(path, "new");

    const children: Child[] = [];
    for (let i = 0; i < consumers; i++) {
      children.push(startChild("pipeline.ts", ["--consumer", root]));
    }
    for (const c of children) {
      const line = await c.next();
      if (line !== "ready") throw new Error(`pipeline consumer said '${line}'`);
    }
    t0 = wallMs();
    for (const c of children) c.send("go");
    for (let i = 0; i < messages; i++) await store.put(DATA, { sync: false });
    fs.writeFileSync(join(root, "done"), "");
    const reports = await Promise.all(children.map(async (c) => {
      const [count, end] = (await c.next()).split(" ").map(Number);
      await c.exited;
      return { count: count!, end: end! };
    }));
    const claimed = reports.reduce((sum, r) => sum + r.count, 0);
    const perSecond = messages / ((Math.max(...reports.map((r) => r.end)) - t0) / 1000);
    emit({
      figure: FIGURE,
      case: `put + claim, ${consumers} consumer process${consumers > 1 ? "es" : ""}`,
      unit: "msg/s",
      value: perSecond,
      baselineName: "put alone, same process",
      baseline: putOnly,
      ratio: perSecond / putOnly,
      target: "each message claimed once",
      met: claimed === messages,
      note: `${messages} messages, put({ sync: false }); claimed ${claimed} (${
        reports.map((r) => r.count).join(" + ")
      })`,
    });
  }
}

if (args[0] === "--consumer") await consumer(args[1]!);
else {
  using dir = tempDir("pipeline");
  await steps(dir.path);
  await endToEnd(dir.path);
}
