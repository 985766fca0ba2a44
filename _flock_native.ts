// The code that loads flock(2) through an FFI (bun:ffi, node:ffi, koffi),
// as JavaScript source in a string: the main thread evaluates it once
// (_flock.ts) and every waiter thread evaluates the same text. A string is
// what bundlers and minifiers leave alone; the source of a function
// (Function.prototype.toString) is not: esbuild's --keep-names wraps it in
// calls to a helper that exists only in the bundle, and a minifier renames
// what it refers to. So this is plain JavaScript that names nothing
// outside itself, with no backquote and no dollar-brace in it.

/** flock(2) and errno through the platform's FFI, with the platform's errno numbers. */
export interface Native {
  flock(fd: number, op: number): number;
  errno(): number;
  readonly EWOULDBLOCK: number;
  readonly EINTR: number;
  readonly via: string;
  /**
   * Interrupting a thread blocked in flock, where it works (Linux): a signal
   * whose handler is a harmless libc function (getpid) installed without
   * SA_RESTART makes the blocked call return EINTR.
   */
  interrupt?: Interrupt | undefined;
}

/** The calls that interrupt a blocked flock; see {@link Native.interrupt}. */
export interface Interrupt {
  /** The calling thread's pthread_t. */
  self(): bigint;
  /** pthread_kill(thread, signal); 0 or an errno. */
  kill(thread: bigint, signal: number): number;
  /**
   * Installs the handler for `signal` unless another one is there:
   * whether the signal is now this package's.
   */
  claim(signal: number): boolean;
}

/**
 * The source of an expression: a function `(require, koffiPath)` that
 * returns a {@link Native}, or throws an Error whose `noFfi` is an
 * `FfiUnavailableReason` (errors.ts). `require` loads "bun:ffi" and koffi (by the absolute
 * `koffiPath`, undefined where koffi was not found).
 */
export const loadNativeSource: string = String.raw`(
function loadNative(req, koffiId) {
  const isBun = typeof globalThis.Bun !== "undefined";
  const platform = globalThis.process?.platform;
  const darwin = platform === "darwin";
  const win = platform === "win32";
  const libc = darwin ? "libSystem.B.dylib" : "libc.so.6";
  const errnoSym = darwin ? "__error" : "__errno_location";
  const EWOULDBLOCK = darwin ? 35 : 11;
  const EINTR = 4;
  // Neither FFI: the caller turns this into the package's FfiUnavailable,
  // which this source, evaluated on its own, cannot name.
  const noFfi = (reason, cause) => Object.assign(new Error("no FFI"), { cause, noFfi: reason });
  if (win) {
    // LockFileEx on the first byte, as zc.lockfile does, so that readers of
    // the pid from byte 1 are not refused by a mandatory Windows lock.
    const ERROR_LOCK_VIOLATION = 33;
    const ERROR_IO_PENDING = 997;
    const FLAGS_EX = 2;
    const FLAGS_NB = 1;
    let lockEx;
    let unlockEx;
    let osHandle;
    let lastError;
    if (isBun) {
      const ffi = req("bun:ffi");
      const k = ffi.dlopen("kernel32.dll", {
        LockFileEx: { args: ["ptr", "u32", "u32", "u32", "u32", "ptr"], returns: "i32" },
        UnlockFileEx: { args: ["ptr", "u32", "u32", "u32", "ptr"], returns: "i32" },
        GetLastError: { args: [], returns: "u32" },
      }).symbols;
      const u = ffi.dlopen("ucrtbase.dll", {
        _get_osfhandle: { args: ["i32"], returns: "ptr" },
      }).symbols;
      lockEx = (h, f, o) => k.LockFileEx(h, f, 0, 1, 0, ffi.ptr(o));
      unlockEx = (h, o) => k.UnlockFileEx(h, 0, 1, 0, ffi.ptr(o));
      osHandle = (fd) => u._get_osfhandle(fd);
      lastError = () => k.GetLastError();
    } else {
      if (koffiId === undefined) throw noFfi("none", undefined);
      const koffi = req(koffiId);
      const k = koffi.load("kernel32.dll");
      const u = koffi.load("ucrtbase.dll");
      const lfe = k.func(
        "int __stdcall LockFileEx(void *, uint32_t, uint32_t, uint32_t, uint32_t, _Inout_ uint8_t *)",
      );
      const ufe = k.func(
        "int __stdcall UnlockFileEx(void *, uint32_t, uint32_t, uint32_t, _Inout_ uint8_t *)",
      );
      const gle = k.func("uint32_t __stdcall GetLastError()");
      const goh = u.func("void *_get_osfhandle(int)");
      lockEx = (h, f, o) => lfe(h, f, 0, 1, 0, o);
      unlockEx = (h, o) => ufe(h, 0, 1, 0, o);
      osHandle = (fd) => goh(fd);
      lastError = () => gle();
    }
    let error = 0;
    return {
      via: isBun ? "bun:ffi kernel32" : "koffi kernel32",
      EWOULDBLOCK,
      EINTR,
      errno: () => error,
      flock(fd, op) {
        const overlapped = new Uint8Array(32);
        const ok = op & 8
          ? unlockEx(osHandle(fd), overlapped)
          : lockEx(osHandle(fd), (op & 2 ? FLAGS_EX : 0) | (op & 4 ? FLAGS_NB : 0), overlapped);
        if (ok) {
          return 0;
        }
        const e = lastError();
        error = e === ERROR_LOCK_VIOLATION || e === ERROR_IO_PENDING ? EWOULDBLOCK : e;
        return -1;
      },
    };
  }
  // struct sigaction of glibc and musl on Linux: the handler at 0, the
  // 128-byte mask at 8, the flags at 136 (0: no SA_RESTART), the restorer,
  // which sigaction() fills in, at 144.
  const SIGACTION_SIZE = 152;
  const FLAGS_AT = 136;
  const linux = platform === "linux";
  // Reads the handler of "signal" through "get", and installs "handler" if
  // none is there (or it is already this package's) through "set".
  const claimWith = (handler, get, set) => (signal) => {
    const old = new Uint8Array(SIGACTION_SIZE);
    if (get(signal, old) !== 0) {
      return false;
    }
    const current = new DataView(old.buffer).getBigUint64(0, true);
    if (current === handler) {
      return true;
    }
    if (current !== 0n) {
      return false;
    }
    const action = new Uint8Array(SIGACTION_SIZE);
    const view = new DataView(action.buffer);
    view.setBigUint64(0, handler, true);
    view.setInt32(FLAGS_AT, 0, true);
    return set(signal, action) === 0;
  };
  if (isBun) {
    const ffi = req("bun:ffi");
    const lib = ffi.dlopen(libc, {
      flock: { args: ["i32", "i32"], returns: "i32" },
      [errnoSym]: { args: [], returns: "ptr" },
      ...(linux
        ? {
          pthread_self: { args: [], returns: "u64" },
          pthread_kill: { args: ["u64", "i32"], returns: "i32" },
          sigaction: { args: ["i32", "ptr", "ptr"], returns: "i32" },
          dlopen: { args: ["ptr", "i32"], returns: "ptr" },
          dlsym: { args: ["ptr", "ptr"], returns: "ptr" },
        }
        : {}),
    }).symbols;
    const where = lib[errnoSym]();
    let interrupt;
    if (linux) {
      const name = new TextEncoder().encode("getpid\0");
      const getpid = BigInt(lib.dlsym(lib.dlopen(null, 1), ffi.ptr(name)));
      interrupt = {
        self: () => BigInt(lib.pthread_self()),
        kill: (thread, signal) => lib.pthread_kill(thread, signal),
        claim: claimWith(
          getpid,
          (signal, old) => lib.sigaction(signal, null, ffi.ptr(old)),
          (signal, action) => lib.sigaction(signal, ffi.ptr(action), null),
        ),
      };
    }
    return {
      via: "bun:ffi",
      EWOULDBLOCK,
      EINTR,
      flock: lib.flock,
      errno: () => ffi.read.i32(where, 0),
      interrupt,
    };
  }
  const builtin = globalThis.process?.getBuiltinModule;
  let nodeFfi;
  try {
    nodeFfi = builtin?.("node:ffi");
  } catch {
    nodeFfi = undefined;
  }
  // deno-lint-ignore no-explicit-any
  const ffi = nodeFfi;
  let ffiDenied = false;
  if (ffi && typeof ffi.dlopen === "function") {
    // Node 26.10 reads "arguments" and "return", and silently ignores the
    // "parameters" and "result" of some of its docs (the function then
    // takes no arguments and returns nothing): give both spellings. A
    // "pointer" comes back as a bigint, which ffi.getInt32 takes.
    // deno-lint-ignore no-explicit-any
    let functions;
    try {
      functions = ffi.dlopen(libc, {
        flock: {
          arguments: ["i32", "i32"],
          return: "i32",
          parameters: ["i32", "i32"],
          result: "i32",
        },
        [errnoSym]: { arguments: [], return: "pointer", parameters: [], result: "pointer" },
        ...(linux
          ? {
            getpid: { arguments: [], return: "i32", parameters: [], result: "i32" },
            pthread_self: { arguments: [], return: "u64", parameters: [], result: "u64" },
            pthread_kill: {
              arguments: ["u64", "i32"],
              return: "i32",
              parameters: ["u64", "i32"],
              result: "i32",
            },
          }
          : {}),
      }).functions;
    } catch (e) {
      // e.g. ERR_ACCESS_DENIED under --permission without --allow-ffi.
      if (e && e.code === "ERR_ACCESS_DENIED") ffiDenied = true;
      functions = undefined;
    }
    if (functions) {
      const where = functions[errnoSym]();
      const flock = functions.flock;
      const errno = () => ffi.getInt32(where, 0);
      // Sanity check of the signatures: flock(-1, LOCK_UN) fails with EBADF
      // (9 on Linux and macOS). Otherwise fall through to koffi.
      if (flock(-1, 8) === -1 && errno() === 9) {
        let interrupt;
        try {
          // sigaction twice, with the buffer in the second or third place.
          const sig = (args) =>
            ffi.dlopen(libc, {
              sigaction: { arguments: args, return: "i32", parameters: args, result: "i32" },
            }).functions.sigaction;
          const read = sig(["i32", "pointer", "buffer"]);
          const write = sig(["i32", "buffer", "pointer"]);
          if (linux && functions.getpid.pointer !== undefined) {
            interrupt = {
              self: () => BigInt(functions.pthread_self()),
              kill: (thread, signal) => functions.pthread_kill(thread, signal),
              claim: claimWith(
                BigInt(functions.getpid.pointer),
                (signal, old) => read(signal, 0n, old),
                (signal, action) => write(signal, action, 0n),
              ),
            };
          }
        } catch {
          interrupt = undefined;
        }
        return { via: "node:ffi", EWOULDBLOCK, EINTR, flock, errno, interrupt };
      }
    }
  }
  let koffi;
  try {
    if (koffiId === undefined) throw new Error("the npm package 'koffi' was not found");
    koffi = req(koffiId);
  } catch (cause) {
    // Node's permission model refuses addons without --allow-addons.
    const code = cause && cause.code;
    const denied = ffiDenied || code === "ERR_DLOPEN_DISABLED" || code === "ERR_ACCESS_DENIED";
    throw noFfi(denied ? "denied" : ffi ? "unusable" : "none", cause);
  }
  const lib = koffi.load(libc);
  let interrupt;
  if (linux) {
    const self = lib.func("uint64_t pthread_self()");
    const kill = lib.func("int pthread_kill(uint64_t, int)");
    const sigaction = lib.func("int sigaction(int, void *, void *)");
    const dlopen = lib.func("void *dlopen(const char *, int)");
    const dlsym = lib.func("void *dlsym(void *, const char *)");
    interrupt = {
      self: () => BigInt(self()),
      kill: (thread, signal) => kill(thread, signal),
      claim: claimWith(
        BigInt(koffi.address(dlsym(dlopen(null, 1), "getpid"))),
        (signal, old) => sigaction(signal, null, old),
        (signal, action) => sigaction(signal, action, null),
      ),
    };
  }
  return {
    via: "koffi",
    EWOULDBLOCK,
    EINTR,
    flock: lib.func("int flock(int, int)"),
    errno: () => koffi.errno(),
    interrupt,
  };
}
)`;
