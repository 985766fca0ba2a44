// Used by demo.ts: claims files from the store at argv[2] until none is
// left, appending each to the report at argv[3] under its lock, and prints
// how many it handled. With "die" as argv[5], it takes one file and then
// waits to be killed, as a worker that crashes in the middle of a job.
import process from "node:process";
import { FileStore, Lock } from "../mod.ts";

const [path, report, id, mode] = process.argv.slice(2);
const store = new FileStore(path!);
if (mode === "die") {
  const claim = await store.claim();
  console.log(`${id} took ${claim?.name} and hangs until it is killed`);
  setInterval(() => {}, 1000);
} else {
  let handled = 0;
  for (let claim = await store.claim(); claim !== null; claim = await store.claim()) {
    const text = (await claim.text()).trim();
    await new Promise((resolve) => setTimeout(resolve, 20)); // the job's work
    const again = claim.deliveries > 1 ? ` (delivery ${claim.deliveries})` : "";
    {
      await using lock = new Lock(report!, { timeout: 5_000 });
      const file = await lock.acquire();
      await file.write(`${id} handled ${text}${again}\n`);
    }
    await claim.done();
    handled++;
  }
  console.log(`${id} handled ${handled}`);
}
