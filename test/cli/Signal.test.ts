/**
 * A worker started the way the docs show, `npm run --silent fibergraph -- worker &`, then
 * `kill -TERM $!`: the signal goes to npm, and must reach the worker, which drains and exits 0;
 * no worker is left behind holding its store sessions. (Linux: leftover processes are found
 * through /proc.)
 */
import { assert, describe, it } from "@effect/vitest"
import { Deferred, Effect, Option } from "effect"
import { spawn } from "node:child_process"
import { readdirSync, readFileSync } from "node:fs"
import { fileURLToPath } from "node:url"
import { built, logLines } from "./Process.js"

const root = fileURLToPath(new URL("../../", import.meta.url))

/** The pids of the processes whose command line contains `marker`. */
const processesWith = (marker: string): ReadonlyArray<number> =>
  readdirSync("/proc").flatMap((entry) => {
    if (!/^\d+$/.test(entry)) return []
    try {
      return readFileSync(`/proc/${entry}/cmdline`, "utf8").includes(marker) ? [Number(entry)] : []
    } catch {
      return []
    }
  })

describe.runIf(process.platform === "linux")("the worker under npm", () => {
  it.scopedLive("SIGTERM to `npm run fibergraph -- worker` reaches the worker: it drains, exits 0, and nothing is left running", () =>
    Effect.gen(function*() {
      yield* built
      const workerId = `signal-test-${process.pid}-${Date.now()}`
      const exited = yield* Deferred.make<{ readonly code: number | null; readonly signal: NodeJS.Signals | null }>()
      const listening = yield* Deferred.make<void>()
      let stderr = ""
      const npm = yield* Effect.acquireRelease(
        Effect.sync(() =>
          spawn(
            process.platform === "win32" ? "npm.cmd" : "npm",
            ["run", "--silent", "fibergraph", "--", "worker", "--store", "memory://", "--graphs", "test/cli/graphs.ts", "--port", "0", "--worker-id", workerId],
            { cwd: root, stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, FIBERGRAPH_GRAPHS: "", FIBERGRAPH_STORE: "" } }
          )
        ),
        () => Effect.sync(() => processesWith(workerId).forEach((pid) => process.kill(pid, "SIGKILL")))
      )
      npm.stdout.resume()
      npm.stderr.on("data", (chunk: Buffer) => {
        stderr += chunk.toString()
        if (logLines(stderr).some((l) => l.annotations?.["event"] === "WorkerStarted")) Deferred.unsafeDone(listening, Effect.void)
      })
      npm.on("exit", (code, signal) => Deferred.unsafeDone(exited, Effect.succeed({ code, signal })))

      const started = yield* Deferred.await(listening).pipe(Effect.timeout("60 seconds"), Effect.option)
      assert.isTrue(Option.isSome(started), `the worker did not start; stderr:\n${stderr}`)
      assert.isAbove(processesWith(workerId).length, 0)

      npm.kill("SIGTERM")
      const exit = yield* Deferred.await(exited).pipe(Effect.timeout("30 seconds"), Effect.option)
      assert.deepStrictEqual(Option.getOrUndefined(exit), { code: 0, signal: null }, stderr)
      assert.include(stderr, "stopped; released 0 job(s)")
      assert.include(stderr, "worker process exiting")
      yield* Effect.sleep("200 millis")
      assert.deepStrictEqual(processesWith(workerId), [], "no worker process is left running")
    }), 90_000)
})
