// Command-line parsing for cli.ts: getopt's rules (short options bundle,
// "-w5" and "-w 5", "--wait=5" and "--wait 5", "--" ends the options, the
// first operand ends them too, so that a command's own options pass
// through) with one error class whose message is the one line a user sees.

/** A misuse of the command line: exit status 64 (EX_USAGE) and this message. */
export class UsageError extends Error {
  override name = "UsageError";
}

/** A failure with its own exit status (sysexits.h's numbers, as flock(1) uses them). */
export class CliError extends Error {
  override name = "CliError";
  status: number;
  constructor(status: number, message: string) {
    super(message);
    this.status = status;
  }
}

/** What kept the command from starting: exit status 69 as flock(1) has it, and this message. */
export class CommandFailed extends Error {
  override name = "CommandFailed";
}

/**
 * `text` on one line and harmless to a terminal: control characters (C0,
 * DEL and C1), line and paragraph separators and the bidirectional
 * overrides are shown as \xNN or \uNNNN, so that no file name or command
 * line can add lines of its own or rewrite the screen.
 */
export function oneLine(text: string): string {
  return text.replace(
    // deno-lint-ignore no-control-regex
    /[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]/g,
    (c) => {
      const code = c.charCodeAt(0);
      return code < 0x100
        ? `\\x${code.toString(16).padStart(2, "0")}`
        : `\\u${code.toString(16).padStart(4, "0")}`;
    },
  );
}

/** One option: its names, and whether it takes a value ("required") or may take one ("optional", `--x=v` only). */
export interface OptionSpec {
  short?: string;
  long: string;
  /** Other long names of the same option. */
  aliases?: readonly string[];
  value?: "required" | "optional";
}

/** What parse() found: options by long name (true, or the value), then the operands in order. */
export interface Parsed {
  options: Map<string, string | true>;
  /** The long names of the options, in the order given (flock(1) lets the last of -s and -x win). */
  order: string[];
  operands: string[];
  /** Whether "--" was seen; the operands after it are `operands.slice(dashAt)`. */
  dashAt: number | undefined;
}

/**
 * Reads `args` by `specs`. Options stop at "--", or after
 * `stopAfterOperands` operands (flock's FILE comes before the command). A
 * long option may be shortened to any prefix that names one option, as
 * getopt_long allows.
 */
export function parse(
  args: readonly string[],
  specs: readonly OptionSpec[],
  stopAfterOperands = Infinity,
): Parsed {
  const options = new Map<string, string | true>();
  const order: string[] = [];
  const set = (spec: OptionSpec, value: string | true) => {
    options.set(spec.long, value);
    order.push(spec.long);
  };
  const operands: string[] = [];
  let dashAt: number | undefined;
  let i = 0;
  for (; i < args.length; i++) {
    const arg = args[i]!;
    if (arg === "--") {
      dashAt = operands.length;
      i++;
      break;
    }
    if (arg.startsWith("--")) {
      const eq = arg.indexOf("=");
      const name = arg.slice(2, eq === -1 ? undefined : eq);
      const spec = longOption(specs, name);
      if (eq !== -1) {
        if (!spec.value) throw new UsageError(`option '--${name}' takes no value`);
        set(spec, arg.slice(eq + 1));
      } else if (spec.value === "required") {
        if (i + 1 >= args.length) throw new UsageError(`option '--${name}' needs a value`);
        set(spec, args[++i]!);
      } else {
        set(spec, true);
      }
      continue;
    }
    if (arg.startsWith("-") && arg.length > 1) {
      for (let j = 1; j < arg.length; j++) {
        const letter = arg[j]!;
        const spec = specs.find((s) => s.short === letter);
        if (!spec) throw new UsageError(`unknown option '-${letter}'`);
        if (spec.value === "required") {
          const rest = arg.slice(j + 1);
          if (rest !== "") {
            set(spec, rest);
          } else if (i + 1 < args.length) {
            set(spec, args[++i]!);
          } else {
            throw new UsageError(`option '-${letter}' needs a value`);
          }
          break;
        }
        set(spec, true);
      }
      continue;
    }
    operands.push(arg);
    if (operands.length >= stopAfterOperands) {
      i++;
      break;
    }
  }
  if (dashAt === undefined && args[i] === "--") {
    dashAt = operands.length;
    i++;
  }
  operands.push(...args.slice(i));
  return { options, order, operands, dashAt };
}

function longOption(specs: readonly OptionSpec[], name: string): OptionSpec {
  const names = (s: OptionSpec) => [s.long, ...(s.aliases ?? [])];
  const exact = specs.find((s) => names(s).includes(name));
  if (exact) return exact;
  const candidates = specs.filter((s) => name !== "" && names(s).some((n) => n.startsWith(name)));
  const longs = [...new Set(candidates.map((s) => s.long))];
  if (longs.length === 1) return candidates[0]!;
  if (longs.length > 1) {
    throw new UsageError(
      `option '--${name}' is ambiguous (${longs.map((l) => `--${l}`).join(", ")})`,
    );
  }
  throw new UsageError(`unknown option '--${name}'`);
}

/** A number of seconds from the command line, as milliseconds; `what` names the option in the error. */
export function seconds(value: string, what: string): number {
  // flock(1) reads it with strtod: decimals, exponents and hex all pass.
  const n = value.trim() === "" ? NaN : Number(value);
  if (!(n >= 0) || !Number.isFinite(n)) {
    throw new UsageError(`${what}: '${value}' is not a number of seconds`);
  }
  return n * 1000;
}

/** An exit status, 0 to 255. */
export function exitCode(value: string, what: string): number {
  const n = /^\d{1,3}$/.test(value) ? Number(value) : NaN;
  if (!(n >= 0 && n <= 255)) {
    throw new UsageError(`${what}: '${value}' is not an exit status 0-255`);
  }
  return n;
}
