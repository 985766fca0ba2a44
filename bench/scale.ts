// Figure 5: list() and claim() on an area holding many files, against the
// directory read itself, and how each grows with the count. listSync() is
// held to the fastest synchronous read the runtime has (node:fs's
// readdirSync, or Deno.readDirSync on Deno where that is faster), list()
// to the fastest asynchronous one (Deno.readDir on Deno, node:fs's
// promises.readdir elsewhere), both within 1.2x (issue 16). `--sizes
// 10,1000` picks the file counts.
import * as fs from "node:fs";
import { join } from "node:path";
import { FileStore } from "../filestore.ts";
import { type Case, interleave, median } from "./_stats.ts";
import { compared, emit, full, option, tempDir } from "./_util.ts";

const FIGURE = "5 scale";
const READDIR = "readdirSync(new)";
const DENO_READDIR = "Deno.readDirSync(new)";
const ASYNC_READ = "fastest async read of new";
const RAW_CLAIM = "readdirSync+sort+renameSync";
const sizes = option("sizes")?.split(",").map(Number) ??
  (full ? [10, 1_000, 10_000, 100_000] : [10, 1_000, 10_000]);

interface DenoDir {
  readDirSync(path: string): Iterable<{ name: string }>;
  readDir(path: string): AsyncIterable<{ name: string }>;
}
const deno = (globalThis as { Deno?: DenoDir }).Deno;

// The fastest asynchronous read of the names in `path` this runtime has.
async function asyncNames(path: string): Promise<string[]> {
  if (deno === undefined) return await fs.promises.readdir(path);
  const names: string[] = [];
  for await (const e of deno.readDir(path)) names.push(e.name);
  return names;
}

using dir = tempDir("scale");
const medians = new Map<string, number[]>();
for (const size of sizes) {
  const root = join(dir.path, `n${size}`);
  const store = new FileStore(root);
  store.prepareSync();
  const newDir = join(root, "new");
  const curDir = join(root, "cur");
  for (let i = 0; i < size; i++) {
    fs.writeFileSync(join(newDir, `${1e9 + i}.msg`), "");
  }
  // Each claim is undone (renamed back) inside the timed loop, in the
  // baseline too, so that the area keeps its size.
  const putBack = (path: string) => {
    const name = path.slice(path.lastIndexOf("/") + 1);
    fs.renameSync(join(curDir, name), join(newDir, name));
  };
  const cases: Case[] = [
    {
      name: READDIR,
      run: (n) =>
        void (() => {
          for (let i = 0; i < n; i++) fs.readdirSync(newDir);
        })(),
    },
    ...(deno === undefined ? [] : [{
      name: DENO_READDIR,
      run(n: number) {
        for (let i = 0; i < n; i++) Array.from(deno.readDirSync(newDir), (e) => e.name);
      },
    }]),
    {
      name: ASYNC_READ,
      async run(n) {
        for (let i = 0; i < n; i++) await asyncNames(newDir);
      },
    },
    {
      name: 'listSync("new")',
      run(n) {
        for (let i = 0; i < n; i++) store.listSync("new");
      },
    },
    {
      name: 'list("new")',
      async run(n) {
        for (let i = 0; i < n; i++) await store.list("new");
      },
    },
    {
      name: RAW_CLAIM,
      run(n) {
        for (let i = 0; i < n; i++) {
          const first = fs.readdirSync(newDir).sort()[0]!;
          fs.renameSync(join(newDir, first), join(curDir, first));
          putBack(first);
        }
      },
    },
    {
      name: "claimSync(), fresh store",
      run(n) {
        // release() puts the file back into `new`, as putBack() does.
        for (let i = 0; i < n; i++) new FileStore(root).claimSync()!.releaseSync();
      },
    },
    {
      name: "claim(), fresh store",
      async run(n) {
        for (let i = 0; i < n; i++) await (await new FileStore(root).claim())!.release();
      },
    },
  ];
  const times = await interleave(cases, {
    rounds: full ? 9 : 7,
    roundMs: full ? 80 : 30,
    warmupMs: full ? 100 : 30,
  });
  // The faster of the runtime's synchronous reads, in this run.
  const syncRead = times.has(DENO_READDIR) &&
      median(times.get(DENO_READDIR)!) < median(times.get(READDIR)!)
    ? DENO_READDIR
    : READDIR;
  const within = (row: ReturnType<typeof compared>) => ({
    ...row,
    target: "ratio <= 1.2 (the fastest read of its kind)",
    met: row.ratio! <= 1.2,
  });
  const rows = [
    within(compared(FIGURE, 'listSync("new")', "us/call", times, syncRead)),
    within(compared(FIGURE, 'list("new")', "us/call", times, ASYNC_READ)),
    compared(FIGURE, "claimSync(), fresh store", "us/call", times, RAW_CLAIM),
    compared(FIGURE, "claim(), fresh store", "us/call", times, RAW_CLAIM),
  ];
  for (const row of rows) {
    emit({ ...row, case: `${row.case}, ${size} files`, baselineName: `${row.baselineName}` });
  }
  for (const [name, values] of times) {
    medians.set(name, [...(medians.get(name) ?? []), median(values)]);
  }
  fs.rmSync(root, { recursive: true });
}

// Growth from the smallest size to each larger one, against the
// directory read's own growth over the same step.
for (
  const [name, base] of [
    ['listSync("new")', READDIR],
    ['list("new")', READDIR],
    ["claimSync(), fresh store", RAW_CLAIM],
    ["claim(), fresh store", RAW_CLAIM],
  ] as const
) {
  const mine = medians.get(name)!;
  const theirs = medians.get(base)!;
  for (let i = 1; i < sizes.length; i++) {
    const growth = mine[i]! / mine[0]!;
    const baseGrowth = theirs[i]! / theirs[0]!;
    emit({
      figure: FIGURE,
      case: `${name}: growth ${sizes[0]} -> ${sizes[i]} files`,
      unit: "x",
      value: growth,
      baselineName: `${base} growth`,
      baseline: baseGrowth,
      ratio: growth / baseGrowth,
      target: "grows no faster than the read (ratio <= 1.2)",
      met: growth / baseGrowth <= 1.2,
    });
  }
}
