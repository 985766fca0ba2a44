// FileStore.watch: file-system events where the runtime has them, readings
// of the directory where it does not, and a slow reading in any case.
import { type FSWatcher, watch as watchFs } from "node:fs";
import { rt } from "./_runtime.ts";

/**
 * The paths of the files arriving in `dir`, as they arrive: those already
 * there, then each new one once (see FileStore.watch).
 */
export async function* watchDir(
  dir: string,
  interval: number,
  signal: AbortSignal | undefined,
): AsyncGenerator<string> {
  if (signal?.aborted) return;
  const seen = new Set<string>();
  // Set when something may have arrived; a wake-up resolves the wait.
  let dirty = true;
  let wake: (() => void) | undefined;
  const poke = () => {
    dirty = true;
    wake?.();
  };
  let watcher: FSWatcher | undefined;
  // Events can be lost (a full kernel queue), so a slow reading runs even
  // while they arrive; without them, readings every `interval` ms.
  let timer = setInterval(poke, interval * 20);
  const poll = () => {
    clearInterval(timer);
    timer = setInterval(poke, interval);
  };
  signal?.addEventListener("abort", poke, { once: true });
  try {
    try {
      watcher = watchFs(dir, { persistent: true }, poke);
      watcher.on("error", () => {
        watcher?.close();
        watcher = undefined;
        poll();
      });
    } catch {
      poll();
    }
    while (!signal?.aborted) {
      if (!dirty) {
        await new Promise<void>((resolve) => wake = resolve);
        wake = undefined;
        continue;
      }
      dirty = false;
      // One reading of the directory answers every event that came before
      // it, and keeps `seen` to the files that are still there.
      const names = await rt.readDir(dir);
      const present = new Set(names);
      for (const name of seen) if (!present.has(name)) seen.delete(name);
      names.sort();
      for (const name of names) {
        if (seen.has(name)) continue;
        seen.add(name);
        yield `${dir}/${name}`;
        if (signal?.aborted) return;
      }
    }
  } finally {
    signal?.removeEventListener("abort", poke);
    watcher?.close();
    clearInterval(timer);
  }
}
