/**
 * The partition test, with real processes against the Postgres server: worker A runs six long
 * runs; then its database connections are cut (every backend with its `application_name` is
 * terminated, again and again, for longer than its lease) while worker B waits. A loses its lease,
 * B takes the runs over and finishes them, and from B's first commit on a run A never writes to
 * that run again: no commit of A lands (its stale ones are rejected) and no side effect of A
 * happens. Once the connection is back, A claims new work again.
 */
import * as PgClient from "@effect/sql-pg/PgClient"
import * as SqlClient from "@effect/sql/SqlClient"
import { describe, expect, it } from "@effect/vitest"
import { Clock, Context, type Duration, Effect, Layer, Option, Random, Redacted } from "effect"
import * as CircuitBreaker from "../src/CircuitBreaker.js"
import * as RunStoreSql from "../src/layers/sql/RunStoreSql.js"
import * as WorkQueueSql from "../src/layers/sql/WorkQueueSql.js"
import * as Runner from "../src/Runner.js"
import * as Worker from "../src/Worker.js"
import { graph, installProbes } from "./chaos/ChaosGraph.js"
import { claimsLost, drain, spawnWorker } from "./chaos/Fleet.js"
import type { Options } from "./chaos/Protocol.js"
import { type CommitLine, verify } from "./chaos/Verify.js"
import * as Postgres from "./support/Postgres.js"

const lease = { leaseMillis: 1500, heartbeatMillis: 300, pollMillis: 200 }
const optionsA: Options = { ...lease, concurrency: 8 }
const optionsB: Options = { ...lease, concurrency: 8 }
/** The partitioned runs: 104 steps each, slow enough to be mid-run when the cut starts and when B takes over. */
const partitioned = { count: 6, limit: 100, pace: 2 }
/** The runs submitted after the cut, to see A claim again. */
const afterwards = { count: 12, limit: 2, pace: 3 }
/** How long A's connections are cut: more than twice the lease. */
const cutMillis = 4000

/** Repeats `effect` every 50 ms until `done` holds for its value; none after `timeout`. */
const poll = <A, E, R>(effect: Effect.Effect<A, E, R>, done: (a: A) => boolean, timeout: Duration.DurationInput) =>
  Effect.gen(function*() {
    while (true) {
      const value = yield* effect
      if (done(value)) return value
      yield* Effect.sleep("50 millis")
    }
  }).pipe(Effect.timeoutOption(timeout))

describe("partition with real worker processes", () => {
  it.live.runIf(Postgres.available)("a worker cut off from the database loses its runs and never writes after the new owner's first commit", () =>
    Effect.gen(function*() {
      const database = yield* Layer.build(Postgres.migratedDatabase("fg_partition"))
      const url = Context.get(database, PgClient.PgClient).config.url
      if (url === undefined) return yield* Effect.dieMessage("the fresh database has no URL")
      const Db = Layer.succeedContext(database)
      const sql = Context.get(database, SqlClient.SqlClient)
      yield* installProbes.pipe(Effect.provide(Db))

      const compiled = yield* graph
      const Store = RunStoreSql.layer().pipe(Layer.provideMerge(Db))
      const Queue = WorkQueueSql.layer.pipe(Layer.provideMerge(Store))
      const Submit = Runner.layer().pipe(Layer.provideMerge(Layer.merge(Queue, CircuitBreaker.layer)))
      const submit = (batch: { readonly count: number; readonly limit: number; readonly pace: number }) =>
        Effect.forEach(
          Array.from({ length: batch.count }),
          () => Effect.map(Worker.submit(compiled, { limit: batch.limit, pace: batch.pace }), (r) => r.run.runId)
        ).pipe(Effect.provide(Submit))

      const suffix = yield* Random.nextIntBetween(100_000, 999_999)
      const appA = `partition-a-${suffix}`
      const appB = `partition-b-${suffix}`
      const a = yield* spawnWorker(Redacted.value(url), appA, optionsA)
      const cutOff = yield* submit(partitioned)

      const auditCount = (app: string, kind: string) =>
        Effect.map(
          sql<{ readonly runs: string }>`
            SELECT count(DISTINCT run_id) AS runs FROM chaos_audit
            WHERE app = ${app} AND kind = ${kind} AND ${sql.in("run_id", cutOff)}`,
          ([row]) => Number(row!.runs)
        )
      const b = yield* spawnWorker(Redacted.value(url), appB, optionsB)
      const heldByA = yield* poll(auditCount(appA, "commit"), (n) => n === partitioned.count, "30 seconds")
      expect(heldByA, "A runs every partitioned run before the cut").toEqual(Option.some(partitioned.count))
      expect(yield* auditCount(appB, "claim"), "B has taken none of them before the cut").toBe(0)

      const serverMicros = Effect.map(
        sql<{ readonly now: string }>`SELECT (extract(epoch from clock_timestamp()) * 1000000)::bigint AS now`,
        ([row]) => Number(row!.now)
      )
      const cutStart = yield* serverMicros
      let terminated = 0
      const cutUntil = (yield* Clock.currentTimeMillis) + cutMillis
      while ((yield* Clock.currentTimeMillis) < cutUntil) {
        const [row] = yield* sql<{ readonly n: string }>`
          SELECT count(pg_terminate_backend(pid)) AS n FROM pg_stat_activity WHERE application_name = ${appA}`
        terminated += Number(row!.n)
      }
      const cutEnd = yield* serverMicros
      const latestStatus = () => [...a.lines].reverse().find((l) => l._tag === "status")
      yield* Effect.sleep("1100 millis")
      const statusAfterCut = latestStatus()

      const completed = (ids: ReadonlyArray<string>) =>
        Effect.map(
          sql<{ readonly n: string }>`
            SELECT count(*) AS n FROM fibergraph.runs WHERE status = 'completed' AND ${sql.in("run_id", ids)}`,
          ([row]) => Number(row!.n)
        )
      const until = (ids: ReadonlyArray<string>, timeout: Duration.DurationInput) =>
        poll(completed(ids), (n) => n === ids.length, timeout)
      yield* until(cutOff, "60 seconds")

      const later = yield* submit(afterwards)
      yield* until(later, "30 seconds")
      yield* Effect.sleep("1 second")
      const [listening] = yield* sql<{ readonly n: string }>`
        SELECT count(*) AS n FROM pg_stat_activity WHERE application_name = ${appA} AND query ILIKE 'LISTEN%'`
      const aliveAtEnd = { a: a.alive(), b: b.alive() }
      const statusA = latestStatus()
      yield* Effect.all([drain(a), drain(b)], { concurrency: 2 })

      const lines = [a, b].flatMap((proc) =>
        proc.lines.flatMap((l): Array<CommitLine> => l._tag === "commit" ? [{ ...l, app: proc.app }] : [])
      )
      const runs = new Map([
        ...cutOff.map((id) => [id, partitioned.limit] as const),
        ...later.map((id) => [id, afterwards.limit] as const)
      ])
      const verdict = yield* verify(runs, lines, { allowDefects: true }).pipe(Effect.provide(Db))
      const { audit, effects } = verdict.snapshot

      const afterTakeover: Array<string> = []
      const takeovers: Array<string> = []
      for (const runId of cutOff) {
        const rows = audit.filter((r) => r.runId === runId)
        const claimB = rows.find((r) => r.kind === "claim" && r.app === appB)
        if (claimB === undefined) {
          afterTakeover.push(`${runId}: B never claimed it`)
          continue
        }
        const firstB = rows.find((r) => r.kind === "commit" && r.newEpoch === claimB.newEpoch)
        if (firstB === undefined) {
          afterTakeover.push(`${runId}: B never committed under its epoch ${claimB.newEpoch}`)
          continue
        }
        takeovers.push(`${runId.slice(-8)}: claimed by B at +${((claimB.at - cutStart) / 1000).toFixed(0)} ms, first commit at step ${firstB.oldStep}`)
        for (const row of rows) {
          if (row.app === appA && row.id > firstB.id) {
            afterTakeover.push(`${runId}: A ${row.kind === "commit" ? `committed step ${row.oldStep}` : "claimed it"} after B's first commit`)
          }
        }
        for (const row of effects) {
          if (row.runId === runId && row.app === appA && row.at > firstB.at) {
            afterTakeover.push(
              `${runId}: A executed ${row.key.slice(runId.length + 1)} (epoch ${row.epoch}) ` +
                `${((row.at - firstB.at) / 1000).toFixed(0)} ms after B's first commit (cut ended ` +
                `${((cutEnd - firstB.at) / 1000).toFixed(0)} ms after it)`
            )
          }
        }
      }
      const linesA = lines.filter((l) => l.app === appA)
      const staleA = linesA.filter((l) => l.outcome === "stale" && cutOff.includes(l.runId)).length
      const defectsA = linesA.filter((l) => l.outcome === "defect").length
      const throughCut = audit.filter((r) => r.app === appA && r.kind === "commit" && r.at >= cutStart && r.at <= cutEnd).length
      const recoveredA = new Set(audit.filter((r) => r.app === appA && r.kind === "commit" && later.includes(r.runId)).map((r) => r.runId))
      console.log(
        `[partition] A's connections cut for ${((cutEnd - cutStart) / 1000).toFixed(0)} ms ` +
          `(${terminated} backends terminated, lease ${lease.leaseMillis} ms); ${throughCut} commits of A got through ` +
          `during the cut; ${claimsLost(a)} claim-lost log lines in A\n` +
          `[partition] takeovers: ${takeovers.join("; ")}\n` +
          `[partition] A: ${staleA} stale commits rejected, ${defectsA} commits died with the connection; ` +
          `after the cut A ran ${recoveredA.size} of ${later.length} new runs; ` +
          `A ${Number(listening!.n) > 0 ? "listens for notifications again" : "no longer listens for notifications"}\n` +
          `[partition] A's own account after the cut: ${JSON.stringify(statusAfterCut)}, at the end: ${JSON.stringify(statusA)}\n` +
          `[partition] writes of A after B's first commit: ${afterTakeover.length === 0 ? "none" : `\n  ${afterTakeover.join("\n  ")}`}\n` +
          `[partition] verification: ${verdict.violations.length} violations; ${verdict.figures.reexecutedInstances} node instances re-executed`
      )
      expect(aliveAtEnd, "both workers survive the partition").toEqual({ a: true, b: true })
      expect(terminated, "the cut terminated A's backends").toBeGreaterThan(0)
      expect(verdict.violations).toEqual([])
      expect(afterTakeover).toEqual([])
      expect(recoveredA.size, "A claims and runs new work once its connection is back").toBeGreaterThan(0)
    }).pipe(Effect.scoped), 180_000)
})
