// Command-line parsing for cli.ts: getopt's rules (short options bundle,
// "-w5" and "-w 5", "--wait=5" and "--wait 5", "--" ends the options, the
// first operand ends them too, so that a command's own options pass
// through) with one error class whose message is the one line a user sees.

/** A misuse of the command line: exit status 64 (EX_USAGE) and this message. */
export class UsageError extends Error {
  override name = "UsageError";
}

/** One option: its names, and whether it takes a value ("required") or may take one ("optional", `--x=v` only). */
export interface OptionSpec {
  short?: string;
  long: string;
  value?: "required" | "optional";
}

/** What parse() found: options by long name (true, or the value), then the operands in order. */
export interface Parsed {
  options: Map<string, string | true>;
  operands: string[];
  /** Whether "--" was seen; the operands after it are `operands.slice(dashAt)`. */
  dashAt: number | undefined;
}

/**
 * Reads `args` by `specs`. Options stop at "--" or, when `stopAtOperand`,
 * at the first operand; after `operandsBeforeStop` operands when that is
 * given (flock's FILE comes before the command).
 */
export function parse(
  args: readonly string[],
  specs: readonly OptionSpec[],
  stopAfterOperands = Infinity,
): Parsed {
  const options = new Map<string, string | true>();
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
      const spec = specs.find((s) => s.long === name);
      if (!spec) throw new UsageError(`unknown option '--${name}'`);
      if (eq !== -1) {
        if (!spec.value) throw new UsageError(`option '--${name}' takes no value`);
        options.set(spec.long, arg.slice(eq + 1));
      } else if (spec.value === "required") {
        if (i + 1 >= args.length) throw new UsageError(`option '--${name}' needs a value`);
        options.set(spec.long, args[++i]!);
      } else {
        options.set(spec.long, true);
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
            options.set(spec.long, rest);
          } else if (i + 1 < args.length) {
            options.set(spec.long, args[++i]!);
          } else {
            throw new UsageError(`option '-${letter}' needs a value`);
          }
          break;
        }
        options.set(spec.long, true);
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
  return { options, operands, dashAt };
}

/** A number of seconds from the command line, as milliseconds; `what` names the option in the error. */
export function seconds(value: string, what: string): number {
  const n = /^\s*(\d+(\.\d*)?|\.\d+)\s*$/.test(value) ? Number(value) : NaN;
  if (!Number.isFinite(n)) throw new UsageError(`${what}: '${value}' is not a number of seconds`);
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
