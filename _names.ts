// Names in a FileStore: the unique names that put() delivers under, and the
// check that a caller's name is one safe path component.
import { invalid } from "./_check.ts";
import { onWindows, rt } from "./_runtime.ts";

const encoder = new TextEncoder();

/**
 * A name that is safe to join to an area's directory: one path component,
 * never "." or "..", no NUL, at most 255 bytes (and no backslash on
 * Windows, where it separates paths). With
 * `acceptPath`, a full path stands for its last component.
 */
export function checkName(value: unknown, what: string, acceptPath: boolean): string {
  const expected = "one path component of at most 255 bytes";
  if (typeof value !== "string") throw invalid(TypeError, what, "name", expected, value);
  const name = acceptPath ? value.slice(value.lastIndexOf("/") + 1) : value;
  const problem = name === ""
    ? (value === "" ? "it is empty" : "it ends with a path separator")
    : name === "." || name === ".."
    ? "it is '.' or '..'"
    : name.includes("/") || (onWindows && name.includes("\\"))
    ? "it contains a path separator"
    : name.includes("\0")
    ? "it contains a NUL character"
    // A UTF-16 unit is at most 3 UTF-8 bytes, so short names need no encoding.
    : name.length > 85 && encoder.encode(name).length > 255
    ? "it is longer than 255 bytes in UTF-8"
    : undefined;
  if (problem !== undefined) {
    throw invalid(RangeError, what, "name", `${expected} (${problem})`, value);
  }
  return name;
}

// The host part of a delivered name. Maildir escapes "/" and ":" as octal
// with a backslash; a backslash is refused in names here, so the escape
// drops it. Anything else outside a conservative set becomes "_", and the
// length is capped so that the whole name stays far below 255 bytes.
function hostPart(host: string): string {
  return host
    .replaceAll("/", "057")
    .replaceAll(":", "072")
    .replace(/[^A-Za-z0-9._-]/g, "_")
    .slice(0, 64) || "localhost";
}

let counter = 0;
let host: string | undefined;

/**
 * `${seconds}.M${micros}P${pid}Q${counter}R${random}.${host}`: time first so
 * that sorting by name sorts by delivery time (micros zero-padded for that);
 * pid, counter and randomness make it unique on this host; the host makes
 * it unique among hosts sharing the directory.
 */
export function uniqueName(hostname?: string): string {
  const now = performance.timeOrigin + performance.now();
  const seconds = Math.floor(now / 1000);
  const micros = Math.floor((now - seconds * 1000) * 1000);
  const random = crypto.getRandomValues(new Uint32Array(1))[0]!;
  const where = hostname === undefined ? host ??= hostPart(rt.hostname()) : hostPart(hostname);
  return `${seconds}.M${String(micros).padStart(6, "0")}P${rt.pid}Q${++counter}R${
    random.toString(16).padStart(8, "0")
  }.${where}`;
}

// A file that has come back from a dead consumer carries its count of
// deliveries in its name: "NAME.retryN" has been handed out N+1 times.
const RETRY = /\.retry(\d+)$/;

/** How often a file named so has been handed out. */
export function deliveriesOf(name: string): number {
  const m = RETRY.exec(name);
  return m ? Number(m[1]) + 1 : 1;
}

/**
 * The name under which a file goes back to `new` once more: one more
 * retry, unless that would pass 255 bytes (then the count stays).
 */
export function retried(name: string): string {
  const m = RETRY.exec(name);
  const next = m ? `${name.slice(0, m.index)}.retry${Number(m[1]) + 1}` : `${name}.retry1`;
  return new TextEncoder().encode(next).length <= 255 ? next : name;
}
