// Who holds a flock lock on a file, read from Linux's /proc/locks without
// taking any lock.
import { type FileInfo, rt } from "./_runtime.ts";

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
      seesAll = rt.readlinkSync("/proc/self/ns/pid") === INITIAL_PID_NAMESPACE;
    } catch {
      seesAll = false;
    }
  }
  return seesAll;
}

/** One process holding a flock lock, as /proc/locks lists it. */
export interface FlockEntry {
  pid: number;
  shared: boolean;
}

/**
 * The processes holding a flock on the file; undefined where /proc/locks
 * cannot tell: there is none, or it lists nobody and this process is in a
 * pid namespace whose /proc may leave a holder out.
 */
export function flockEntriesOf(info: FileInfo): FlockEntry[] | undefined {
  const dev = BigInt(info.dev);
  const major = ((dev >> 8n) & 0xfffn) | ((dev >> 32n) & ~0xfffn);
  const minor = (dev & 0xffn) | ((dev >> 12n) & ~0xffn);
  for (let reading = 0; reading < 3; reading++) {
    let table: string;
    try {
      table = rt.readTextSync("/proc/locks");
    } catch {
      return undefined;
    }
    const found: FlockEntry[] = [];
    for (const line of table.split("\n")) {
      const m = /^\d+: FLOCK +\S+ +(\S+) +(-?\d+) +([0-9a-f]+):([0-9a-f]+):(\d+) /.exec(line);
      if (
        m && BigInt(`0x${m[3]}`) === major && BigInt(`0x${m[4]}`) === minor &&
        Number(m[5]) === info.ino
      ) {
        found.push({ pid: Number(m[2]), shared: m[1] === "READ" });
      }
    }
    if (found.length > 0) return found;
  }
  return seesEveryProcess() ? [] : undefined;
}

/** The pids holding a flock on the file; see {@link flockEntriesOf}. */
export function flockHoldersOf(info: FileInfo): number[] | undefined {
  return flockEntriesOf(info)?.map((e) => e.pid);
}

// The boot time, in ms since the epoch, read once: it does not change.
let bootedAt: number | undefined;

/** What /proc says of a process: its command line and when it started; undefined parts it would not tell. */
export function processOf(pid: number): { command?: string; startedAt?: Date } {
  const out: { command?: string; startedAt?: Date } = {};
  try {
    const argv = rt.readTextSync(`/proc/${pid}/cmdline`).split("\0");
    if (argv.at(-1) === "") argv.pop();
    if (argv.length > 0) out.command = argv.join(" ");
  } catch { /* gone, or hidden from us */ }
  try {
    // Field 22 of /proc/PID/stat is the start in clock ticks after boot;
    // the fields before it follow the command name, which may hold spaces
    // and parentheses, so they are counted from its closing parenthesis.
    // The kernel reports ticks in USER_HZ, 100 on every Linux.
    const stat = rt.readTextSync(`/proc/${pid}/stat`);
    const ticks = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[19]);
    bootedAt ??= Number(/^btime (\d+)$/m.exec(rt.readTextSync("/proc/stat"))?.[1]) * 1000;
    if (Number.isFinite(bootedAt) && Number.isFinite(ticks)) {
      out.startedAt = new Date(bootedAt + ticks * 10);
    }
  } catch { /* gone, or hidden from us */ }
  return out;
}
