/**
 * What every workload shares: the runtime layers (built once per workload), timing, memory
 * sampling, and the correctness checks that make a run count; for the server workloads (W4, W4b,
 * W6) scratch databases, the submitting runtime, and worker processes (`worker-child.ts`).
 */
import * as SqlClient from "@effect/sql/SqlClient"
import { PgClient } from "@effect/sql-pg"
import { spawn } from "node:child_process"
import { readFileSync } from "node:fs"
import { performance } from "node:perf_hooks"
import { fileURLToPath } from "node:url"
import { runInNewContext } from "node:vm"
import { setFlagsFromString } from "node:v8"
import { Clock, Config, Console, Context, Data, Deferred, Duration, Effect, Either, Exit, FiberId, Layer, Logger, Redacted, Schema, type Scope } from "effect"
import { CircuitBreaker, Migrations, Runner, RunStoreMemory, RunStoreSql, WorkQueueSql } from "../src/index.js"
import type { RunStore } from "../src/services/RunStore.js"
import type { WorkQueue } from "../src/services/WorkQueue.js"

/** A workload whose result was wrong: its timing is worthless. */
export class BenchCheckFailed extends Data.TaggedError("BenchCheckFailed")<{
  readonly workload: string
  readonly detail: string
}> {
  override get message() {
    return `${this.workload}: ${this.detail}`
  }
}

/** A benchmark workload: its name and the program that measures it and returns the report fields. */
export interface Workload {
  readonly name: string
  readonly run: Effect.Effect<Record<string, unknown>, unknown, Runner.Runner>
}

/** Logs go to stderr, so stdout carries only the one JSON report line. */
export const StderrLogger = Logger.replace(Logger.defaultLogger, Logger.withConsoleError(Logger.logfmtLogger))

/** The runtime under test: Runner over the in-memory RunStore and the process's circuit breakers. */
export const BenchLayer: Layer.Layer<Runner.Runner> = Runner.layer().pipe(
  Layer.provide(Layer.merge(RunStoreMemory.layer(), CircuitBreaker.layer)),
  Layer.provide(StderrLogger)
)

/** Milliseconds from a monotonic clock. */
export const nowMs = Effect.sync(() => performance.now())

/** What a measured section took: wall time, and the process's CPU time (user + system) over it. */
export interface Timing<A> {
  readonly wallMs: number
  readonly cpuMs: number
  readonly value: A
}

/**
 * Runs `effect` and returns its value with the elapsed wall and CPU time in milliseconds. CPU time
 * is reported too because a loaded machine stretches wall time while CPU time stays put.
 */
export const timed = <A, E, R>(effect: Effect.Effect<A, E, R>): Effect.Effect<Timing<A>, E, R> =>
  Effect.gen(function*() {
    const cpu = yield* Effect.sync(() => process.cpuUsage())
    const start = yield* nowMs
    const value = yield* effect
    const end = yield* nowMs
    const used = yield* Effect.sync(() => process.cpuUsage(cpu))
    return { wallMs: end - start, cpuMs: (used.user + used.system) / 1000, value }
  })

/** Fails the workload unless `ok`. */
export const check = (workload: string, ok: boolean, detail: () => string): Effect.Effect<void, BenchCheckFailed> =>
  ok ? Effect.void : Effect.fail(new BenchCheckFailed({ workload, detail: detail() }))

const gcFn: (() => void) | undefined = (() => {
  const exposed = (globalThis as { gc?: () => void }).gc
  if (typeof exposed === "function") return exposed
  try {
    setFlagsFromString("--expose-gc")
    const fn = runInNewContext("gc") as unknown
    return typeof fn === "function" ? (fn as () => void) : undefined
  } catch {
    return undefined
  }
})()

/** Forces a full garbage collection when the VM allows it; returns whether it ran. */
export const collectGarbage = Effect.sync(() => {
  if (gcFn === undefined) return false
  gcFn()
  gcFn()
  return true
})

/** Bytes as megabytes, one decimal. */
export const mb = (bytes: number) => Math.round((bytes / (1024 * 1024)) * 10) / 10

/** Rounds to `digits` decimals. */
export const round = (n: number, digits = 1) => {
  const f = 10 ** digits
  return Math.round(n * f) / f
}

/** The heap in use now, in megabytes. */
export const heapUsedMb = Effect.sync(() => mb(process.memoryUsage().heapUsed))

/** Samples RSS on an interval while `effect` runs; returns its value and the peak RSS in bytes. */
export const withRssPeak = <A, E, R>(
  effect: Effect.Effect<A, E, R>,
  everyMs = 2
): Effect.Effect<readonly [number, A], E, R> =>
  Effect.acquireUseRelease(
    Effect.sync(() => {
      const sampler = { peak: process.memoryUsage.rss(), timer: undefined as NodeJS.Timeout | undefined }
      sampler.timer = setInterval(() => {
        const rss = process.memoryUsage.rss()
        if (rss > sampler.peak) sampler.peak = rss
      }, everyMs)
      return sampler
    }),
    (sampler) =>
      Effect.map(effect, (value) => {
        const rss = process.memoryUsage.rss()
        if (rss > sampler.peak) sampler.peak = rss
        return [sampler.peak, value] as const
      }),
    (sampler) => Effect.sync(() => clearInterval(sampler.timer))
  )

/** Milliseconds since the epoch with sub-millisecond precision, comparable across processes on one machine. */
export const epochMs = Effect.sync(() => performance.timeOrigin + performance.now())

/** Nearest-rank percentile (`p` in 0–100) of `values`; `null` when there are none. */
export const percentile = (values: ReadonlyArray<number>, p: number): number | null => {
  if (values.length === 0) return null
  const sorted = [...values].sort((a, b) => a - b)
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))]!
}

/** Count, p50, p90, p99 and extremes of a sample of milliseconds, rounded to 0.1 ms. */
export const distribution = (values: ReadonlyArray<number>) => {
  const at = (p: number) => {
    const v = percentile(values, p)
    return v === null ? null : round(v)
  }
  return {
    n: values.length,
    min: values.length === 0 ? null : round(Math.min(...values)),
    p50: at(50),
    p90: at(90),
    p99: at(99),
    max: values.length === 0 ? null : round(Math.max(...values))
  }
}

// Postgres server databases (W4, W4b, W6)

/** The server the bench uses when `DATABASE_URL` is not set. */
export const DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/test"

/** Something the bench needed from the machine (a server, `pgbench`, statistics, a process) was not there. */
export class Unavailable extends Data.TaggedError("Unavailable")<{ readonly what: string; readonly reason: string }> {
  override get message() {
    return `${this.what}: ${this.reason}`
  }
}

/** An error and its causes as one line. */
export const describe = (cause: unknown): string => {
  if (typeof cause === "object" && cause !== null) {
    const inner = (cause as { readonly cause?: unknown }).cause
    const message = (cause as { readonly message?: unknown }).message
    const own = typeof message === "string" ? message : String(cause)
    return inner === undefined ? own : `${own} (${describe(inner)})`
  }
  return String(cause)
}

/** The admin database URL: `DATABASE_URL`, or the local default. */
export const serverUrl = Config.redacted("DATABASE_URL").pipe(Config.withDefault(Redacted.make(DEFAULT_DATABASE_URL)))

/** The same server URL naming another database. */
export const withDatabase = (url: Redacted.Redacted, database: string) => {
  const u = new URL(Redacted.value(url))
  u.pathname = `/${database}`
  return Redacted.make(u.toString())
}

/** The admin connection: one connection to the configured database, for DDL and statistics. */
export const connectAdmin = (url: Redacted.Redacted) =>
  Layer.build(PgClient.layer({ url, maxConnections: 1, connectTimeout: Duration.seconds(5) })).pipe(
    Effect.map((context) => Context.get(context, PgClient.PgClient)),
    Effect.mapError((e) => new Unavailable({ what: "Postgres server", reason: describe(e) }))
  )

/** A database created for the bench through `admin`, dropped (with any lingering sessions) when the scope closes. */
export const scratchDatabase = (admin: SqlClient.SqlClient, purpose: string) =>
  Effect.gen(function*() {
    const now = yield* Clock.currentTimeMillis
    const name = `fibergraph_bench_${purpose}_${process.pid}_${now}`
    yield* Effect.acquireRelease(
      Effect.mapError(
        admin`CREATE DATABASE ${admin(name)}`,
        (e) => new Unavailable({ what: `CREATE DATABASE ${name}`, reason: describe(e) })
      ),
      () =>
        admin`DROP DATABASE IF EXISTS ${admin(name)} WITH (FORCE)`.pipe(
          Effect.catchAll((e) => Console.error(`bench: could not drop the bench database ${name}: ${describe(e)}`))
        )
    )
    return name
  })

/**
 * The submitting side of a worker fleet: a pool on a server database (migrated when built), the
 * SQL `RunStore` and `WorkQueue` on it, and a `Runner` to prepare runs (it runs none itself).
 */
export const submitterLayer = (url: Redacted.Redacted, pool: number) => {
  const Sql = PgClient.layer({ url, maxConnections: pool, minConnections: pool, idleTimeout: Duration.minutes(10) })
  const Migrated = Layer.effectDiscard(Migrations.migrate).pipe(Layer.provideMerge(Sql))
  const Store = RunStoreSql.layer().pipe(Layer.provideMerge(Migrated))
  const Queue = WorkQueueSql.layer.pipe(Layer.provideMerge(Store))
  const layer: Layer.Layer<
    Runner.Runner | WorkQueue | RunStore | SqlClient.SqlClient | PgClient.PgClient,
    unknown
  > = Runner.layer().pipe(Layer.provideMerge(Layer.merge(Queue, CircuitBreaker.layer)))
  return layer
}

// Worker processes (W4b, W6): `bench/worker-child.ts` run as real OS processes

/** How a bench worker process runs: the graph it registers and its `Worker.layer` options. */
export const WorkerProcessOptions = Schema.Struct({
  workerId: Schema.String,
  /** The id of the 10-step chain it registers (see `fleetChain`). */
  graphId: Schema.String,
  /** What each node does: sleep this long (0: return at once). */
  nodeMillis: Schema.NonNegativeInt,
  concurrency: Schema.Int,
  leaseMillis: Schema.Int,
  heartbeatMillis: Schema.Int,
  pollMillis: Schema.Int,
  /** Connections in its pool (the `LISTEN` connection is one more). */
  pool: Schema.Int
})
/** How a bench worker process runs. */
export type WorkerProcessOptions = typeof WorkerProcessOptions.Type

/**
 * A worker process's stdout, one JSON object a line: `ready` once its pool is open (it then waits
 * for `go` on stdin before it starts claiming); each claim attempt with the instant (`epochMs`) its
 * claim statement returned, `claimed` with the run or `empty`; and each `wake`-up notification the
 * worker received (`LISTEN/NOTIFY`), when it arrived.
 */
export const WorkerLine = Schema.Union(
  Schema.TaggedStruct("ready", { pid: Schema.Number }),
  Schema.TaggedStruct("claimed", { runId: Schema.String, epoch: Schema.Number, at: Schema.Number }),
  Schema.TaggedStruct("empty", { at: Schema.Number }),
  Schema.TaggedStruct("wake", { at: Schema.Number })
)
/** A worker process's stdout line. */
export type WorkerLine = typeof WorkerLine.Type

/** The line on a worker process's stdin that lets it start claiming. */
export const goLine = "go"

/** The environment variable that passes the database URL to a worker process (kept off its command line). */
export const workerUrlVariable = "FIBERGRAPH_BENCH_DATABASE_URL"

/** How a worker process ended. */
export interface WorkerExit {
  readonly code: number | null
  readonly signal: NodeJS.Signals | null
}

/** A running bench worker process. */
export interface WorkerProcess {
  readonly workerId: string
  readonly pid: number
  /** Its successful claims so far, in order. */
  readonly claims: ReadonlyArray<Extract<WorkerLine, { readonly _tag: "claimed" }>>
  /** The instants of its claim attempts that found nothing. */
  readonly empty: ReadonlyArray<number>
  /** The instants its wake-up notifications arrived. */
  readonly wakes: ReadonlyArray<number>
  /** Lets it start claiming. */
  readonly go: Effect.Effect<void>
  readonly kill: (signal: NodeJS.Signals) => Effect.Effect<void>
  /** Waits until it has exited. */
  readonly exited: Effect.Effect<WorkerExit>
  /** How it ended, if it has. */
  readonly exit: Effect.Effect<WorkerExit | undefined>
  /** The end of its stderr (its logs). */
  readonly stderrTail: Effect.Effect<string>
}

const workerProgram = fileURLToPath(new URL("./worker-child.ts", import.meta.url))
const repositoryRoot = fileURLToPath(new URL("../", import.meta.url))
const decodeWorkerLine = Schema.decodeUnknownEither(Schema.parseJson(WorkerLine))
const STDERR_TAIL = 8_000
/** How long a worker process may take to drain and exit after SIGTERM before it is SIGKILLed. */
const STOP_GRACE = Duration.seconds(8)

/**
 * Starts `bench/worker-child.ts` as a process on `url` and waits for its `ready` line. Closing the
 * scope stops it: SIGTERM (it drains), then SIGKILL if it has not exited within 8 s.
 */
export const spawnWorker = (
  url: Redacted.Redacted,
  options: WorkerProcessOptions
): Effect.Effect<WorkerProcess, Unavailable, Scope.Scope> => {
  const what = `worker process ${options.workerId}`
  return Effect.acquireRelease(
    Effect.async<WorkerProcess, Unavailable>((resume) => {
      const child = spawn(process.execPath, ["--import", "tsx", workerProgram, JSON.stringify(options)], {
        cwd: repositoryRoot,
        env: { ...process.env, [workerUrlVariable]: Redacted.value(url) },
        stdio: ["pipe", "pipe", "pipe"]
      })
      const claims: Array<Extract<WorkerLine, { readonly _tag: "claimed" }>> = []
      const empty: Array<number> = []
      const wakes: Array<number> = []
      const ended = Deferred.unsafeMake<WorkerExit>(FiberId.none)
      let ended_: WorkerExit | undefined
      let stderr = ""
      let pending = ""
      let ready = false

      const handle = (pid: number): WorkerProcess => ({
        workerId: options.workerId,
        pid,
        claims,
        empty,
        wakes,
        go: Effect.sync(() => {
          if (child.stdin.writable) child.stdin.write(`${goLine}\n`)
        }),
        kill: (signal) =>
          Effect.sync(() => {
            if (ended_ === undefined) child.kill(signal)
          }),
        exited: Deferred.await(ended),
        exit: Effect.sync(() => ended_),
        stderrTail: Effect.sync(() => stderr)
      })

      child.stdout.setEncoding("utf8").on("data", (chunk: string) => {
        pending += chunk
        let newline = pending.indexOf("\n")
        while (newline >= 0) {
          const decoded = decodeWorkerLine(pending.slice(0, newline))
          pending = pending.slice(newline + 1)
          newline = pending.indexOf("\n")
          if (Either.isLeft(decoded)) continue
          const line = decoded.right
          switch (line._tag) {
            case "ready":
              ready = true
              resume(Effect.succeed(handle(line.pid)))
              break
            case "claimed":
              claims.push(line)
              break
            case "empty":
              empty.push(line.at)
              break
            case "wake":
              wakes.push(line.at)
              break
          }
        }
      })
      child.stderr.setEncoding("utf8").on("data", (chunk: string) => {
        stderr = (stderr + chunk).slice(-STDERR_TAIL)
      })
      child.stdin.on("error", () => undefined)
      child.on("error", (error) => {
        if (!ready) resume(Effect.fail(new Unavailable({ what, reason: `cannot spawn: ${error.message}` })))
      })
      child.on("exit", (code, signal) => {
        ended_ = { code, signal }
        Deferred.unsafeDone(ended, Exit.succeed(ended_))
        if (!ready) {
          resume(Effect.fail(new Unavailable({ what, reason: `exited (${code ?? signal}) before it was ready: ${stderr.trim()}` })))
        }
      })
      return Effect.sync(() => {
        child.kill("SIGKILL")
      })
    }).pipe(
      Effect.timeoutFail({
        duration: "90 seconds",
        onTimeout: () => new Unavailable({ what, reason: "not ready within 90 s" })
      })
    ),
    (worker) =>
      Effect.gen(function*() {
        if ((yield* worker.exit) !== undefined) return
        yield* worker.kill("SIGTERM")
        const stopped = yield* Effect.timeout(Effect.interruptible(worker.exited), STOP_GRACE).pipe(Effect.option)
        if (stopped._tag === "None") {
          yield* Console.error(
            `${what} (pid ${worker.pid}) did not exit within ${Duration.format(STOP_GRACE)} of SIGTERM; SIGKILLed`
          )
          yield* worker.kill("SIGKILL")
          yield* worker.exited
        }
      })
  )
}

/** Fails unless every one of `workers` is still running: a worker that died on its own invalidates the figures. */
export const checkAlive = (workload: string, workers: ReadonlyArray<WorkerProcess>) =>
  Effect.forEach(workers, (worker) =>
    Effect.flatMap(worker.exit, (exit) =>
      exit === undefined ? Effect.void : Effect.flatMap(worker.stderrTail, (stderr) =>
        Effect.fail(
          new BenchCheckFailed({
            workload,
            detail: `${worker.workerId} (pid ${worker.pid}) exited on its own (${exit.code ?? exit.signal}): ${stderr.trim().slice(-2000)}`
          })
        ))), { discard: true })

/** Clock ticks per second of `/proc/<pid>/stat` (`sysconf(_SC_CLK_TCK)`, 100 on Linux). */
const CLOCK_TICKS = 100

/**
 * The CPU time (user + system, in ms) the processes `pids` have used so far, read from
 * `/proc/<pid>/stat`; processes that cannot be read (gone, or not Linux) count as 0.
 */
export const cpuMillisOf = (pids: ReadonlyArray<number>) =>
  Effect.sync(() =>
    pids.reduce((total, pid) => {
      try {
        const stat = readFileSync(`/proc/${pid}/stat`, "utf8")
        const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ")
        return total + ((Number(fields[11]) + Number(fields[12])) * 1000) / CLOCK_TICKS
      } catch {
        return total
      }
    }, 0)
  )

/** The server processes (backends) serving `sql`'s database now, for `cpuMillisOf` (the server must be local). */
export const backendPids = (sql: SqlClient.SqlClient) =>
  Effect.map(
    sql<{ readonly pid: number }>`SELECT pid FROM pg_stat_activity WHERE datname = current_database()`,
    (rows) => rows.map((row) => Number(row.pid))
  )
