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

// The kernel's st_dev from a "major:minor" pair (glibc's makedev).
function makedev(major: bigint, minor: bigint): number {
  return Number(
    (minor & 0xffn) | ((major & 0xfffn) << 8n) | ((minor & ~0xffn) << 12n) |
      ((major & ~0xfffn) << 32n),
  );
}

// The path of a mount point as /proc/self/mountinfo escapes it (octal
// \040 for a space, and so on).
function unescape(field: string): string {
  return field.replace(
    /\\([0-7]{3})/g,
    (_, octal: string) => String.fromCharCode(parseInt(octal, 8)),
  );
}

// btrfs gives each subvolume a device number of its own for stat(), while
// /proc/locks names the file system's own device (the third field of the
// mount's line in /proc/self/mountinfo), and inode numbers repeat from one
// subvolume to the next. So the device /proc/locks uses is looked up on
// each call, from the mount the path lies on: not kept per st_dev, since an
// anonymous device number is handed out again once its file system is
// unmounted.
function lockDeviceOf(info: FileInfo, path: string): number {
  let dev = info.dev;
  try {
    const real = rt.realPathSync(path);
    let longest = -1;
    for (const line of rt.readTextSync("/proc/self/mountinfo").split("\n")) {
      const fields = line.split(" ");
      const at = /^(\d+):(\d+)$/.exec(fields[2] ?? "");
      if (at === null || fields[4] === undefined) continue;
      const point = unescape(fields[4]);
      const under = point === "/" || real === point || real.startsWith(`${point}/`);
      // A later line for the same point is a mount on top of the earlier one.
      if (under && point.length >= longest) {
        longest = point.length;
        dev = makedev(BigInt(at[1]!), BigInt(at[2]!));
      }
    }
  } catch { /* then st_dev, as on most file systems */ }
  return dev;
}

// Whether process `pid` holds its flock on the very file `info` describes:
// an open file of it whose fdinfo lists a flock and whose target has the
// same device and inode. Undefined where its descriptors cannot be read
// (another user's process, without root).
function holdsThisFile(pid: number, info: FileInfo): boolean | undefined {
  let fds: string[];
  try {
    fds = rt.readDirSync(`/proc/${pid}/fd`);
  } catch {
    return undefined;
  }
  for (const fd of fds) {
    try {
      if (!/^lock:\s+\d+: FLOCK /m.test(rt.readTextSync(`/proc/${pid}/fdinfo/${fd}`))) {
        continue;
      }
      const target = rt.statSync(`/proc/${pid}/fd/${fd}`);
      if (target.dev === info.dev && target.ino === info.ino) return true;
    } catch { /* closed meanwhile */ }
  }
  return false;
}

/**
 * The processes holding a flock on the file at `path`, which `info`
 * (its fstat) describes; undefined where /proc/locks cannot tell: there
 * is none, it lists nobody and this process is in a pid namespace whose
 * /proc may leave a holder out, or the file system repeats inode numbers
 * (btrfs) and a listed holder's descriptors cannot be read to tell its
 * file from this one.
 */
export function flockEntriesOf(info: FileInfo, path: string): FlockEntry[] | undefined {
  const lockDev = lockDeviceOf(info, path);
  // btrfs: the line of another subvolume's file may look like this one's.
  const ambiguous = lockDev !== info.dev;
  const dev = BigInt(lockDev);
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
    if (found.length > 0 && !ambiguous) return found;
    if (found.length > 0) {
      const verdicts = found.map((e) => holdsThisFile(e.pid, info));
      if (verdicts.includes(undefined)) return undefined;
      const mine = found.filter((_, i) => verdicts[i]);
      if (mine.length > 0) return mine;
    }
  }
  return seesEveryProcess() ? [] : undefined;
}

/** The pids holding a flock on the file; see {@link flockEntriesOf}. */
export function flockHoldersOf(info: FileInfo, path: string): number[] | undefined {
  return flockEntriesOf(info, path)?.map((e) => e.pid);
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
