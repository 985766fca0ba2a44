// Used by demo.ts: delivers argv[3] messages into the store at argv[2],
// as a producer process of whichever runtime runs it.
import process from "node:process";
import { FileStore } from "../mod.ts";

const [path, count = "3"] = process.argv.slice(2);
const runtime = "Deno" in globalThis ? "deno" : "Bun" in globalThis ? "bun" : "node";
const store = new FileStore(path!);
for (let i = 1; i <= Number(count); i++) {
  await store.put(`order ${i} from ${runtime} (pid ${process.pid})\n`);
}
