// Runs every figure under Deno, Bun and Node, one child process each, and
// prints one table. Usage:
//   deno task bench [--full] [--only <figure>] [--runtime <deno|bun|node>] [--json <file>]
//                   [--charts <dir>]
// --charts draws the headline figures of the run as SVG files in <dir>
// (docs/bench holds those of the run in BENCHMARKS.md).
import { spawn } from "node:child_process";
import { existsSync, mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import process from "node:process";
import { args, benchDir, option, type Row } from "./_util.ts";
import { chart, CHARTED, chartName } from "./_charts.ts";

const FIGURES = [
  "uncontended",
  "handoff",
  "contention",
  "pipeline",
  "scale",
  "resources",
  "waits",
  "claims",
];
const RUNTIMES = ["deno", "bun", "node"];

function commandFor(runtime: string, script: string, rest: string[]): [string, string[]] {
  const local = join(benchDir, "..", "node_modules", ".bin", runtime);
  const bin = existsSync(local) ? local : runtime;
  const file = join(benchDir, script);
  // The garbage collector is exposed for figure 6's readings.
  if (runtime === "deno") {
    return [bin, ["run", "-A", "--quiet", "--v8-flags=--expose-gc", file, ...rest]];
  }
  if (runtime === "bun") return [bin, [file, ...rest]];
  return [bin, ["--no-warnings", "--expose-gc", file, ...rest]];
}

function runFigure(runtime: string, figure: string, rest: string[]): Promise<Row[]> {
  const [bin, argv] = commandFor(runtime, `${figure}.ts`, rest);
  const child = spawn(bin, argv, { stdio: ["ignore", "pipe", "inherit"] });
  let out = "";
  child.stdout.setEncoding("utf8");
  child.stdout.on("data", (chunk: string) => out += chunk);
  return new Promise((resolve) =>
    child.on("close", (code) => {
      const rows: Row[] = [];
      for (const line of out.split("\n")) {
        if (line.startsWith("{")) rows.push(JSON.parse(line) as Row);
      }
      if (code !== 0) {
        rows.push({ figure, case: `FAILED with exit code ${code}`, runtime, unit: "", value: NaN });
      }
      resolve(rows);
    })
  );
}

function num(x: number | undefined): string {
  if (x === undefined || Number.isNaN(x)) return "";
  const a = Math.abs(x);
  if (a >= 1000) return x.toFixed(0);
  if (a >= 100) return x.toFixed(1);
  if (a >= 10) return x.toFixed(2);
  if (a >= 0.01) return x.toFixed(3);
  return x.toPrecision(2);
}

function cell(text: string): string {
  return text.replaceAll("|", "\\|");
}

/** The rows as a Markdown table. */
export function table(rows: readonly Row[]): string {
  const lines = [
    "| Figure | Case | Runtime | This package | Spread | Baseline | Baseline value | Ratio (spread) | Target |",
    "| --- | --- | --- | ---: | --- | --- | ---: | --- | --- |",
  ];
  for (const r of rows) {
    const unit = r.unit ? ` ${r.unit}` : "";
    const spread = r.spread ? `${num(r.spread[0])}-${num(r.spread[1])}` : "";
    const ratio = r.ratio === undefined
      ? ""
      : `${num(r.ratio)}${
        r.ratioSpread ? ` (${num(r.ratioSpread[0])}-${num(r.ratioSpread[1])})` : ""
      }`;
    const target = r.target === undefined ? "" : `${r.target}: ${r.met ? "met" : "**missed**"}`;
    lines.push(
      `| ${
        [
          r.figure,
          r.case,
          r.runtime,
          `${num(r.value)}${unit}`,
          spread,
          r.baselineName ?? "",
          r.baseline === undefined ? "" : `${num(r.baseline)}${unit}`,
          ratio,
          target,
        ].map(cell).join(" | ")
      } |`,
    );
  }
  return lines.join("\n");
}

/** The notes of the rows that have one, as a list. */
export function notes(rows: readonly Row[]): string {
  return rows.filter((r) => r.note).map((r) => `- ${r.figure}, ${r.runtime}, ${r.case}: ${r.note}`)
    .join("\n");
}

if (import.meta.main) {
  const only = option("only");
  const runtime = option("runtime");
  const full = args.includes("--full");
  const figures = only ? only.split(",") : FIGURES;
  const runtimes = runtime ? runtime.split(",") : RUNTIMES;
  for (const f of figures) {
    if (!FIGURES.includes(f)) throw new RangeError(`Unknown figure '${f}': use one of ${FIGURES}`);
  }
  for (const r of runtimes) {
    if (!RUNTIMES.includes(r)) {
      throw new RangeError(`Unknown runtime '${r}': use one of ${RUNTIMES}`);
    }
  }
  const started = performance.now();
  const rows: Row[] = [];
  for (const figure of figures) {
    for (const r of runtimes) {
      const t0 = performance.now();
      rows.push(...await runFigure(r, figure, full ? ["--full"] : []));
      console.error(`${figure} on ${r}: ${((performance.now() - t0) / 1000).toFixed(1)} s`);
    }
  }
  const seconds = (performance.now() - started) / 1000;
  console.log(table(rows));
  console.log();
  console.log(notes(rows));
  console.log();
  console.log(`Mode: ${full ? "--full" : "quick"}; took ${seconds.toFixed(0)} s.`);
  const json = option("json");
  if (json) writeFileSync(json, JSON.stringify(rows, null, 2) + "\n");
  const charts = option("charts");
  if (charts) {
    mkdirSync(charts, { recursive: true });
    for (const figure of Object.keys(CHARTED)) {
      const svg = chart(figure, rows);
      if (svg !== undefined) writeFileSync(join(charts, chartName(figure)), svg);
    }
  }
  process.exit(rows.some((r) => r.case.startsWith("FAILED")) ? 1 : 0);
}
