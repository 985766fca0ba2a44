// Argument checks, one wording for the whole package: "Cannot <what>:
// '<param>' must be <expectation>, got <value>". A value of the wrong type
// is a TypeError, a value of the right type outside what is allowed a
// RangeError (Deno std's rule); lockfile.ts adds SyntaxError for a template
// it cannot parse.

const encoder = new TextEncoder();

/** Shows a caller's value in a message, never throwing (getters, proxies). */
export function show(value: unknown): string {
  try {
    switch (typeof value) {
      case "string":
        return JSON.stringify(value);
      case "number":
      case "boolean":
      case "symbol":
        return String(value);
      case "bigint":
        return `${value}n`;
      case "undefined":
        return "undefined";
      case "function":
        return "a function";
    }
    if (value === null) return "null";
    if (Array.isArray(value)) return "an array";
    const name = (value as { constructor?: { name?: unknown } }).constructor?.name;
    return typeof name === "string" && name !== "Object" ? `a ${name}` : "an object";
  } catch {
    return typeof value;
  }
}

/** An error in the package's one message shape. */
export function invalid(
  Class: TypeErrorConstructor | RangeErrorConstructor | SyntaxErrorConstructor,
  what: string,
  param: string,
  expected: string,
  value: unknown,
): Error {
  return new Class(`Cannot ${what}: '${param}' must be ${expected}, got ${show(value)}`);
}

/** The options object of a call: undefined, or an object. */
export function checkOptions<T extends object>(
  options: T | undefined,
  what: string,
): T | undefined {
  if (options === undefined) return undefined;
  if (options === null || typeof options !== "object") {
    throw invalid(TypeError, what, "options", "an object", options);
  }
  return options;
}

/** A path: a non-empty string without NUL (a runtime would turn a number into a name). */
export function checkPath(value: unknown, what: string, param = "path"): string {
  if (typeof value !== "string") {
    throw invalid(TypeError, what, param, "a non-empty string without NUL", value);
  }
  if (value === "" || value.includes("\0")) {
    throw invalid(RangeError, what, param, "a non-empty string without NUL", value);
  }
  return value;
}

/** An optional boolean. */
export function checkBoolean(value: unknown, what: string, param: string): boolean | undefined {
  if (value === undefined || typeof value === "boolean") return value;
  throw invalid(TypeError, what, param, "a boolean", value);
}

/** Bounds of {@link checkNumber}; `integer` also refuses fractions. */
export interface NumberRange {
  min?: number;
  /** `min` itself is refused. */
  above?: number;
  max?: number;
  integer?: boolean;
}

/** An optional number within `range`; `expected` says the range in words. */
export function checkNumber(
  value: unknown,
  what: string,
  param: string,
  expected: string,
  range: NumberRange,
): number | undefined {
  if (value === undefined) return undefined;
  if (typeof value !== "number") throw invalid(TypeError, what, param, expected, value);
  const { min = -Infinity, above, max = Infinity, integer = false } = range;
  const ok = value >= min && value <= max && (above === undefined || value > above) &&
    (!integer || Number.isInteger(value));
  if (!ok) throw invalid(RangeError, what, param, expected, value);
  return value;
}

/** Permission bits for a created file. */
export function checkPermissions(value: unknown, what: string, param: string): number | undefined {
  return checkNumber(value, what, param, "permission bits from 0 to 0o7777", {
    min: 0,
    max: 0o7777,
    integer: true,
  });
}

/** A string that must be one of `choices`. */
export function checkChoice<T extends string>(
  value: unknown,
  what: string,
  param: string,
  choices: readonly T[],
): T {
  if (typeof value === "string" && (choices as readonly string[]).includes(value)) {
    return value as T;
  }
  // Worded only for a refusal: a check that passes is on hot paths (list()).
  const expected = choices.length === 1
    ? JSON.stringify(choices[0])
    : `${choices.slice(0, -1).map((c) => JSON.stringify(c)).join(", ")} or ${
      JSON.stringify(choices.at(-1))
    }`;
  throw invalid(typeof value === "string" ? RangeError : TypeError, what, param, expected, value);
}

/** An optional AbortSignal. */
export function checkSignal(value: unknown, what: string): AbortSignal | undefined {
  if (value === undefined || value instanceof AbortSignal) return value;
  throw invalid(TypeError, what, "signal", "an AbortSignal", value);
}

/** A callback. */
export function checkFunction<T>(value: T, what: string, param: string): T {
  if (typeof value === "function") return value;
  throw invalid(TypeError, what, param, "a function", value);
}

/** Data to write: a string (as UTF-8) or bytes. */
export function toBytes(data: unknown, what: string): Uint8Array {
  if (typeof data === "string") return encoder.encode(data);
  if (data instanceof Uint8Array) return data;
  throw invalid(TypeError, what, "data", "a string or a Uint8Array", data);
}

/** The chunks one after another, in one array. */
export function joinBytes(chunks: readonly Uint8Array[]): Uint8Array {
  const all = new Uint8Array(chunks.reduce((size, c) => size + c.length, 0));
  let at = 0;
  for (const c of chunks) {
    all.set(c, at);
    at += c.length;
  }
  return all;
}

/** `bytes` random bytes as lowercase hex: the random part of a temporary name. */
export function randomHex(bytes: number): string {
  let hex = "";
  for (const b of crypto.getRandomValues(new Uint8Array(bytes))) {
    hex += b.toString(16).padStart(2, "0");
  }
  return hex;
}

/** The one wording of who holds a lock, for every refusal. */
export function heldBy(
  { pid, hostname }: { pid?: number | undefined; hostname?: string | undefined },
): string {
  const host = hostname === undefined ? "" : ` on host '${hostname}'`;
  if (pid !== undefined) return `held by pid ${pid}${host}`;
  if (hostname !== undefined) return `held by a process${host}`;
  return "held by an unknown owner";
}
