/**
 * A worker process of the chaos and partition tests:
 *
 *   node --import tsx test/chaos/worker.ts <postgres-url> <application-name> <options-json>
 *
 * Connects to the (already migrated) database with its own `application_name`, registers the chaos
 * graph and runs `Worker.layer` until it is killed (SIGTERM drains it). Two instruments wrap the
 * runtime's services, without changing what they do:
 * - the `RunStore`'s `commit` reports every outcome as a `commit` line, counts each stale
 *   (rejected) commit in `chaos_stale` first, and, after a SIGUSR2, stops the process
 *   (SIGSTOP to itself) just before its next commit is sent: a stalled worker the parent resumes
 *   with SIGCONT once another worker has taken the run over. The commit is made uninterruptible so
 *   its outcome is always seen (interrupting a sent statement does not stop it at the server);
 * - the `WorkQueue`'s `claim` is counted (asks, and asks that died), for the status line;
 * - the `Runner`'s `adopt` runs under `ClaimEpoch` = the claim's epoch, which the run's fibers
 *   inherit, so each side-effect row names the epoch of the worker that executed it.
 */
import * as NodeRuntime from "@effect/platform-node/NodeRuntime"
import * as PgClient from "@effect/sql-pg/PgClient"
import * as SqlClient from "@effect/sql/SqlClient"
import { Cause, Duration, Effect, Exit, Layer, Option, Redacted, Schema } from "effect"
import { writeSync } from "node:fs"
import * as CircuitBreaker from "../../src/CircuitBreaker.js"
import { EventSequenceConflictError, RunNotFoundError, StaleClaimError } from "../../src/Errors.js"
import * as RunStoreSql from "../../src/layers/sql/RunStoreSql.js"
import * as WorkQueueSql from "../../src/layers/sql/WorkQueueSql.js"
import * as Runner from "../../src/Runner.js"
import * as GraphRegistry from "../../src/services/GraphRegistry.js"
import { RunStore, type StepCommit } from "../../src/services/RunStore.js"
import { WorkQueue } from "../../src/services/WorkQueue.js"
import * as Worker from "../../src/Worker.js"
import { ClaimEpoch, countStale, graph } from "./ChaosGraph.js"
import { Args, Line, type Outcome, pauseSignal } from "./Protocol.js"

const encodeLine = Schema.encodeSync(Line)

/** Writes one protocol line synchronously: once the parent reads it, the worker has passed that point. */
const emit = (line: Line) => Effect.sync(() => writeSync(1, `${JSON.stringify(encodeLine(line))}\n`))

/** Set by SIGUSR2: stop at the next commit. */
const pause = { requested: false }

const outcomeOf = (exit: Exit.Exit<unknown, unknown>): { readonly outcome: Outcome; readonly detail: string } => {
  if (Exit.isSuccess(exit)) return { outcome: "ok", detail: "" }
  const failure = Cause.failureOption(exit.cause)
  if (Option.isSome(failure)) {
    const error = failure.value
    if (error instanceof StaleClaimError) return { outcome: "stale", detail: error.message }
    if (error instanceof EventSequenceConflictError) return { outcome: "conflict", detail: error.message }
    if (error instanceof RunNotFoundError) return { outcome: "not-found", detail: error.message }
  }
  return { outcome: "defect", detail: Cause.pretty(exit.cause).split("\n")[0] ?? "" }
}

/** The SQL store with every commit reported, stale ones counted, and the requested pause. */
const InstrumentedStore = Layer.effect(
  RunStore,
  Effect.gen(function*() {
    const store = yield* RunStoreSql.make()
    const sql = yield* SqlClient.SqlClient
    const report = (c: StepCommit, exit: Exit.Exit<unknown, unknown>) =>
      Effect.gen(function*() {
        const { detail, outcome } = outcomeOf(exit)
        if (outcome === "stale") {
          yield* countStale.pipe(Effect.provideService(SqlClient.SqlClient, sql), Effect.timeout("2 seconds"), Effect.ignore)
        }
        yield* emit({ _tag: "commit", runId: c.runId, epoch: c.epoch, expectedStep: c.expectedStep, step: c.step, outcome, detail })
      })
    return RunStore.of({
      ...store,
      commit: (c) =>
        Effect.gen(function*() {
          if (pause.requested) {
            pause.requested = false
            yield* emit({ _tag: "pausing", runId: c.runId, epoch: c.epoch, expectedStep: c.expectedStep })
            yield* Effect.sync(() => process.kill(process.pid, "SIGSTOP"))
          }
          return yield* store.commit(c).pipe(Effect.onExit((exit) => report(c, exit)))
        }).pipe(Effect.uninterruptible)
    })
  })
)

/** How often the worker asked the queue for a claim, and how many asks died. */
const claims = { calls: 0, defects: 0 }

/** The SQL queue, with its claims counted. */
const CountedQueue = Layer.effect(
  WorkQueue,
  Effect.map(WorkQueueSql.make, (queue) =>
    WorkQueue.of({
      ...queue,
      claim: (workerId, options) =>
        Effect.suspend(() => {
          claims.calls++
          return queue.claim(workerId, options).pipe(Effect.onError(() => Effect.sync(() => claims.defects++)))
        })
    }))
)

/** The runner, with each adopted run's fibers running under the claim's epoch. */
const EpochRunner = Layer.scoped(
  Runner.Runner,
  Effect.map(Runner.make(), (runner) =>
    Runner.Runner.of({
      ...runner,
      adopt: (graph, run) => Effect.locally(runner.adopt(graph, run), ClaimEpoch, run.claimEpoch)
    }))
)

const program = Effect.gen(function*() {
  const [url, app, options] = yield* Schema.decodeUnknown(Args)(process.argv.slice(2))
  const compiled = yield* graph
  const Sql = PgClient.layer({
    url: Redacted.make(url),
    applicationName: app,
    maxConnections: 8,
    connectTimeout: "3 seconds"
  })
  const Store = InstrumentedStore.pipe(Layer.provideMerge(Sql))
  const Queue = CountedQueue.pipe(Layer.provideMerge(Store))
  const Run = EpochRunner.pipe(Layer.provideMerge(Layer.merge(Queue, CircuitBreaker.layer)))
  const Main = Worker.layer({
    workerId: app,
    concurrency: options.concurrency,
    lease: Duration.millis(options.leaseMillis),
    heartbeat: Duration.millis(options.heartbeatMillis),
    poll: Duration.millis(options.pollMillis),
    shutdownGrace: "2 seconds"
  }).pipe(Layer.provideMerge(GraphRegistry.layer([compiled]).pipe(Layer.provideMerge(Run))))

  yield* Effect.sync(() => process.on(pauseSignal, () => {
    pause.requested = true
  }))
  yield* Effect.gen(function*() {
    const worker = yield* Worker.WorkflowWorker
    yield* emit({ _tag: "ready", pid: process.pid, app })
    return yield* Effect.flatMap(worker.status, (status) =>
      emit({
        _tag: "status",
        claimCalls: claims.calls,
        claimDefects: claims.defects,
        claimed: status.claimed,
        completed: status.completed,
        leasesLost: status.leasesLost,
        active: status.active.length
      })).pipe(Effect.delay("1 second"), Effect.forever)
  }).pipe(Effect.provide(Main))
})

NodeRuntime.runMain(
  program.pipe(Effect.tapErrorCause((cause) => emit({ _tag: "error", message: Cause.pretty(cause) }))),
  { disableErrorReporting: true }
)
