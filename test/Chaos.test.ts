/**
 * The chaos test, with real processes against the Postgres server: 300 runs of a graph with
 * parallel branches, a loop and side-effect nodes are queued; four worker processes (lease 1.5 s)
 * run them while faults are injected at random: a worker is SIGKILLed (and replaced), SIGSTOPped
 * for longer than its lease and resumed, or made to stop itself just before sending a step commit
 * and resumed only once another worker has claimed that run (a stalled worker coming back: its
 * commit must be rejected). In the end, from the database: every run completed; no step committed
 * twice; no gap in any event log; no node instance executed twice under the claim that committed
 * its step, nor again after it; every stale write rejected, and counted.
 */
import * as PgClient from "@effect/sql-pg/PgClient"
import * as SqlClient from "@effect/sql/SqlClient"
import { describe, expect, it } from "@effect/vitest"
import { Clock, Context, Deferred, Effect, Fiber, Layer, Option, Random, Redacted, Schedule } from "effect"
import * as CircuitBreaker from "../src/CircuitBreaker.js"
import * as RunStoreSql from "../src/layers/sql/RunStoreSql.js"
import * as WorkQueueSql from "../src/layers/sql/WorkQueueSql.js"
import * as Runner from "../src/Runner.js"
import * as Worker from "../src/Worker.js"
import { graph, installProbes } from "./chaos/ChaosGraph.js"
import { claimsLost, drain, kill, spawnWorker, type WorkerProcess } from "./chaos/Fleet.js"
import type { Line, Options } from "./chaos/Protocol.js"
import { type CommitLine, verify } from "./chaos/Verify.js"
import * as Postgres from "./support/Postgres.js"

const runCount = 300
const rounds = 2
/** Node sleeps are 10–40 ms times this. */
const pace = 2
const workers = 4
const options: Options = { concurrency: 4, leaseMillis: 1500, heartbeatMillis: 300, pollMillis: 200 }
/** Workers stopped (SIGSTOP or a pause before a commit) at once, at most. */
const maxStalled = 2
/** Faults are injected for at most this long; then the fleet is left to finish. */
const faultWindowMillis = 60_000
const completionTimeoutMillis = 200_000

type Fault = "kill" | "stop" | "pause"

/** The faults to inject, in order: every kind early, then a shuffled mix. */
const faultPlan = Effect.gen(function*() {
  const mix = yield* Random.shuffle(Array.from({ length: 24 }, (_, i): Fault => (["kill", "stop", "pause"] as const)[i % 3]!))
  return ["pause", "kill", "stop", "pause", ...mix] as ReadonlyArray<Fault>
})

const isPausing = (line: Line): line is Extract<Line, { _tag: "pausing" }> => line._tag === "pausing"

describe("chaos with real worker processes", () => {
  it.live.runIf(Postgres.available)("kills, stops and stalled commits: every run completes, every stale write is rejected", () =>
    Effect.gen(function*() {
      const database = yield* Layer.build(Postgres.migratedDatabase("fg_chaos"))
      const url = Context.get(database, PgClient.PgClient).config.url
      if (url === undefined) return yield* Effect.dieMessage("the fresh database has no URL")
      const Db = Layer.succeedContext(database)
      const sql = Context.get(database, SqlClient.SqlClient)
      yield* installProbes.pipe(Effect.provide(Db))

      const compiled = yield* graph
      const Store = RunStoreSql.layer().pipe(Layer.provideMerge(Db))
      const Queue = WorkQueueSql.layer.pipe(Layer.provideMerge(Store))
      const Submit = Runner.layer().pipe(Layer.provideMerge(Layer.merge(Queue, CircuitBreaker.layer)))
      const submitted = yield* Effect.forEach(
        Array.from({ length: runCount }),
        () => Effect.map(Worker.submit(compiled, { limit: rounds, pace }), (r) => r.run.runId),
        { concurrency: 8 }
      ).pipe(Effect.provide(Submit))
      const runs = new Map(submitted.map((id) => [id, rounds]))

      const started = yield* Clock.currentTimeMillis
      const elapsedMillis = Effect.map(Clock.currentTimeMillis, (now) => now - started)
      const all: Array<WorkerProcess> = []
      const live = new Set<WorkerProcess>()
      const busy = new Set<WorkerProcess>()
      let spawned = 0
      const figures = { kills: 0, stops: 0, pauses: 0, pausesTakenOver: 0, stalledCommitsRejected: 0 }
      const problems: Array<string> = []

      const epochOf = (runId: string) =>
        Effect.map(
          sql<{ readonly claim_epoch: string }>`SELECT claim_epoch FROM fibergraph.runs WHERE run_id = ${runId}`,
          ([row]) => Number(row?.claim_epoch ?? 0)
        )

      /**
       * A worker that stopped itself before a commit: resumed once another worker has claimed the run.
       * It stays busy from the pause request on, so no other fault resumes it early.
       */
      const watchPauses = (proc: WorkerProcess) =>
        Effect.gen(function*() {
          let from = 0
          while (true) {
            const pausing = yield* proc.waitFor(from, isPausing, "1 hour")
            if (Option.isNone(pausing)) return
            const line = pausing.value
            from = proc.lines.indexOf(line) + 1
            figures.pauses++
            const takenOver = yield* epochOf(line.runId).pipe(
              Effect.repeat({ until: (epoch) => epoch > line.epoch, schedule: Schedule.spaced("100 millis") }),
              Effect.as(true),
              Effect.timeoutOption("10 seconds")
            )
            if (Option.isSome(takenOver)) figures.pausesTakenOver++
            yield* proc.signal("SIGCONT")
            const committed = yield* proc.waitFor(
              from,
              (l): l is CommitLine => l._tag === "commit" && l.runId === line.runId && l.epoch === line.epoch,
              "10 seconds"
            )
            if (Option.isSome(takenOver)) {
              if (Option.isSome(committed) && committed.value.outcome === "stale") figures.stalledCommitsRejected++
              else if (proc.alive()) {
                problems.push(
                  `${proc.app} resumed its commit of ${line.runId} (epoch ${line.epoch}) after another worker claimed ` +
                    `the run: ${Option.match(committed, { onNone: () => "no outcome", onSome: (c) => c.outcome })}`
                )
              }
            }
            busy.delete(proc)
          }
        })

      const spawnOne = Effect.gen(function*() {
        const app = `chaos-w${++spawned}`
        const proc = yield* spawnWorker(Redacted.value(url), app, options)
        all.push(proc)
        live.add(proc)
        yield* Effect.forkScoped(watchPauses(proc))
        return proc
      })

      yield* Effect.forEach(Array.from({ length: workers }), () => spawnOne, { concurrency: workers, discard: true })

      const progress = Effect.map(
        sql<{ readonly completed: string; readonly open: string }>`
          SELECT (SELECT count(*) FROM fibergraph.runs WHERE status = 'completed') AS completed,
                 (SELECT count(*) FROM fibergraph.jobs WHERE status <> 'done') AS open`,
        ([row]) => ({ completed: Number(row!.completed), open: Number(row!.open) })
      )

      const pick = Effect.gen(function*() {
        const candidates = [...live].filter((p) => !busy.has(p) && p.alive())
        if (candidates.length === 0) return Option.none<WorkerProcess>()
        return Option.some(candidates[yield* Random.nextIntBetween(0, candidates.length)]!)
      })

      const inject = (fault: Fault) =>
        Effect.gen(function*() {
          if (fault !== "kill" && busy.size >= maxStalled) return false
          const target = yield* pick
          if (Option.isNone(target)) return false
          const proc = target.value
          switch (fault) {
            case "kill": {
              busy.add(proc)
              yield* kill(proc)
              live.delete(proc)
              busy.delete(proc)
              figures.kills++
              yield* Effect.forkScoped(spawnOne.pipe(Effect.catchAll((e) => Effect.sync(() => problems.push(e.message)))))
              return true
            }
            case "stop": {
              busy.add(proc)
              figures.stops++
              const millis = yield* Random.nextIntBetween(options.leaseMillis + 500, options.leaseMillis + 2000)
              yield* proc.signal("SIGSTOP")
              yield* Effect.forkScoped(
                Effect.sleep(millis).pipe(Effect.zipRight(proc.signal("SIGCONT")), Effect.ensuring(Effect.sync(() => busy.delete(proc))))
              )
              return true
            }
            case "pause": {
              busy.add(proc)
              const requested = yield* proc.requestPause
              if (!requested) busy.delete(proc)
              return requested
            }
          }
        })

      const plan = yield* faultPlan
      const done = yield* Deferred.make<void>()
      const injector = yield* Effect.forkScoped(Effect.gen(function*() {
        let next = 0
        while (next < plan.length && (yield* elapsedMillis) < faultWindowMillis) {
          yield* Effect.sleep(yield* Random.nextIntBetween(400, 1000))
          if (yield* Deferred.isDone(done)) return
          if (yield* inject(plan[next]!)) next++
        }
      }))

      let last = { completed: 0, open: runCount }
      while ((yield* elapsedMillis) < completionTimeoutMillis) {
        last = yield* progress
        if (last.completed === runCount && last.open === 0) break
        yield* Effect.sleep("250 millis")
      }
      yield* Deferred.succeed(done, undefined)
      yield* Fiber.interrupt(injector)
      const elapsed = yield* elapsedMillis
      yield* Effect.forEach([...live], (proc) => drain(proc), { concurrency: "unbounded", discard: true })

      const lines = all.flatMap((proc) =>
        proc.lines.flatMap((l): Array<CommitLine> => l._tag === "commit" ? [{ ...l, app: proc.app }] : [])
      )
      const verdict = yield* verify(runs, lines).pipe(Effect.provide(Db))
      const f = verdict.figures
      const lost = all.reduce((n, proc) => n + claimsLost(proc), 0)
      console.log(
        `[chaos] ${f.runs} runs on ${all.length} worker processes (${workers} at a time) in ${(elapsed / 1000).toFixed(1)} s: ` +
          `${last.completed} completed\n` +
          `[chaos] faults: ${figures.kills} SIGKILLs, ${figures.stops} SIGSTOP/SIGCONT pauses over the lease, ` +
          `${figures.pauses} stops just before a commit (${figures.pausesTakenOver} taken over while stopped)\n` +
          `[chaos] ${f.claims} claims (${f.reclaims} reclaims after a lost lease), ${lost} claim-lost log lines, ` +
          `${f.stepCommits} step commits, each once\n` +
          `[chaos] stale writes rejected: ${f.staleReported} reported by workers, ${f.staleCounted} counted in chaos_stale ` +
          `(${figures.stalledCommitsRejected} of them the resumed commits of stopped workers); none accepted\n` +
          `[chaos] side effects: ${f.sideEffects} executions; ${f.reexecutedInstances} node instances re-executed ` +
          `(${f.extraExecutions} extra executions), all under claims that lost the run before committing the step\n` +
          `[chaos] violations: ${verdict.violations.length}`
      )
      const errors = all.flatMap((proc) =>
        proc.lines.flatMap((l) => l._tag === "error" ? [`${proc.app}: ${l.message}`] : [])
      )
      expect(errors, "worker processes ended with errors").toEqual([])
      expect(problems).toEqual([])
      expect(verdict.violations).toEqual([])
      expect(last.completed, "every run completed within the timeout").toBe(runCount)
      expect(figures.kills).toBeGreaterThanOrEqual(1)
      expect(figures.stops + figures.pauses).toBeGreaterThanOrEqual(1)
      expect(f.staleReported, "the stalled workers' commits were rejected").toBeGreaterThanOrEqual(1)
      expect(f.staleCounted, "every reported stale commit was counted first").toBeGreaterThanOrEqual(f.staleReported)
      expect(f.staleCounted - f.staleReported).toBeLessThanOrEqual(figures.kills)
    }).pipe(Effect.scoped), 300_000)
})
