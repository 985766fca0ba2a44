// Who holds a flock lock on a file, read from Linux's /proc/locks without
// taking any lock.
import * as fs from "node:fs";
import type { FileInfo } from "./_runtime.ts";

// /proc/locks names a file by its device, as "major:minor" in hex, and its
// inode; the kernel packs major and minor into st_dev as below. Lines with
// "->" are waiters, not holders. The kernel hands the table out a page per
// read, by position: when other locks come and go between two reads, a line
// can be skipped (seen here with two other test suites running). A held
// lock is not skipped three times in a row, so a lock found in none of three
// readings is taken to be free.
// The initial pid namespace has this fixed inode number (the kernel's
// PROC_PID_INIT_INO). In another one (a container, `unshare --pid`),
// /proc/locks leaves out the locks of processes it cannot see.
const INITIAL_PID_NAMESPACE = "pid:[4026531836]";
let seesAll: boolean | undefined;

function seesEveryProcess(): boolean {
  if (seesAll === undefined) {
    try {
      seesAll = fs.readlinkSync("/proc/self/ns/pid") === INITIAL_PID_NAMESPACE;
    } catch {
      seesAll = false;
    }
  }
  return seesAll;
}

/**
 * The pids holding a flock on the file; undefined where /proc/locks cannot
 * tell: there is none, or it lists nobody and this process is in a pid
 * namespace whose /proc may leave a holder out.
 */
export function flockHoldersOf(info: FileInfo): number[] | undefined {
  const dev = BigInt(info.dev);
  const major = ((dev >> 8n) & 0xfffn) | ((dev >> 32n) & ~0xfffn);
  const minor = (dev & 0xffn) | ((dev >> 12n) & ~0xffn);
  for (let reading = 0; reading < 3; reading++) {
    let table: string;
    try {
      table = fs.readFileSync("/proc/locks", "utf8");
    } catch {
      return undefined;
    }
    const pids: number[] = [];
    for (const line of table.split("\n")) {
      const m = /^\d+: FLOCK +\S+ +\S+ +(-?\d+) +([0-9a-f]+):([0-9a-f]+):(\d+) /.exec(line);
      if (
        m && BigInt(`0x${m[2]}`) === major && BigInt(`0x${m[3]}`) === minor &&
        Number(m[4]) === info.ino
      ) {
        pids.push(Number(m[1]));
      }
    }
    if (pids.length > 0) return pids;
  }
  return seesEveryProcess() ? [] : undefined;
}
