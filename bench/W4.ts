/**
 * W4: the W1 chain (10 nodes, each adding 1) with every step durably committed through the SQL
 * `RunStore`: (a) 200 runs one after another, (b) 400 runs 8 at a time. Measured on the embedded
 * store (PGlite in a temporary data directory) and on a Postgres server (a database created for the
 * bench and dropped afterwards), with the database's commits per step from `pg_stat_database`,
 * beside the server's single-connection commit rate measured with `pgbench` in the same run.
 *
 * `npm run bench -- W4 [embedded|server|all]` (default `all`).
 */
import * as Command from "@effect/platform/Command"
import * as FileSystem from "@effect/platform/FileSystem"
import * as NodeContext from "@effect/platform-node/NodeContext"
import * as SqlClient from "@effect/sql/SqlClient"
import type { SqlError } from "@effect/sql/SqlError"
import { PgClient } from "@effect/sql-pg"
import { Array as Arr, Console, Duration, Effect, Either, Layer, Option, Redacted, Stream } from "effect"
import { loadavg } from "node:os"
import * as NodePath from "node:path"
import { CircuitBreaker, Runner } from "../src/index.js"
import * as Migrations from "../src/layers/sql/Migrations.js"
import * as PgliteClient from "../src/layers/sql/PgliteClient.js"
import * as RunStoreSql from "../src/layers/sql/RunStoreSql.js"
import { check, connectAdmin, describe, round, scratchDatabase, serverUrl, timed, Unavailable, withDatabase, type Workload } from "./Harness.js"
import { chain } from "./W1.js"

const CHAIN = 10
const SEQ_RUNS = 200
const PAR_RUNS = 400
const PAR = 8
const WARMUP_SEQ_RUNS = 20
const WARMUP_PAR_RUNS = 40
/** Server pool size, kept open for the whole bench so no connection start-up lands in a measured window. */
const POOL = 10
const PGBENCH_SECONDS = 10

/** Which engines a W4 invocation measures. */
export type Target = "embedded" | "server"

/** Reads a database's committed-transaction counter after flushing every session's pending statistics. */
interface CommitCounter {
  readonly read: Effect.Effect<number, Unavailable>
}

const toCount = (what: string) => (rows: ReadonlyArray<{ readonly xact_commit: string | number | null }>) =>
  rows[0]?.xact_commit === undefined || rows[0].xact_commit === null
    ? Effect.fail(new Unavailable({ what, reason: "pg_stat_database has no row for the database" }))
    : Effect.succeed(Number(rows[0].xact_commit))

const statsError = (what: string) => (e: SqlError) => new Unavailable({ what, reason: describe(e) })

/**
 * Forces the session's pending statistics out when it next goes idle (before it answers). The
 * statement reads a table on purpose: a backend with no relation or WAL statistics pending skips
 * the flush, leaving its commit count local, so a bare `SELECT pg_stat_force_next_flush()` would
 * hide its own commit and those of earlier read-only statements until a later flush.
 */
const flushStatement = (sql: SqlClient.SqlClient) =>
  sql`SELECT pg_stat_force_next_flush(), pg_sleep(0.05), (SELECT count(*) FROM fibergraph.migrations)`

const readCommits = (sql: SqlClient.SqlClient, what: string, database: string | undefined) =>
  (database === undefined
    ? sql<{ readonly xact_commit: string | number | null }>`
        SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()`
    : sql<{ readonly xact_commit: string | number | null }>`
        SELECT xact_commit FROM pg_stat_database WHERE datname = ${database}`).pipe(
      Effect.mapError(statsError(what)),
      Effect.flatMap(toCount(what))
    )

/** PGlite is one session: flush its statistics, then read them in the same session. */
const embeddedCounter: Effect.Effect<CommitCounter, never, SqlClient.SqlClient> = Effect.map(
  SqlClient.SqlClient,
  (sql) => ({
    read: Effect.zipRight(
      Effect.mapError(flushStatement(sql), statsError("embedded commit counter")),
      readCommits(sql, "embedded commit counter", undefined)
    )
  })
)

/**
 * A server backend flushes its statistics when idle, at most once a second and otherwise up to 10 s
 * later. Force the flush on every pooled connection (one sleeping statement each, all at once, so
 * each lands on its own connection), then read the counter through the separate admin connection.
 */
const serverCounter = (admin: SqlClient.SqlClient, database: string): Effect.Effect<CommitCounter, never, SqlClient.SqlClient> =>
  Effect.map(SqlClient.SqlClient, (sql) => ({
    read: Effect.forEach(Arr.range(1, POOL), () => flushStatement(sql), { concurrency: POOL, discard: true }).pipe(
      Effect.mapError(statsError("server commit counter")),
      Effect.zipRight(readCommits(admin, "server commit counter", database))
    )
  }))

/** The durable runtime under test: the runner over the SQL store, over the `SqlClient` in context. */
const DurableRuntime: Layer.Layer<Runner.Runner, never, SqlClient.SqlClient> = Runner.layer().pipe(
  Layer.provide(Layer.merge(RunStoreSql.layer(), CircuitBreaker.layer))
)

type Chain = Effect.Effect.Success<ReturnType<typeof chain>>

const runOne = (graph: Chain, label: string) =>
  Effect.gen(function*() {
    const runner = yield* Runner.Runner
    const handle = yield* runner.start(graph, {})
    const result = yield* handle.result
    yield* check(
      "W4",
      result.status === "completed" && result.state.count === CHAIN && result.step === CHAIN,
      () =>
        `${label} run ${handle.runId}: status ${result.status}, count ${result.state.count}, step ${result.step} ` +
        `(want completed, ${CHAIN}, ${CHAIN})`
    )
    return result.step
  })

const runMany = (graph: Chain, label: string, runs: number, concurrency: number) =>
  Effect.map(
    Effect.forEach(Arr.range(1, runs), () => runOne(graph, label), { concurrency }),
    (steps) => steps.reduce((a, b) => a + b, 0)
  )

/** A commit counter with the commits its own reads add between two readings (measured, not assumed). */
interface Calibrated {
  readonly counter: CommitCounter
  readonly overhead: number
}

const readOrWarn = (label: string, calibrated: Option.Option<Calibrated>) =>
  Option.isNone(calibrated) ? Effect.succeed(Option.none<number>()) : calibrated.value.counter.read.pipe(
    Effect.map(Option.some),
    Effect.catchTag("Unavailable", (e) =>
      Effect.as(Console.error(`W4 ${label}: commits not measured: ${e.message}`), Option.none<number>()))
  )

/** One measured phase: throughput, and the database's commits over it (null when the counter is unavailable). */
const phase = (graph: Chain, calibrated: Option.Option<Calibrated>, label: string, runs: number, concurrency: number) =>
  Effect.gen(function*() {
    const before = yield* readOrWarn(label, calibrated)
    const { cpuMs, value: steps, wallMs } = yield* timed(runMany(graph, label, runs, concurrency))
    const after = yield* readOrWarn(label, calibrated)
    const commits = Option.isSome(before) && Option.isSome(after) && Option.isSome(calibrated)
      ? after.value - before.value - calibrated.value.overhead
      : null
    return {
      runs,
      concurrency,
      steps,
      steps_per_s: Math.round(steps / (wallMs / 1000)),
      us_per_step: round((wallMs * 1000) / steps, 1),
      cpu_us_per_step: round((cpuMs * 1000) / steps, 1),
      wall_ms: round(wallMs),
      cpu_ms: round(cpuMs),
      commits,
      commits_per_step: commits === null ? null : round(commits / steps, 3),
      commits_per_run: commits === null ? null : round(commits / runs, 2)
    }
  })

/**
 * Migrates the database, warms up, then measures both phases on the runtime built over `sqlLayer`,
 * and finally checks in the database that every run completed at step 10.
 */
const measureEngine = <E>(
  label: Target,
  sqlLayer: Layer.Layer<SqlClient.SqlClient, E>,
  makeCounter: Effect.Effect<CommitCounter, never, SqlClient.SqlClient>
) =>
  Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    yield* Migrations.migrate
    const [info] = yield* sql<{ readonly version: string; readonly fsync: string; readonly synchronous_commit: string }>`
      SELECT version() AS version, current_setting('fsync') AS fsync,
             current_setting('synchronous_commit') AS synchronous_commit`
    const graph = yield* chain(`bench-w4-${label}`, CHAIN, () => Effect.succeed({ count: 1 }))
    const counterUnderTest = yield* makeCounter

    return yield* Effect.gen(function*() {
      yield* runMany(graph, `${label} warm-up`, WARMUP_SEQ_RUNS, 1)
      yield* runMany(graph, `${label} warm-up`, WARMUP_PAR_RUNS, PAR)

      const calibration = yield* Effect.either(Effect.gen(function*() {
        const a = yield* counterUnderTest.read
        const b = yield* counterUnderTest.read
        return { counter: counterUnderTest, overhead: b - a }
      }))
      if (Either.isLeft(calibration)) {
        yield* Console.error(`W4 ${label}: commits per step not measured: ${calibration.left.message}`)
      }
      const calibrated = Either.getRight(calibration)

      const seq = yield* phase(graph, calibrated, `${label} sequential`, SEQ_RUNS, 1)
      const par = yield* phase(graph, calibrated, `${label} parallel`, PAR_RUNS, PAR)

      const expected = WARMUP_SEQ_RUNS + WARMUP_PAR_RUNS + SEQ_RUNS + PAR_RUNS
      const [stored] = yield* sql<{ readonly total: string | number; readonly done: string | number }>`
        SELECT count(*) AS total, count(*) FILTER (WHERE status = 'completed' AND step = ${CHAIN}) AS done
        FROM fibergraph.runs`
      yield* check(
        "W4",
        Number(stored?.total) === expected && Number(stored?.done) === expected,
        () => `${label}: the database holds ${stored?.total} runs, ${stored?.done} completed at step ${CHAIN} (want ${expected})`
      )

      const commits = seq.commits === null || par.commits === null ? null : seq.commits + par.commits
      return {
        engine: info?.version.split(" on ")[0] ?? "unknown",
        fsync: info?.fsync ?? "unknown",
        synchronous_commit: info?.synchronous_commit ?? "unknown",
        seq_steps_per_s: seq.steps_per_s,
        par8_steps_per_s: par.steps_per_s,
        commits_per_step: commits === null ? null : round(commits / (seq.steps + par.steps), 3),
        commits_per_run: commits === null ? null : round(commits / (seq.runs + par.runs), 2),
        stats_overhead: Option.isNone(calibrated) ? null : calibrated.value.overhead,
        seq,
        par8: par
      }
    }).pipe(Effect.provide(DurableRuntime))
  }).pipe(Effect.provide(sqlLayer))

/** The embedded store in a temporary data directory, removed afterwards. */
const embedded = Effect.gen(function*() {
  const fs = yield* FileSystem.FileSystem
  const dir = yield* fs.makeTempDirectoryScoped({ prefix: "fibergraph-w4-" })
  return yield* measureEngine(
    "embedded",
    PgliteClient.layer({ dataDir: NodePath.join(dir, "data") }),
    embeddedCounter
  )
}).pipe(Effect.scoped)

const runProcess = (command: Command.Command) =>
  Effect.scoped(Effect.gen(function*() {
    const proc = yield* Command.start(command)
    const [stdout, stderr, exitCode] = yield* Effect.all([
      Stream.mkString(Stream.decodeText(proc.stdout)),
      Stream.mkString(Stream.decodeText(proc.stderr)),
      proc.exitCode
    ], { concurrency: "unbounded" })
    return { stdout, stderr, exitCode }
  }))

/** What one `pgbench` run measured. */
interface PgbenchRun {
  readonly tps: number
  readonly transactions: number
  readonly latency_ms: number | null
  readonly commits_per_tx: number
}

/**
 * Prepares the machine's single-connection commit rate measurement: a scratch database initialised
 * by `pgbench -i` (scale 1) and a script of one single-row UPDATE, so each transaction commits once.
 * Returns the measurement (`pgbench -n -c 1 -j 1 -T 10`), to run as often as needed in the scope.
 */
const preparePgbench = (admin: SqlClient.SqlClient, url: Redacted.Redacted) =>
  Effect.gen(function*() {
    const fs = yield* FileSystem.FileSystem
    const database = yield* scratchDatabase(admin, "pgbench")
    const target = new URL(Redacted.value(withDatabase(url, database)))
    const password = decodeURIComponent(target.password)
    target.password = ""
    const env = password === "" ? {} : { PGPASSWORD: password }
    const pgbenchCommand = (...args: Array<string>) =>
      Command.make("pgbench", ...args, target.toString()).pipe(Command.env(env))
    const run = (what: string, command: Command.Command) =>
      runProcess(command).pipe(
        Effect.mapError((e) => new Unavailable({ what, reason: describe(e) })),
        Effect.filterOrElse(
          (r) => r.exitCode === 0,
          (r) => Effect.fail(new Unavailable({ what, reason: `exit code ${r.exitCode}: ${r.stderr.trim()}` }))
        )
      )
    yield* run("pgbench -i", pgbenchCommand("-i", "-q", "-s", "1"))

    const dir = yield* Effect.mapError(
      fs.makeTempDirectoryScoped({ prefix: "fibergraph-w4-pgbench-" }),
      (e) => new Unavailable({ what: "pgbench script", reason: describe(e) })
    )
    const script = NodePath.join(dir, "update.sql")
    yield* Effect.mapError(
      fs.writeFileString(
        script,
        "\\set aid random(1, 100000 * :scale)\nUPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid = :aid;\n"
      ),
      (e) => new Unavailable({ what: "pgbench script", reason: describe(e) })
    )

    const commits = readCommits(admin, "pgbench commit counter", database)
    return Effect.gen(function*() {
      yield* Effect.sleep("1200 millis")
      const before = yield* commits
      const result = yield* run(
        "pgbench",
        pgbenchCommand("-n", "-c", "1", "-j", "1", "-T", String(PGBENCH_SECONDS), "-f", script)
      )
      yield* Effect.sleep("600 millis")
      const after = yield* commits
      const tps = /tps = ([\d.]+) \(without initial connection time\)/.exec(result.stdout)
      const transactions = /number of transactions actually processed: (\d+)/.exec(result.stdout)
      const latency = /latency average = ([\d.]+) ms/.exec(result.stdout)
      if (tps === null || transactions === null) {
        return yield* new Unavailable({ what: "pgbench", reason: `unexpected output: ${result.stdout.trim()}` })
      }
      const processed = Number(transactions[1])
      return {
        tps: round(Number(tps[1]), 1),
        transactions: processed,
        latency_ms: latency === null ? null : Number(latency[1]),
        commits_per_tx: round((after - before) / processed, 3)
      } satisfies PgbenchRun
    })
  })

/**
 * The server half: a fresh database with a bounded pool, measured between two `pgbench` runs
 * (before and after, since the machine's commit rate drifts), whose mean is the reference rate.
 */
const server = Effect.gen(function*() {
  const url = yield* Effect.mapError(serverUrl, (e) => new Unavailable({ what: "DATABASE_URL", reason: describe(e) }))
  const admin = yield* connectAdmin(url)
  const database = yield* scratchDatabase(admin, "w4")
  const prepared = yield* Effect.either(preparePgbench(admin, url))
  if (Either.isLeft(prepared)) yield* Console.error(`W4: pgbench not measured: ${prepared.left.message}`)
  const measurePgbench = (when: string) =>
    Either.isLeft(prepared) ? Effect.succeed(null) : prepared.right.pipe(
      Effect.catchTag("Unavailable", (e) =>
        Effect.as(Console.error(`W4: pgbench ${when} not measured: ${e.message}`), null))
    )

  const pgbenchBefore = yield* measurePgbench("before")
  const figures = yield* measureEngine(
    "server",
    PgClient.layer({
      url: withDatabase(url, database),
      maxConnections: POOL,
      minConnections: POOL,
      idleTimeout: Duration.minutes(10)
    }),
    serverCounter(admin, database)
  ).pipe(
    Effect.catchTags({
      SqlError: (e) => Effect.fail(new Unavailable({ what: "server bench database", reason: describe(e) }))
    })
  )
  const pgbenchAfter = yield* measurePgbench("after")
  const rates = [pgbenchBefore, pgbenchAfter].flatMap((r) => r === null ? [] : [r.tps])
  const pgbench = rates.length === 0 ? null : {
    tps: round(rates.reduce((a, b) => a + b, 0) / rates.length, 1),
    before: pgbenchBefore,
    after: pgbenchAfter,
    seconds: PGBENCH_SECONDS,
    script: "one single-row UPDATE of pgbench_accounts (scale 1), -n -c 1 -j 1"
  }
  return { figures: { ...figures, pool: POOL }, pgbench }
}).pipe(Effect.scoped)

const ratio = (a: number | undefined, b: number | undefined) =>
  a === undefined || b === undefined || b === 0 ? null : round(a / b, 3)

/** The W4 workload over the chosen engines. */
export const make = (targets: ReadonlyArray<Target>): Workload => ({
  name: "W4",
  run: Effect.gen(function*() {
    const load1Start = loadavg()[0]!
    const embeddedFigures = targets.includes("embedded") ? yield* embedded : null
    const serverHalf = targets.includes("server")
      ? yield* server.pipe(
        Effect.catchTag("Unavailable", (e) =>
          Effect.as(Console.error(`W4: server half not measured: ${e.message}`), null))
      )
      : null
    const load1End = loadavg()[0]!
    const tps = serverHalf?.pgbench?.tps
    return {
      workload: "W4",
      targets,
      chain: CHAIN,
      runs: { seq: SEQ_RUNS, par8: PAR_RUNS },
      embedded: embeddedFigures,
      server: serverHalf?.figures ?? null,
      pgbench_tps: tps ?? null,
      pgbench: serverHalf?.pgbench ?? null,
      ratio_seq: ratio(serverHalf?.figures.seq_steps_per_s, tps),
      ratio_par8: ratio(serverHalf?.figures.par8_steps_per_s, tps),
      load1: [round(load1Start, 2), round(load1End, 2)]
    }
  }).pipe(Effect.provide(NodeContext.layer))
})

/** `W4 [embedded|server|all]`: the workload for those arguments, or `undefined` when they are not valid. */
export const parse = (args: ReadonlyArray<string>): Workload | undefined => {
  if (args.length > 1) return undefined
  switch (args[0] ?? "all") {
    case "all":
      return make(["embedded", "server"])
    case "embedded":
      return make(["embedded"])
    case "server":
      return make(["server"])
    default:
      return undefined
  }
}

/** The W4 workload on both engines. */
export const W4: Workload = make(["embedded", "server"])
