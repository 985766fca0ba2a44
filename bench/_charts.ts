// The headline figures of a bench run as SVG bar charts: for each figure,
// the cases that have a ratio to its baseline where lower is better, one bar per runtime, on a
// logarithmic axis where 1 is the baseline (raw flock, or plain node:fs).
// Plain SVG with no script or font files, so that it shows on any page.
import type { Row } from "./_util.ts";

/** A chart: its title, and which of the figure's cases it draws. */
export interface Charted {
  title: string;
  /** The cases where lower is better and the ratio means something. */
  draws(name: string): boolean;
}

/** The figures drawn. */
export const CHARTED: Readonly<Record<string, Charted>> = {
  "1 uncontended": {
    title: "Uncontended lock cycle, ratio to the raw open+flock+unlock+close",
    draws: () => true,
  },
  "2 handoff": {
    title: "Handoff p50 to a waiter in another process, ratio to raw blocking flock",
    draws: (name) => name.endsWith(": p50") && !name.startsWith("raw"),
  },
  "3 contention": {
    title: "8 contending processes, ratio to raw blocking flock",
    draws: (name) => /p99 wait|max wait|CPU/.test(name),
  },
  "4 pipeline": {
    title: "FileStore create + write + close + move x2, ratio to plain node:fs",
    draws: (name) => name.startsWith("FileStore"),
  },
};

const RUNTIME_COLOURS: Readonly<Record<string, string>> = {
  deno: "#2f6f4f",
  bun: "#c77d1a",
  node: "#3c6bb0",
};

const WIDTH = 860;
const LABEL = 330; // the case names' column
const BAR = 11;
const GAP = 9; // between cases
const TOP = 58;

function escape(text: string): string {
  return text.replaceAll("&", "&amp;").replaceAll("<", "&lt;").replaceAll(">", "&gt;")
    .replaceAll('"', "&quot;");
}

function short(x: number): string {
  const a = Math.abs(x);
  if (a >= 100) return x.toFixed(0);
  if (a >= 10) return x.toFixed(1);
  return x.toFixed(2);
}

/** The chart of one figure's rows as SVG text, or undefined if none has a ratio. */
export function chart(figure: string, rows: readonly Row[]): string | undefined {
  const charted = CHARTED[figure];
  const drawn = rows.filter((r) =>
    r.figure === figure && r.ratio !== undefined && Number.isFinite(r.ratio) && r.ratio > 0 &&
    (charted?.draws(r.case) ?? true)
  );
  if (drawn.length === 0) return undefined;
  const cases = [...new Set(drawn.map((r) => r.case))];
  const runtimes = [...new Set(drawn.map((r) => r.runtime))];
  const ratios = drawn.map((r) => r.ratio!);
  // Decades from below the smallest ratio (at most 1) to above the largest.
  const lo = Math.floor(Math.log10(Math.min(1, ...ratios)));
  const hi = Math.max(lo + 1, Math.ceil(Math.log10(Math.max(...ratios) * 1.05)));
  const plot = WIDTH - LABEL - 140;
  const x = (ratio: number) => LABEL + ((Math.log10(ratio) - lo) / (hi - lo)) * plot;
  const block = runtimes.length * BAR + GAP;
  const height = TOP + cases.length * block + 40;
  const out: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${WIDTH}" height="${height}" viewBox="0 0 ${WIDTH} ${height}" font-family="sans-serif" font-size="11">`,
    `<rect width="${WIDTH}" height="${height}" fill="#ffffff"/>`,
    `<text x="10" y="20" font-size="14" font-weight="bold">${
      escape(`${figure}: ${charted?.title ?? "ratio to the baseline"}`)
    }</text>`,
    `<text x="10" y="38" fill="#555">Lower is better; 1 = the baseline measured in the same run. Bars: median ratio; whiskers: min-max over rounds.</text>`,
  ];
  runtimes.forEach((runtime, i) => {
    const lx = WIDTH - 100;
    out.push(
      `<rect x="${lx}" y="${8 + i * 14}" width="10" height="10" fill="${
        RUNTIME_COLOURS[runtime] ?? "#777"
      }"/>`,
      `<text x="${lx + 14}" y="${17 + i * 14}">${escape(runtime)}</text>`,
    );
  });
  const bottom = TOP + cases.length * block;
  // A line at 1, 2 and 5 of each decade; labels at 2 and 5 only where
  // there is room for them (three decades or fewer).
  const labelled = hi - lo <= 3 ? [1, 2, 5] : [1];
  for (let d = lo; d <= hi; d++) {
    for (const m of d < hi ? [1, 2, 5] : [1]) {
      const value = m * 10 ** d;
      const gx = x(value).toFixed(1);
      out.push(
        `<line x1="${gx}" y1="${TOP - 6}" x2="${gx}" y2="${bottom}" stroke="${
          value === 1 ? "#000" : "#ddd"
        }" stroke-width="${value === 1 ? 1.5 : 1}"/>`,
      );
      if (labelled.includes(m)) {
        out.push(
          `<text x="${gx}" y="${bottom + 14}" text-anchor="middle" fill="#555">${
            short(value)
          }x</text>`,
        );
      }
    }
  }
  cases.forEach((name, c) => {
    const y0 = TOP + c * block;
    out.push(
      `<text x="${LABEL - 8}" y="${y0 + (runtimes.length * BAR) / 2 + 4}" text-anchor="end">${
        escape(name.length > 52 ? `${name.slice(0, 51)}…` : name)
      }</text>`,
    );
    runtimes.forEach((runtime, i) => {
      const row = drawn.find((r) => r.case === name && r.runtime === runtime);
      if (row === undefined) return;
      const y = y0 + i * BAR;
      const end = x(row.ratio!);
      const base = x(10 ** lo);
      out.push(
        `<rect x="${base.toFixed(1)}" y="${y + 1}" width="${
          Math.max(1, end - base).toFixed(1)
        }" height="${BAR - 2}" fill="${RUNTIME_COLOURS[runtime] ?? "#777"}"><title>${
          escape(`${runtime}: ${short(row.ratio!)}x ${row.baselineName ?? "the baseline"}`)
        }</title></rect>`,
      );
      if (row.ratioSpread !== undefined) {
        const [a, b] = row.ratioSpread.map((v) => x(Math.max(v, 10 ** lo)));
        out.push(
          `<line x1="${a!.toFixed(1)}" y1="${y + BAR / 2}" x2="${b!.toFixed(1)}" y2="${
            y + BAR / 2
          }" stroke="#222" stroke-width="1"/>`,
        );
      }
      const unit = row.unit ? ` ${row.unit}` : "";
      out.push(
        `<text x="${(Math.max(end, x(row.ratioSpread?.[1] ?? row.ratio!)) + 4).toFixed(1)}" y="${
          y + BAR - 2
        }" font-size="9" fill="#333">${
          escape(`${short(row.ratio!)}x (${short(row.value)}${unit})`)
        }</text>`,
      );
    });
  });
  out.push(`</svg>`);
  return out.join("\n") + "\n";
}

/** The file name of a figure's chart: "1 uncontended" → "1-uncontended.svg". */
export function chartName(figure: string): string {
  return `${figure.replaceAll(/[^a-z0-9]+/gi, "-")}.svg`;
}
