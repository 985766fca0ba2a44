// The filestore command: the same cases under util-linux flock(1) and
// `filestore lock`, who holds a lock, the queue from a bash script, and the
// one-line usage errors. The command runs on the runtime running the tests.
import { spawn, spawnSync } from "node:child_process";
import { chmodSync, existsSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { builtinModules } from "node:module";
import { join } from "node:path";
import assert from "node:assert/strict";
import { test } from "node:test";
import { Lock } from "../lock.ts";
import { command, root, runtimeName, sleep, tempDir } from "./_util.ts";

const cli = command(runtimeName, "cli.ts");
// Used unquoted in bash ($L): the project's path must hold no blank.
const cliLine = [cli[0], ...cli[1]].join(" ");
const hasFlock = spawnSync("flock", ["--version"]).status === 0;
const hasPython = spawnSync("python3", ["-c", "import fcntl"]).status === 0;
// util-linux script(1) runs a command on a new pseudo-terminal, in its
// foreground process group.
const hasScript = spawnSync("script", ["--version"]).status === 0;
const onDeno = runtimeName === "deno";
const canBeNobody = process.getuid?.() === 0 &&
  spawnSync("setpriv", ["--reuid=nobody", "--regid=nogroup", "--clear-groups", "true"]).status ===
    0;

function quote(s: string): string {
  return `'${s.replaceAll("'", `'\\''`)}'`;
}

interface Result {
  code: number | null;
  stdout: string;
  stderr: string;
  ms: number;
}

// "$D/hold" sleeps for 30 s and notes its pid, which the script kills on
// its way out, whoever started it: flock(1) leaves its command running when
// it is killed itself.
const PREAMBLE =
  `printf '#!/bin/sh\\necho $$ >>"%s/kids"\\nexec sleep 30 >/dev/null 2>&1\\n' "$D" >"$D/hold"; ` +
  `chmod +x "$D/hold"; trap 'kill $(cat "$D/kids" 2>/dev/null) 2>/dev/null' EXIT; `;

/**
 * Runs a bash script with $F (a lock file), $D (a directory) and $L (the
 * lock command) set, after PREAMBLE when $D is set.
 */
function bash(script: string, env: Record<string, string>): Promise<Result> {
  return new Promise((resolve) => {
    const started = performance.now();
    const child = spawn("bash", ["-c", (env.D ? PREAMBLE : "") + script], {
      env: { ...process.env, ...env },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let stdout = "";
    let stderr = "";
    child.stdout.setEncoding("utf8").on("data", (s: string) => stdout += s);
    child.stderr.setEncoding("utf8").on("data", (s: string) => stderr += s);
    child.on("close", (code) => resolve({ code, stdout, stderr, ms: performance.now() - started }));
  });
}

const TOOLS = {
  "flock(1)": "flock",
  "filestore lock": `${cliLine} lock`,
};

// Waits (in bash, at most 10 s) until somebody holds $F: a non-blocking
// shared (or exclusive) try fails.
const HELD = 'for i in $(seq 500); do flock -n -s "$F" true || break; sleep 0.02; done';
const SHARED_HELD = 'for i in $(seq 500); do flock -n -x "$F" true || break; sleep 0.02; done';

interface Case {
  name: string;
  script: string;
  /** The exit status, by tool where they differ on purpose. */
  code: number | Record<keyof typeof TOOLS, number>;
  /** Waited at least this long (ms) before answering. */
  waited?: number;
  deno?: string;
}

const CASES: Case[] = [
  {
    name: "-n on a held lock fails at once with 1",
    script: `$L "$F" "$D/hold" & ${HELD}; $L -n "$F" true`,
    code: 1,
  },
  {
    name: "-w 0.2 gives up after the time with 1",
    script: `$L "$F" "$D/hold" & ${HELD}; $L -w 0.2 "$F" true`,
    code: 1,
    waited: 200,
  },
  {
    name: "-w 0 is -n",
    script: `$L "$F" "$D/hold" & ${HELD}; $L -w 0 "$F" true`,
    code: 1,
  },
  {
    name: "-E 42 sets the conflict status",
    script: `$L "$F" "$D/hold" & ${HELD}; $L -n -E 42 "$F" true`,
    code: 42,
  },
  {
    name: "a waiter gets the lock when the holder ends",
    script: `$L "$F" sleep 0.3 & ${HELD}; $L "$F" true`,
    code: 0,
  },
  {
    name: "-s with -s: both hold",
    script: `$L -s "$F" "$D/hold" & ${SHARED_HELD}; $L -s -n "$F" true`,
    code: 0,
  },
  {
    name: "-x against -s is refused",
    script: `$L -s "$F" "$D/hold" & ${SHARED_HELD}; $L -x -n "$F" true`,
    code: 1,
  },
  {
    name: "-s against -x is refused",
    script: `$L "$F" "$D/hold" & ${HELD}; $L -s -n "$F" true`,
    code: 1,
  },
  {
    name: "the last of -s and -x wins",
    script: `$L "$F" "$D/hold" & ${HELD}; $L -x -s -n "$F" true`,
    code: 1,
  },
  {
    name: "-x after an option's separate value still wins: refused by a shared holder",
    script: `$L -s "$F" "$D/hold" & ${SHARED_HELD}; $L -s -w 0.2 -x "$F" true`,
    code: 1,
  },
  {
    name: "-s after an option's separate value still wins: shares with a shared holder",
    script: `$L -s "$F" "$D/hold" & ${SHARED_HELD}; $L -E 7 -w 0.2 -s "$F" true`,
    code: 0,
  },
  {
    name: "long options may be shortened (--nonb, --excl) and -w reads exponents",
    script:
      `$L "$F" "$D/hold" & ${HELD}; $L --excl --nonb "$F" true; a=$?; $L -w 1e-1 "$F" true; ` +
      `b=$?; [ $a = 1 ] && [ $b = 1 ]`,
    code: 0,
  },
  {
    name: "without -o what the command leaves running keeps the lock",
    script: `$L "$F" sh -c 'sleep 2 >/dev/null 2>&1 & exit 0'; flock -n "$F" true`,
    code: 1,
    deno: "Deno cannot hand a descriptor to a child process: the lock stays with filestore",
  },
  {
    name: "-o: what the command leaves running does not keep the lock",
    script: `$L -o "$F" sh -c 'sleep 2 >/dev/null 2>&1 & exit 0'; flock -n "$F" true`,
    code: 0,
  },
  {
    name: "-c runs a string through the shell",
    script: `$L "$F" -c 'echo "$((6 * 7))"; exit 5'`,
    code: 5,
  },
  {
    name: "the command's exit status passes through",
    script: `$L "$F" sh -c 'exit 7'`,
    code: 7,
  },
  {
    name: "a command ended by a signal gives 128 + its number",
    script: `$L "$F" sh -c 'kill -TERM $$'`,
    code: 143,
  },
  {
    name: "a command that does not exist gives 69",
    script: `$L "$F" /nonexistent/command`,
    code: 69,
  },
  {
    name: "a lock file that cannot be opened gives 66",
    script: `$L "$D/missing/x.lock" true`,
    code: 66,
  },
  {
    // flock(1) dies of the SIGTERM and leaves its command running;
    // filestore passes it on and reports what the command did.
    name: "SIGTERM to the lock command",
    script: `$L "$F" sh -c 'echo $$ >>"$D/kids"; trap "kill \\$!; exit 5" TERM; ` +
      `sleep 30 >/dev/null 2>&1 & wait' & l=$!; ${HELD}; for i in $(seq 500); do [ -s "$D/kids" ] && break; sleep 0.02; done; ` +
      `kill -TERM $l; wait $l`,
    code: { "flock(1)": 143, "filestore lock": 5 },
  },
  {
    name: "the lock is free once the command was SIGKILLed",
    script: `$L "$F" sh -c 'echo $$ >"$D/pid"; exec sleep 30' & l=$!; ${HELD}; ` +
      `for i in $(seq 500); do [ -s "$D/pid" ] && break; sleep 0.02; done; kill -KILL "$(cat "$D/pid")"; wait $l; ` +
      `c=$?; [ $c = 137 ] || exit 100; flock -n "$F" true`,
    code: 0,
  },
];

for (const c of CASES) {
  for (const [tool, program] of Object.entries(TOOLS) as [keyof typeof TOOLS, string][]) {
    const skip = tool === "flock(1)" && !hasFlock
      ? "needs util-linux flock(1)"
      : !hasFlock
      ? "needs util-linux flock(1) to watch the lock"
      : tool === "filestore lock" && onDeno && c.deno
      ? c.deno
      : false;
    test(`${tool}: ${c.name}`, { skip }, async () => {
      using dir = tempDir();
      const r = await bash(c.script, { F: join(dir.path, "x.lock"), D: dir.path, L: program });
      const expected = typeof c.code === "number" ? c.code : c.code[tool];
      assert.equal(r.code, expected, `stderr: ${r.stderr}`);
      if (c.waited) assert.ok(r.ms >= c.waited, `answered after ${r.ms} ms`);
    });
  }
}

// Deno starts its Node layer on the first node: import (15-23 ms, most of a
// run). An import map that sends every node: module to a file that throws
// makes any such import in `filestore lock` fail it.
test(
  "filestore lock on Deno imports no node: module, when it runs a command and when it is refused",
  {
    skip: onDeno ? false : "Deno only: Bun and Node use node: modules",
  },
  async () => {
    using dir = tempDir();
    const poison = join(dir.path, "poison.js");
    writeFileSync(poison, 'throw new Error("a node: module was imported");\n');
    const names = builtinModules.map((n) => n.replace(/^node:/, ""));
    const map = join(dir.path, "map.json");
    writeFileSync(
      map,
      JSON.stringify({ imports: Object.fromEntries(names.map((n) => [`node:${n}`, poison])) }),
    );
    const denoRun = (...args: string[]) =>
      spawnSync(cli[0], ["run", "-A", "--quiet", "--import-map", map, ...args], {
        encoding: "utf8",
      });
    // The map does catch an import.
    const importsFs = join(dir.path, "imports_fs.ts");
    writeFileSync(importsFs, 'import "node:fs";\n');
    const caught = denoRun(importsFs);
    assert.notEqual(caught.status, 0);
    assert.match(caught.stderr, /a node: module was imported/);

    const file = join(dir.path, "x.lock");
    const ran = denoRun(join(root, "cli.ts"), "lock", "-n", file, "sh", "-c", "exit 3");
    assert.equal(ran.status, 3, ran.stderr);
    await using lock = new Lock(file);
    await lock.acquire();
    const refused = denoRun(join(root, "cli.ts"), "lock", "-n", file, "true");
    assert.equal(refused.status, 1, refused.stderr);
    assert.match(refused.stderr, new RegExp(`locked by pid ${process.pid} \\(exclusive\\)`));
  },
);

// The command counts the SIGINTs it gets (the first within 10 s, then any
// for 0.5 s more) and exits with 10 + the count. Two SIGINTs close together
// can merge into one (a signal is pending once), so a second delivery may
// go unseen; one that is seen is a real second delivery.
const COUNT_SIGINTS = `
import signal, sys, time
n = 0
def on_int(s, f):
    global n
    n += 1
signal.signal(signal.SIGINT, on_int)
open(sys.argv[1], "w").write("ready")
end = time.time() + 10
while time.time() < end and n == 0:
    time.sleep(0.01)
end = time.time() + 0.5
while time.time() < end:
    time.sleep(0.01)
sys.exit(10 + n)
`;

test("filestore lock: Ctrl-C in a terminal reaches the command once, and filestore waits for it", {
  skip: !hasScript ? "needs util-linux script(1)" : !hasPython ? "needs python3" : false,
}, async () => {
  using dir = tempDir();
  const counter = join(dir.path, "count_sigints.py");
  writeFileSync(counter, COUNT_SIGINTS);
  const ready = join(dir.path, "ready");
  // exec: no shell stays between script(1) and filestore. script runs the
  // line with $SHELL, /bin/sh where that is unset, and dash, unlike bash,
  // dies of the SIGINT itself once its child has ended (status 130).
  const line = "exec " +
    [cli[0], ...cli[1], "lock", join(dir.path, "x.lock"), "python3", counter, ready]
      .map(quote).join(" ");
  // Ctrl-C typed into the terminal: the line discipline sends SIGINT to the
  // whole foreground group, filestore and the command alike.
  const child = spawn("script", ["-qec", line, "/dev/null"], { stdio: ["pipe", "pipe", "pipe"] });
  let output = "";
  child.stdout.setEncoding("utf8").on("data", (s: string) => output += s);
  child.stderr.setEncoding("utf8").on("data", (s: string) => output += s);
  const exited = new Promise<number | null>((resolve) => child.on("close", resolve));
  for (let i = 0; i < 1000 && !existsSync(ready); i++) await sleep(20);
  assert.ok(existsSync(ready), `the command did not start: ${output}`);
  child.stdin.write("\x03");
  const code = await exited;
  child.stdin.destroy();
  assert.equal(code, 11, `10 + the SIGINTs the command got; output: ${output}`);
});

test("filestore lock: a refusal names the holder, its mode and command", {
  skip: hasFlock ? false : "needs util-linux flock(1)",
}, async () => {
  using dir = tempDir();
  const r = await bash(
    `flock "$F" "$D/hold" & h=$!; ${HELD}; echo "pid $h"; $L -n "$F" true`,
    { F: join(dir.path, "x.lock"), D: dir.path, L: `${cliLine} lock` },
  );
  assert.equal(r.code, 1);
  const pid = /pid (\d+)/.exec(r.stdout)![1];
  const lines = r.stderr.trim().split("\n");
  assert.equal(lines.length, 1, r.stderr);
  assert.match(lines[0]!, new RegExp(`locked by pid ${pid} \\(exclusive\\): flock .*/hold`));
  assert.match(lines[0]!, /running since \d{4}-\d\d-\d\dT/);
});

test("filestore lock --pid writes the holder's pid and host into the file", async () => {
  using dir = tempDir();
  const file = join(dir.path, "x.lock");
  const r = await bash(`$L --pid "$F" sh -c 'cat "$F"'`, {
    F: file,
    D: dir.path,
    L: `${cliLine} lock`,
  });
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /^ \d+ \S+\n$/);
  assert.equal(readFileSync(file, "utf8"), r.stdout, "the content stays after release");
});

test("filestore lock --pid refuses a lock file with another name and leaves both as they were", async () => {
  using dir = tempDir();
  const precious = join(dir.path, "precious");
  writeFileSync(precious, "PRECIOUS\n");
  const r = await bash(`ln "$D/precious" "$F"; $L --pid "$F" true`, {
    F: join(dir.path, "x.lock"),
    D: dir.path,
    L: `${cliLine} lock`,
  });
  assert.equal(r.code, 66, r.stderr);
  assert.match(r.stderr, /more than one name/);
  assert.equal(readFileSync(precious, "utf8"), "PRECIOUS\n");
});

test("filestore lock --pid on a lock file it may not write exits 66 with one line", {
  skip: canBeNobody ? false : "needs root and setpriv(1) to run as nobody",
}, async () => {
  using dir = tempDir();
  const file = join(dir.path, "root.lock");
  writeFileSync(file, "", { mode: 0o644 });
  chmodSync(dir.path, 0o755);
  const r = await bash(
    `setpriv --reuid=nobody --regid=nogroup --clear-groups ${cliLine} lock --pid "$F" true`,
    { F: file, D: dir.path },
  );
  assert.equal(r.code, 66, r.stderr);
  assert.equal(r.stderr.trimEnd().split("\n").length, 1, r.stderr);
});

test("file names and command lines are shown on one line, with control characters escaped", async () => {
  using dir = tempDir();
  const r = await bash(`$L holders "$D/a\${NL}b"; $L lock "$D/x"$'\\u202e' sh -c 'exit 0'`, {
    D: dir.path,
    L: cliLine,
    NL: "\n",
  });
  const lines = r.stderr.trimEnd().split("\n");
  assert.equal(lines.length, 1, r.stderr);
  assert.match(lines[0]!, /a\\x0ab/);
});

test("a symbolic link at the lock path is refused with 66, and put of a missing file with 66", async () => {
  using dir = tempDir();
  const env = { D: dir.path, L: cliLine };
  const link = await bash(`ln -s "$D/target" "$D/link.lock"; $L lock "$D/link.lock" true`, env);
  assert.equal(link.code, 66, link.stderr);
  assert.equal(existsSync(join(dir.path, "target")), false, "the link was not followed");
  const put = await bash(`$L put "$D/s" "$D/missing"`, env);
  assert.equal(put.code, 66, put.stderr);
  assert.match(put.stderr, /cannot read .*missing: no such file/);
});

test("filestore holders: a Python fcntl.flock, a flock(1) and a library holder, with their modes", {
  skip: !hasPython || !hasFlock ? "needs python3 and util-linux flock(1)" : false,
}, async () => {
  using dir = tempDir();
  const file = join(dir.path, "x.lock");
  writeFileSync(file, "");
  const python = spawn("python3", [
    "-c",
    "import fcntl,sys,time\nf=open(sys.argv[1],'a')\nfcntl.flock(f,fcntl.LOCK_SH)\nprint('ready',flush=True)\ntime.sleep(60)",
    file,
  ], { stdio: ["ignore", "pipe", "inherit"] });
  const flock = spawn("flock", ["-s", "-o", file, "sleep", "60"], { stdio: "ignore" });
  try {
    await new Promise((resolve) => python.stdout.once("data", resolve));
    const lock = new Lock(file, { shared: true });
    await lock.acquire();
    try {
      for (let i = 0; i < 200 && !lockedBy(file, flock.pid!); i++) await wait(20);
      const r = await bash(`$L holders "$F"`, { F: file, D: dir.path, L: cliLine });
      assert.equal(r.code, 0, r.stderr);
      const rows = r.stdout.trim().split("\n").map((l) => l.split(" "));
      const byPid = new Map(rows.map((row) => [Number(row[0]), row]));
      assert.equal(byPid.get(python.pid!)?.[1], "shared");
      assert.match(byPid.get(python.pid!)!.slice(2).join(" "), /python3 -c /);
      assert.equal(byPid.get(flock.pid!)?.[1], "shared");
      assert.match(byPid.get(flock.pid!)?.[2] ?? "", /(^|\/)flock$/);
      assert.equal(byPid.get(process.pid)?.[1], "shared");
      assert.equal(rows.length, 3, r.stdout);
      const json = await bash(`$L holders --json "$F"`, { F: file, D: dir.path, L: cliLine });
      const parsed = JSON.parse(json.stdout) as { pid: number; shared: boolean }[];
      assert.deepEqual(
        parsed.map((h) => h.pid).sort(),
        [python.pid, flock.pid, process.pid].sort(),
      );
    } finally {
      await lock.release();
    }
    python.kill();
    flock.kill();
    await Promise.all([exit(python), exit(flock)]);
    const none = await bash(`$L holders "$F"`, { F: file, D: dir.path, L: cliLine });
    assert.equal(none.code, 1);
    assert.equal(none.stdout, "");
  } finally {
    python.kill("SIGKILL");
    flock.kill("SIGKILL");
  }
});

test("filestore holders names an exclusive holder", async () => {
  using dir = tempDir();
  const file = join(dir.path, "x.lock");
  const lock = new Lock(file);
  await lock.acquire();
  try {
    const r = await bash(`$L holders "$F"`, { F: file, D: dir.path, L: cliLine });
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout.split(" ").slice(0, 2).join(" "), `${process.pid} exclusive`);
  } finally {
    await lock.release();
  }
});

// 1,000 messages under Deno (the main target); each message costs two
// process starts (put, claim), so Bun and Node run 100 to keep the suite short.
const MESSAGES = runtimeName === "deno" ? 1000 : 100;

test(`filestore put/claim from bash: 4 claim loops take ${MESSAGES} messages, each exactly once`, async () => {
  using dir = tempDir();
  const r = await bash(
    `bash "${join(root, "tests/fixtures/cli_queue.sh")}" "$D" ${MESSAGES} ${cliLine}`,
    {
      D: dir.path,
    },
  );
  assert.equal(r.code, 0);
  assert.equal(r.stderr, "");
  const done = readFileSync(join(dir.path, "done.log"), "utf8").trim().split("\n").sort();
  const expected = Array.from({ length: MESSAGES }, (_, i) => `message ${i + 1}`).sort();
  assert.deepEqual(done, expected);
  for (const area of ["new", "cur", "tmp"]) {
    assert.deepEqual(readdirSync(join(dir.path, "store", area)), [], `${area} is empty`);
  }
});

test("filestore claim: a failed command releases the message, a killed one comes back", async () => {
  using dir = tempDir();
  const env = { D: dir.path, L: cliLine };
  assert.equal((await bash(`echo one | $L put "$D/s"`, env)).code, 0);
  const failed = await bash(`$L claim "$D/s" -- sh -c 'exit 3'`, env);
  assert.equal(failed.code, 3);
  assert.equal(readdirSync(join(dir.path, "s", "new")).length, 1, "released to new");
  const killed = await bash(`$L claim "$D/s" -- sh -c 'kill -KILL $$'`, env);
  assert.equal(killed.code, 137);
  const listed = await bash(`$L list "$D/s"`, env);
  assert.equal(listed.stdout.trim().split("\n").length, 1, listed.stdout);
  const got = await bash(`$L claim "$D/s" -- cat`, env);
  assert.equal(got.code, 0);
  assert.equal(got.stdout, "one\n");
  assert.equal((await bash(`$L claim "$D/s" -- cat`, env)).code, 1, "nothing left");
});

test("filestore claim: a consumer and its command SIGKILLed: recover gives the message back", async () => {
  using dir = tempDir();
  const env = { D: dir.path, L: cliLine };
  await bash(`echo two | $L put "$D/s"`, env);
  const r = await bash(
    `$L claim "$D/s" -- sh -c 'echo $$ >>"$D/kids"; echo $PPID >"$D/pid"; exec sleep 30 >/dev/null 2>&1' & ` +
      `for i in $(seq 500); do [ -s "$D/pid" ] && break; sleep 0.02; done; ` +
      `kill -KILL "$(cat "$D/pid")" "$(cat "$D/kids")"; sleep 0.1; $L recover "$D/s"`,
    env,
  );
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /\/new\/.*\.retry1\n$/);
  const got = await bash(`$L claim "$D/s" -- cat`, env);
  assert.equal(got.stdout, "two\n");
});

test("filestore watch ends quietly when its reader goes away", async () => {
  using dir = tempDir();
  const env = { D: dir.path, L: cliLine };
  const r = await bash(
    `echo a | $L put "$D/s" >/dev/null; ($L watch "$D/s" | head -1 >"$D/first"; ` +
      `echo "\${PIPESTATUS[0]}" >"$D/status") & p=$!; ` +
      `for i in $(seq 500); do [ -s "$D/first" ] && break; sleep 0.02; done; ` +
      `for i in 1 2 3; do echo b | $L put "$D/s" >/dev/null; sleep 0.3; done; ` +
      `for i in $(seq 500); do [ -s "$D/status" ] && break; sleep 0.02; done; cat "$D/status"`,
    env,
  );
  assert.equal(r.stdout.trim(), "141", r.stderr);
  assert.equal(r.stderr, "");
});

test(
  "filestore claim: the command holds the claim, so a killed filestore does not hand it out twice",
  {
    skip: onDeno ? "Deno cannot hand a descriptor to a child process" : false,
  },
  async () => {
    using dir = tempDir();
    const env = { D: dir.path, L: cliLine };
    await bash(`echo three | $L put "$D/s"`, env);
    const r = await bash(
      `$L claim "$D/s" -- sh -c 'echo $$ >>"$D/kids"; echo $PPID >"$D/pid"; exec sleep 30 >/dev/null 2>&1' & ` +
        `for i in $(seq 500); do [ -s "$D/pid" ] && break; sleep 0.02; done; kill -KILL "$(cat "$D/pid")"; ` +
        `sleep 0.1; $L recover "$D/s"; echo "--"; $L claim "$D/s" -- cat; echo "claim $?"`,
      env,
    );
    assert.equal(r.stdout, "--\nclaim 1\n", r.stderr);
  },
);

test("filestore claim --max-deliveries: a message its command keeps failing on goes to failed", async () => {
  using dir = tempDir();
  const env = { D: dir.path, L: cliLine };
  await bash(`echo four | $L put "$D/s"`, env);
  const r = await bash(
    `for i in 1 2 3; do $L claim "$D/s" --max-deliveries 2 -- sh -c 'kill -KILL $$'; echo $?; done`,
    env,
  );
  assert.equal(r.stdout, "137\n137\n1\n", r.stderr);
  assert.equal(readdirSync(join(dir.path, "s", "failed")).length, 1);
  assert.deepEqual(readdirSync(join(dir.path, "s", "new")), []);
});

test("filestore watch prints arrivals, list and cleanup print paths", async () => {
  using dir = tempDir();
  const store = join(dir.path, "s");
  const env = { D: dir.path, L: cliLine };
  const first = (await bash(`echo a | $L put "$D/s"`, env)).stdout.trim();
  assert.equal(first.startsWith(join(store, "new") + "/"), true, first);
  const [bin, argv] = cli;
  const watcher = spawn(bin, [...argv, "watch", store], { stdio: ["ignore", "pipe", "inherit"] });
  let seen = "";
  watcher.stdout.setEncoding("utf8").on("data", (s: string) => seen += s);
  try {
    for (let i = 0; i < 500 && !seen.includes(first); i++) await wait(20);
    const second = (await bash(`printf b | $L put "$D/s" -`, env)).stdout.trim();
    for (let i = 0; i < 500 && !seen.includes(second); i++) await wait(20);
    assert.deepEqual(seen.trim().split("\n"), [first, second]);
    const listed = await bash(`$L list --json "$D/s" new`, env);
    assert.deepEqual(JSON.parse(listed.stdout), [first, second].sort());
    const cleaned = await bash(`$L cleanup "$D/s"`, env);
    assert.equal(cleaned.code, 0);
    assert.equal(cleaned.stdout, "");
  } finally {
    watcher.kill("SIGTERM");
  }
  assert.equal(await exit(watcher), 143);
});

const USAGE_ERRORS: string[][] = [
  [],
  ["frobnicate"],
  ["lock"],
  ["lock", "x.lock"],
  ["lock", "-q", "x.lock", "true"],
  ["lock", "-w"],
  ["lock", "-w", "soon", "x.lock", "true"],
  ["lock", "-E", "300", "x.lock", "true"],
  ["lock", "-s", "--pid", "x.lock", "true"],
  ["lock", "x.lock", "-c"],
  ["lock", "-c", "true", "x.lock", "false"],
  ["holders"],
  ["holders", "a", "b"],
  ["put"],
  ["put", "s", "a", "b"],
  ["claim", "s"],
  ["claim", "s", "--"],
  ["claim", "--wait=later", "s", "--", "true"],
  ["claim", "--max-deliveries", "0", "s", "--", "true"],
  ["list", "s", "done"],
  ["recover"],
  ["cleanup", "s", "--older-than", "-1"],
  ["watch"],
  ["list", "--verbose", "s"],
];

test("every usage error exits 64 with one line on stderr", async () => {
  using dir = tempDir();
  for (const args of USAGE_ERRORS) {
    const r = await bash(`cd "$D" && ${cliLine} "$@"`.replace('"$@"', args.map(quote).join(" ")), {
      D: dir.path,
    });
    assert.equal(r.code, 64, `${args.join(" ")}: ${r.stderr}`);
    assert.equal(r.stderr.trimEnd().split("\n").length, 1, `${args.join(" ")}: ${r.stderr}`);
    assert.doesNotMatch(r.stderr, /\bat .*:\d+:\d+/, "no stack trace");
  }
  assert.equal(existsSync(join(dir.path, "x.lock")), false, "no lock file was made");
  assert.equal(existsSync(join(dir.path, "s")), false, "no store was made");
});

test("every command has --help with an example", async () => {
  for (const name of ["lock", "holders", "put", "claim", "list", "recover", "cleanup", "watch"]) {
    const r = await bash(`${cliLine} ${name} --help`, {});
    assert.equal(r.code, 0, name);
    assert.match(r.stdout, /^Usage: /, name);
    assert.match(r.stdout, /Example:\n {2}\S/, name);
  }
});

function lockedBy(file: string, pid: number): boolean {
  const r = spawnSync("bash", ["-c", `${cliLine} holders "$0"`, file], { encoding: "utf8" });
  return r.stdout.split("\n").some((l) => l.startsWith(`${pid} `));
}

function wait(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function exit(child: ReturnType<typeof spawn>): Promise<number | null> {
  if (child.exitCode !== null || child.signalCode !== null) {
    return Promise.resolve(child.exitCode ?? 128 + (child.signalCode === "SIGTERM" ? 15 : 9));
  }
  return new Promise((resolve) =>
    child.once("exit", (code, signal) => resolve(code ?? 128 + (signal === "SIGTERM" ? 15 : 9)))
  );
}
