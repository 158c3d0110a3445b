/**
 * W6: recovery from a SIGKILLed worker process. Each round starts two worker processes (8 runs at a
 * time, lease 2 s, heartbeat 500 ms) on one fresh server database. The victim claims 8 runs of the
 * 10-step chain (each node sleeps 100 ms); once every run has committed 2 steps the survivor starts
 * and, once its first claim attempt has found nothing, after a random 0–500 ms (a random point of
 * the victim's heartbeat cycle) the victim is SIGKILLed. Per run:
 * kill → its lease expiry (`lease_until` as the victim last renewed it) → the survivor's claim →
 * its job done. Three rounds.
 *
 * `npm run bench -- W6 [poll-ms]` (the workers' fallback poll; default 2000, the worker default).
 */
import * as SqlClient from "@effect/sql/SqlClient"
import { Array as Arr, Console, Duration, Effect, Random } from "effect"
import { loadavg } from "node:os"
import { Worker } from "../src/index.js"
import {
  check,
  checkAlive,
  connectAdmin,
  describe,
  distribution,
  epochMs,
  round,
  scratchDatabase,
  serverUrl,
  spawnWorker,
  submitterLayer,
  Unavailable,
  withDatabase,
  type WorkerProcessOptions,
  type Workload
} from "./Harness.js"
import { awaitDone, checkRuns, fleetChain, runsOf } from "./W4b.js"

const ROUNDS = 3
const RUNS = 8
const NODE_MILLIS = 100
const LEASE_MILLIS = 2_000
const HEARTBEAT_MILLIS = 500
const CONCURRENCY = 8
const POOL = 10
const GRAPH_ID = "bench-recovery"
/** Steps every run must have committed on the victim before it is killed. */
const STEPS_BEFORE_KILL = 2

type FleetGraph = Effect.Effect.Success<ReturnType<typeof fleetChain>>

/** Polls until `ok` holds, every 20 ms, failing after `timeout`. */
const until = <R>(what: string, ok: Effect.Effect<boolean, unknown, R>, timeout: Duration.DurationInput) =>
  Effect.gen(function*() {
    while (!(yield* ok)) yield* Effect.sleep("20 millis")
  }).pipe(
    Effect.timeoutFail({
      duration: timeout,
      onTimeout: () => new Unavailable({ what: "W6", reason: `${what} within ${Duration.format(timeout)}` })
    })
  )

/** One round: kill the worker holding 8 runs, and time each run's recovery on the survivor. */
const recoveryRound = (
  graph: FleetGraph,
  url: Parameters<typeof spawnWorker>[0],
  pollMillis: number,
  index: number
) =>
  Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    const load1 = loadavg()[0]!
    const tenant = `round-${index}`
    const options = (role: string): WorkerProcessOptions => ({
      workerId: `w6-${role}-${index}`,
      graphId: GRAPH_ID,
      nodeMillis: NODE_MILLIS,
      concurrency: CONCURRENCY,
      leaseMillis: LEASE_MILLIS,
      heartbeatMillis: HEARTBEAT_MILLIS,
      pollMillis,
      pool: POOL
    })
    const [victim, survivor] = yield* Effect.all(
      [spawnWorker(url, options("victim")), spawnWorker(url, options("survivor"))],
      { concurrency: "unbounded" }
    )
    yield* victim.go
    yield* Effect.sleep("500 millis")
    yield* Effect.forEach(Arr.range(1, RUNS), () => Worker.submit(graph, {}, { tenant }), { discard: true })
    yield* until(
      `the victim did not claim all ${RUNS} runs and commit ${STEPS_BEFORE_KILL} steps of each`,
      Effect.map(
        sql<{ readonly low: string | number | null }>`SELECT min(step) AS low FROM fibergraph.runs WHERE tenant = ${tenant}`,
        ([row]) => new Set(victim.claims.map((c) => c.runId)).size === RUNS && Number(row?.low ?? 0) >= STEPS_BEFORE_KILL
      ),
      "60 seconds"
    )
    yield* survivor.go
    yield* until("the survivor made no first claim attempt", Effect.sync(() => survivor.empty.length > 0), "30 seconds")
    yield* Effect.sleep(Duration.millis(yield* Random.nextIntBetween(0, HEARTBEAT_MILLIS)))
    yield* check("W6", survivor.claims.length === 0, () => `round ${index}: the survivor claimed a run before the kill`)
    yield* checkAlive("W6", [victim, survivor])

    const killedAt = yield* epochMs
    yield* victim.kill("SIGKILL")
    const exit = yield* victim.exited
    yield* check("W6", exit.signal === "SIGKILL", () => `round ${index}: the victim ended with ${exit.code ?? exit.signal}, not SIGKILL`)
    const atKill = yield* sql<{
      readonly run_id: string
      readonly step: number
      readonly job_status: string
      readonly lease_until: string | number | null
    }>`
      SELECT r.run_id, r.step, j.status AS job_status, j.lease_until
      FROM fibergraph.runs r JOIN fibergraph.jobs j ON j.run_id = r.run_id WHERE r.tenant = ${tenant}`
    const held = atKill.filter((r) => r.job_status === "claimed")
    yield* check("W6", held.length > 0, () => `round ${index}: the victim held no run when it was killed`)

    yield* awaitDone("W6", tenant, RUNS, [survivor], "20 millis", "60 seconds")
    const rows = yield* runsOf(tenant)
    yield* checkRuns("W6", `round ${index}`, rows, RUNS)
    const done = new Map(rows.map((r) => [r.run_id, r]))
    const reclaims = new Map(survivor.claims.map((c) => [c.runId, c]))
    yield* check("W6", held.every((r) => reclaims.has(r.run_id) && done.get(r.run_id)?.claimed_by === survivor.workerId), () =>
      `round ${index}: not every run the victim held was claimed and finished by the survivor`)

    const perRun = held.map((r) => {
      const expiry = Number(r.lease_until)
      const reclaim = reclaims.get(r.run_id)!.at
      const finished = done.get(r.run_id)!.done_at
      return {
        step_at_kill: Number(r.step),
        kill_to_expiry: expiry - killedAt,
        expiry_to_claim: reclaim - expiry,
        kill_to_claim: reclaim - killedAt,
        claim_to_done: finished - reclaim,
        kill_to_done: finished - killedAt
      }
    })
    return { index, load1: round(load1, 2), held: held.length, perRun, survivorEmptyClaims: survivor.empty.length }
  }).pipe(Effect.scoped)

/** The W6 workload with the workers' poll at `pollMillis`. */
export const make = (pollMillis: number): Workload => ({
  name: "W6",
  run: Effect.gen(function*() {
    const url = yield* Effect.mapError(serverUrl, (e) => new Unavailable({ what: "DATABASE_URL", reason: describe(e) }))
    const admin = yield* connectAdmin(url)
    const database = yield* scratchDatabase(admin, "w6")
    const databaseUrl = withDatabase(url, database)
    const load1Start = loadavg()[0]!
    const rounds = yield* Effect.gen(function*() {
      const graph = yield* fleetChain(GRAPH_ID, NODE_MILLIS)
      const results = []
      for (let i = 1; i <= ROUNDS; i++) {
        yield* Console.error(`W6: round ${i}…`)
        results.push(yield* recoveryRound(graph, databaseUrl, pollMillis, i))
      }
      return results
    }).pipe(Effect.provide(submitterLayer(databaseUrl, 4)))
    const all = rounds.flatMap((r) => r.perRun)
    const pick = (key: keyof (typeof all)[number]) => distribution(all.map((r) => r[key]))
    const bound = LEASE_MILLIS + 1000
    return {
      workload: "W6",
      lease_ms: LEASE_MILLIS,
      heartbeat_ms: HEARTBEAT_MILLIS,
      poll_ms: pollMillis,
      node_ms: NODE_MILLIS,
      rounds: ROUNDS,
      runs_recovered: all.length,
      kill_to_expiry_ms: pick("kill_to_expiry"),
      expiry_to_claim_ms: pick("expiry_to_claim"),
      kill_to_claim_ms: pick("kill_to_claim"),
      claim_to_done_ms: pick("claim_to_done"),
      kill_to_done_ms: pick("kill_to_done"),
      claimed_within_lease_plus_1s: all.filter((r) => r.kill_to_claim <= bound).length,
      done_within_lease_plus_1s: all.filter((r) => r.kill_to_done <= bound).length,
      per_round: rounds.map((r) => ({
        round: r.index,
        load1: r.load1,
        held: r.held,
        kill_to_claim_ms: r.perRun.map((p) => Math.round(p.kill_to_claim)),
        kill_to_done_ms: r.perRun.map((p) => Math.round(p.kill_to_done)),
        step_at_kill: r.perRun.map((p) => p.step_at_kill)
      })),
      load1: [round(load1Start, 2), round(loadavg()[0]!, 2)]
    }
  }).pipe(Effect.scoped)
})

/** `W6 [poll-ms]`: the workload with that poll (default 2000 ms), or `undefined` when the arguments are not valid. */
export const parse = (args: ReadonlyArray<string>): Workload | undefined => {
  if (args.length > 1) return undefined
  const poll = args.length === 0 ? 2000 : Number(args[0])
  return Number.isInteger(poll) && poll >= 10 ? make(poll) : undefined
}
