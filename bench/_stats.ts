// Small statistics for the figures: medians, percentiles and interleaved
// rounds that pair each candidate with its baseline under the same noise.

/** The `p`-th percentile (0-100) of `values`, by linear interpolation. */
export function percentile(values: readonly number[], p: number): number {
  if (values.length === 0) return NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const at = (sorted.length - 1) * p / 100;
  const lo = Math.floor(at);
  const hi = Math.ceil(at);
  return sorted[lo]! + (sorted[hi]! - sorted[lo]!) * (at - lo);
}

/** The median of `values`. */
export function median(values: readonly number[]): number {
  return percentile(values, 50);
}

/** The smallest and the largest of `values`. */
export function range(values: readonly number[]): [number, number] {
  return [Math.min(...values), Math.max(...values)];
}

/** One measured case: `run(n)` does the operation `n` times. */
export interface Case {
  name: string;
  run(n: number): void | Promise<void>;
}

/** How to interleave the rounds of several cases. */
export interface RoundOptions {
  /** Rounds per case after the warm-up. */
  rounds: number;
  /** Milliseconds each case runs in one round (sets the operation count). */
  roundMs: number;
  /** Milliseconds of warm-up per case, which also calibrates the count. */
  warmupMs: number;
}

async function calibrate(c: Case, warmupMs: number): Promise<number> {
  let n = 1;
  let spent = 0;
  let done = 0;
  const start = performance.now();
  while (performance.now() - start < warmupMs) {
    const t0 = performance.now();
    await c.run(n);
    spent += performance.now() - t0;
    done += n;
    n = Math.min(n * 2, 1 << 16);
  }
  return spent / Math.max(done, 1);
}

/**
 * Runs every case once per round, rotating the order from round to round,
 * and returns each case's time per operation in microseconds, one value
 * per round. Round `r` of one case and round `r` of another ran back to
 * back, so their ratio cancels most of the machine's drift.
 */
export async function interleave(
  cases: readonly Case[],
  options: RoundOptions,
): Promise<Map<string, number[]>> {
  const counts = new Map<string, number>();
  for (const c of cases) {
    const perOp = await calibrate(c, options.warmupMs);
    counts.set(c.name, Math.max(3, Math.round(options.roundMs / Math.max(perOp, 1e-4))));
  }
  const times = new Map<string, number[]>(cases.map((c) => [c.name, []]));
  for (let r = 0; r < options.rounds; r++) {
    for (let i = 0; i < cases.length; i++) {
      const c = cases[(i + r) % cases.length]!;
      const n = counts.get(c.name)!;
      const t0 = performance.now();
      await c.run(n);
      times.get(c.name)!.push((performance.now() - t0) * 1000 / n);
    }
  }
  return times;
}

/** Round-by-round ratios of `a` to `b`. */
export function ratios(a: readonly number[], b: readonly number[]): number[] {
  return a.map((x, i) => x / b[i]!);
}
