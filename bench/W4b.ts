/**
 * W4b: a fleet of 1, 2 and 4 worker processes (`bench/worker-child.ts`, each `Worker.layer` with 8
 * runs at a time) sharing one fresh Postgres server database per fleet size.
 *
 * - Burst: 1,000 runs of the 10-step chain are submitted first (`Worker.submit`, 4 at a time) while
 *   the worker processes are up but not yet claiming; then all of them are let go at once. Steps/s
 *   over go → last job done, and each run's latency from go (as if all 1,000 were submitted at that
 *   instant) to its job done.
 * - Idle: then 40 runs submitted one at a time into the idle fleet, each after the previous one is
 *   done and a random 100–300 ms pause: submit returned → the claiming worker's wake-up notification
 *   → its claim returned → the run's first `StepStarted` (all from the worker processes' reports and
 *   the event log).
 *
 * `npm run bench -- W4b [fleet sizes…]` (default `1 2 4`).
 */
import * as SqlClient from "@effect/sql/SqlClient"
import { Array as Arr, Console, Duration, Effect, Random } from "effect"
import { loadavg } from "node:os"
import { Worker } from "../src/index.js"
import {
  backendPids,
  check,
  checkAlive,
  connectAdmin,
  describe,
  cpuMillisOf,
  distribution,
  epochMs,
  round,
  scratchDatabase,
  serverUrl,
  spawnWorker,
  submitterLayer,
  Unavailable,
  withDatabase,
  type WorkerProcess,
  type Workload
} from "./Harness.js"
import { chain } from "./W1.js"

/** Steps per run. */
export const CHAIN = 10
const RUNS = 1000
const IDLE_RUNS = 40
const GRAPH_ID = "bench-fleet"
/** Per worker process: runs at a time, and its pool (runs, claims and heartbeats share it). */
const CONCURRENCY = 8
const WORKER_POOL = 10
/** The worker defaults: 30 s lease, heartbeat a third of it, 2 s jittered poll. */
const LEASE_MILLIS = 30_000
const HEARTBEAT_MILLIS = 10_000
const POLL_MILLIS = 2_000
const SUBMITTERS = 4
const SUBMITTER_POOL = 6

/** The bench's 10-step chain (W1's), each node adding 1, after sleeping `nodeMillis` when that is not 0. */
export const fleetChain = (graphId: string, nodeMillis: number) =>
  chain(
    graphId,
    CHAIN,
    nodeMillis === 0
      ? () => Effect.succeed({ count: 1 })
      : () => Effect.delay(Effect.succeed({ count: 1 }), Duration.millis(nodeMillis))
  )

/** A run as the database holds it at the end, with what its event log and job say. */
export interface RunRow {
  readonly run_id: string
  readonly status: string
  readonly step: number
  readonly claim_epoch: number
  readonly created_at: number
  readonly job_status: string
  readonly done_at: number
  readonly attempts: number
  readonly claimed_by: string | null
  readonly started_at: number | null
  readonly steps_committed: number
  readonly distinct_steps: number
  readonly count: number | null
}

/** Every run of `tenant` with its job, its first `StepStarted`, its committed steps and its final count. */
export const runsOf = (tenant: string) =>
  Effect.flatMap(SqlClient.SqlClient, (sql) =>
    Effect.map(
      sql<Record<keyof RunRow, string | number | null>>`
        SELECT r.run_id, r.status, r.step, r.claim_epoch, r.created_at,
               j.status AS job_status, j.updated_at AS done_at, j.attempts, j.claimed_by,
               (SELECT min(e.at) FROM fibergraph.events e WHERE e.run_id = r.run_id AND e.tag = 'StepStarted') AS started_at,
               (SELECT count(*) FROM fibergraph.events e WHERE e.run_id = r.run_id AND e.tag = 'StepCommitted') AS steps_committed,
               (SELECT count(DISTINCT e.step) FROM fibergraph.events e WHERE e.run_id = r.run_id AND e.tag = 'StepCommitted') AS distinct_steps,
               (SELECT (c.state ->> 'count') FROM fibergraph.checkpoints c WHERE c.run_id = r.run_id ORDER BY c.seq DESC LIMIT 1) AS count
        FROM fibergraph.runs r JOIN fibergraph.jobs j ON j.run_id = r.run_id
        WHERE r.tenant = ${tenant}`,
      (rows) =>
        rows.map((row): RunRow => ({
          run_id: String(row.run_id),
          status: String(row.status),
          step: Number(row.step),
          claim_epoch: Number(row.claim_epoch),
          created_at: Number(row.created_at),
          job_status: String(row.job_status),
          done_at: Number(row.done_at),
          attempts: Number(row.attempts),
          claimed_by: row.claimed_by === null ? null : String(row.claimed_by),
          started_at: row.started_at === null ? null : Number(row.started_at),
          steps_committed: Number(row.steps_committed),
          distinct_steps: Number(row.distinct_steps),
          count: row.count === null ? null : Number(row.count)
        }))
    ))

/** Fails unless `expected` runs of `tenant` are stored and each completed its 10 steps exactly once with count 10. */
export const checkRuns = (workload: string, label: string, rows: ReadonlyArray<RunRow>, expected: number) =>
  Effect.gen(function*() {
    yield* check(workload, rows.length === expected, () => `${label}: ${rows.length} runs stored, want ${expected}`)
    const bad = rows.filter((r) =>
      r.status !== "completed" || r.step !== CHAIN || r.count !== CHAIN || r.job_status !== "done" ||
      r.steps_committed !== CHAIN || r.distinct_steps !== CHAIN
    )
    yield* check(workload, bad.length === 0, () =>
      `${label}: ${bad.length} of ${rows.length} runs not completed exactly once at step ${CHAIN}, e.g. ` +
      JSON.stringify(bad.slice(0, 3)))
  })

/** Waits until every job of `tenant` is done (`expected` of them), failing on a dead job, a dead worker or `timeout`. */
export const awaitDone = (
  workload: string,
  tenant: string,
  expected: number,
  workers: ReadonlyArray<WorkerProcess>,
  every: Duration.DurationInput,
  timeout: Duration.DurationInput
) =>
  Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    while (true) {
      const [row] = yield* sql<{ readonly done: string | number; readonly dead: string | number }>`
        SELECT count(*) FILTER (WHERE status = 'done') AS done, count(*) FILTER (WHERE status = 'dead') AS dead
        FROM fibergraph.jobs WHERE tenant = ${tenant}`
      yield* check(workload, Number(row?.dead) === 0, () => `${tenant}: ${row?.dead} dead-lettered job(s)`)
      if (Number(row?.done) >= expected) return
      yield* checkAlive(workload, workers)
      yield* Effect.sleep(every)
    }
  }).pipe(
    Effect.timeoutFail({
      duration: timeout,
      onTimeout: () => new Unavailable({ what: `${workload} ${tenant}`, reason: `jobs not all done within ${Duration.format(timeout)}` })
    })
  )

const claimIndex = (workers: ReadonlyArray<WorkerProcess>) => {
  const index = new Map<string, { readonly at: number; readonly workerId: string }>()
  for (const worker of workers) {
    for (const claim of worker.claims) {
      if (!index.has(claim.runId)) index.set(claim.runId, { at: claim.at, workerId: worker.workerId })
    }
  }
  return index
}

type FleetGraph = Effect.Effect.Success<ReturnType<typeof fleetChain>>

/** The burst: 1,000 runs queued while the fleet waits, then the fleet let go on them all at once. */
const burst = (graph: FleetGraph, workers: ReadonlyArray<WorkerProcess>) =>
  Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    const submitStart = yield* epochMs
    yield* Effect.forEach(Arr.range(1, RUNS), () => Worker.submit(graph, {}, { tenant: "burst" }), {
      concurrency: SUBMITTERS,
      discard: true
    })
    const submitSeconds = ((yield* epochMs) - submitStart) / 1000
    const workerPids = workers.map((w) => w.pid)
    const serverPids = yield* backendPids(sql)
    const workerCpuBefore = yield* cpuMillisOf(workerPids)
    const serverCpuBefore = yield* cpuMillisOf(serverPids)
    const start = yield* epochMs
    yield* Effect.forEach(workers, (w) => w.go, { discard: true })
    yield* awaitDone("W4b", "burst", RUNS, workers, "100 millis", "15 minutes")
    const workerCpu = (yield* cpuMillisOf(workerPids)) - workerCpuBefore
    const serverCpu = (yield* cpuMillisOf(serverPids)) - serverCpuBefore
    const rows = yield* runsOf("burst")
    yield* checkRuns("W4b", "burst", rows, RUNS)
    const end = Math.max(...rows.map((r) => r.done_at))
    const steps = rows.reduce((n, r) => n + r.steps_committed, 0)
    const seconds = (end - start) / 1000
    return {
      runs: RUNS,
      steps,
      steps_per_s: Math.round(steps / seconds),
      runs_per_s: round(RUNS / seconds, 1),
      wall_s: round(seconds, 2),
      latency_ms: distribution(rows.map((r) => r.done_at - start)),
      queue_wait_ms: distribution(rows.map((r) => (r.started_at ?? r.done_at) - start)),
      claims_per_worker: Object.fromEntries(workers.map((w) => [w.workerId, w.claims.length])),
      reclaimed: rows.filter((r) => r.attempts > 1 || r.claim_epoch > 1).length,
      worker_cpu_us_per_step: round((workerCpu * 1000) / steps, 0),
      server_cpu_us_per_step: round((serverCpu * 1000) / steps, 0),
      submit_s: round(submitSeconds, 2),
      submits_per_s: round(RUNS / submitSeconds, 1)
    }
  })

/** The idle fleet: runs submitted one at a time, each once the previous is done, after a random pause. */
const idle = (graph: FleetGraph, workers: ReadonlyArray<WorkerProcess>) =>
  Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    const emptyBefore = workers.reduce((n, w) => n + w.empty.length, 0)
    const submits: Array<{ readonly runId: string; readonly called: number; readonly returned: number }> = []
    for (let i = 0; i < IDLE_RUNS; i++) {
      yield* Effect.sleep(Duration.millis(yield* Random.nextIntBetween(100, 300)))
      const called = yield* epochMs
      const accepted = yield* Worker.submit(graph, {}, { tenant: "idle" })
      const returned = yield* epochMs
      submits.push({ runId: accepted.run.runId, called, returned })
      yield* Effect.gen(function*() {
        while (true) {
          const [row] = yield* sql<{ readonly status: string }>`
            SELECT status FROM fibergraph.jobs WHERE run_id = ${accepted.run.runId}`
          if (row?.status === "done") return
          yield* Effect.sleep("10 millis")
        }
      }).pipe(Effect.timeoutFail({
        duration: "60 seconds",
        onTimeout: () => new Unavailable({ what: "W4b idle", reason: `run ${accepted.run.runId} not done within 60 s` })
      }))
    }
    const rows = yield* runsOf("idle")
    yield* checkRuns("W4b", "idle", rows, IDLE_RUNS)
    const byId = new Map(rows.map((r) => [r.run_id, r]))
    const claims = claimIndex(workers)
    const workerById = new Map(workers.map((w) => [w.workerId, w]))
    const timeline = submits.map((s) => {
      const claim = claims.get(s.runId)
      const wake = claim === undefined
        ? undefined
        : workerById.get(claim.workerId)?.wakes.find((at) => at >= s.called && at <= claim.at)
      return {
        claim: (claim?.at ?? Number.NaN) - s.returned,
        wake: wake === undefined ? undefined : wake - s.returned,
        start: (byId.get(s.runId)?.started_at ?? Number.NaN) - s.returned,
        done: (byId.get(s.runId)?.done_at ?? Number.NaN) - s.returned
      }
    })
    yield* check("W4b", timeline.every((t) => Number.isFinite(t.claim)), () => "idle: a run's claim was not reported by any worker")
    const woken = timeline.filter((t) => t.wake !== undefined)
    return {
      runs: IDLE_RUNS,
      submit_to_claim_ms: distribution(timeline.map((t) => t.claim)),
      submit_to_start_ms: distribution(timeline.map((t) => t.start)),
      submit_to_wake_ms: distribution(woken.map((t) => t.wake!)),
      wake_to_claim_ms: distribution(woken.map((t) => t.claim - t.wake!)),
      claim_to_start_ms: distribution(timeline.map((t) => t.start - t.claim)),
      submit_to_done_ms: distribution(timeline.map((t) => t.done)),
      submit_call_ms: distribution(submits.map((s) => s.returned - s.called)),
      claimed_without_wake: timeline.length - woken.length,
      over_100ms: timeline.filter((t) => t.claim > 100).length,
      empty_claims_per_run: round((workers.reduce((n, w) => n + w.empty.length, 0) - emptyBefore) / IDLE_RUNS, 2)
    }
  })

/** One fleet size on its own fresh database. */
const fleet = (admin: SqlClient.SqlClient, url: Parameters<typeof withDatabase>[0], size: number) =>
  Effect.gen(function*() {
    const load1Start = loadavg()[0]!
    const database = yield* scratchDatabase(admin, `w4b_${size}`)
    const databaseUrl = withDatabase(url, database)
    return yield* Effect.gen(function*() {
      const graph = yield* fleetChain(GRAPH_ID, 0)
      const workers = yield* Effect.forEach(Arr.range(1, size), (i) =>
        spawnWorker(databaseUrl, {
          workerId: `w4b-${size}-${i}`,
          graphId: GRAPH_ID,
          nodeMillis: 0,
          concurrency: CONCURRENCY,
          leaseMillis: LEASE_MILLIS,
          heartbeatMillis: HEARTBEAT_MILLIS,
          pollMillis: POLL_MILLIS,
          pool: WORKER_POOL
        }), { concurrency: "unbounded" })
      const burstFigures = yield* burst(graph, workers)
      yield* Effect.sleep("2 seconds")
      const idleFigures = yield* idle(graph, workers)
      yield* checkAlive("W4b", workers)
      return { workers: size, burst: burstFigures, idle: idleFigures, load1: [round(load1Start, 2), round(loadavg()[0]!, 2)] }
    }).pipe(Effect.provide(submitterLayer(databaseUrl, SUBMITTER_POOL)))
  }).pipe(Effect.scoped)

/** The W4b workload over the given fleet sizes. */
export const make = (sizes: ReadonlyArray<number>): Workload => ({
  name: "W4b",
  run: Effect.gen(function*() {
    const url = yield* Effect.mapError(serverUrl, (e) => new Unavailable({ what: "DATABASE_URL", reason: describe(e) }))
    const admin = yield* connectAdmin(url)
    const [info] = yield* admin<{ readonly version: string; readonly synchronous_commit: string }>`
      SELECT version() AS version, current_setting('synchronous_commit') AS synchronous_commit`
    const fleets = []
    for (const size of sizes) {
      yield* Console.error(`W4b: ${size} worker process(es)…`)
      fleets.push(yield* fleet(admin, url, size))
    }
    return {
      workload: "W4b",
      chain: CHAIN,
      per_worker: { concurrency: CONCURRENCY, pool: WORKER_POOL, lease_ms: LEASE_MILLIS, heartbeat_ms: HEARTBEAT_MILLIS, poll_ms: POLL_MILLIS },
      submitters: SUBMITTERS,
      server: info?.version.split(" on ")[0] ?? "unknown",
      synchronous_commit: info?.synchronous_commit ?? "unknown",
      fleets,
      load: loadavg().map((l) => round(l, 2))
    }
  }).pipe(Effect.scoped)
})

/** `W4b [sizes…]`: the workload for those fleet sizes (default 1 2 4), or `undefined` when they are not valid. */
export const parse = (args: ReadonlyArray<string>): Workload | undefined => {
  const sizes = args.length === 0 ? [1, 2, 4] : args.map(Number)
  return sizes.every((n) => Number.isInteger(n) && n >= 1 && n <= 16) ? make(sizes) : undefined
}
