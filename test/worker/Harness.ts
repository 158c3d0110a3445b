/**
 * The harness of the worker tests: the services a worker runs against (store, queue, registry and
 * an "API" runner that submits and answers runs), a `RunStore` that records every commit attempt
 * with its epoch (and can be made to die on a run's commits), workers started and stopped like
 * processes (each with its own `Runner`), and one way to wait for things on either clock.
 */
import * as SqlClient from "@effect/sql/SqlClient"
import {
  Cause,
  Context,
  Duration,
  Effect,
  Exit,
  Fiber,
  HashMap,
  Layer,
  Logger,
  Option,
  Scope,
  TestClock
} from "effect"
import * as CircuitBreaker from "../../src/CircuitBreaker.js"
import type { CircuitBreakers } from "../../src/CircuitBreaker.js"
import * as MemoryStore from "../../src/layers/memory/MemoryStore.js"
import * as SqlStore from "../../src/layers/sql/SqlStore.js"
import * as Runner from "../../src/Runner.js"
import type { GraphRegistry } from "../../src/services/GraphRegistry.js"
import { RunStore } from "../../src/services/RunStore.js"
import type { WorkQueue } from "../../src/services/WorkQueue.js"
import * as Worker from "../../src/Worker.js"
import { type LogLine, Probe, type ProbeState, probeLayer, registryLayer } from "./Graphs.js"

/** One attempt to commit a step. */
export interface CommitRecord {
  readonly runId: string
  readonly epoch: number
  readonly expectedStep: number
  readonly seqs: ReadonlyArray<number>
  /** `ok`, or the tag of the error (`defect` when it died). */
  readonly outcome: string
}

/** The commit attempts of one test, and the runs whose commits die (a broken database). */
export class Commits extends Context.Tag("test/worker/Commits")<Commits, {
  readonly log: Array<CommitRecord>
  readonly poisoned: Set<string>
}>() {}

const commitsLayer = Layer.sync(Commits, () => ({ log: [], poisoned: new Set<string>() }))

/** Wraps a store so every commit attempt is recorded, and the commits of poisoned runs die. */
const recorded = <ROut, E, R>(store: Layer.Layer<ROut | RunStore, E, R>): Layer.Layer<ROut | RunStore, E, R | Commits> =>
  Layer.effect(
    RunStore,
    Effect.gen(function*() {
      const inner = yield* RunStore
      const commits = yield* Commits
      return RunStore.of({
        ...inner,
        commit: (commit) => {
          const entry = (outcome: string): CommitRecord => ({
            runId: commit.runId,
            epoch: commit.epoch,
            expectedStep: commit.expectedStep,
            seqs: commit.events.map((e) => e.seq),
            outcome
          })
          if (commits.poisoned.has(commit.runId)) {
            return Effect.suspend(() => {
              commits.log.push(entry("defect"))
              return Effect.die(new Error(`disk on fire while committing run ${commit.runId}`))
            })
          }
          return inner.commit(commit).pipe(
            Effect.onExit((exit) =>
              Effect.sync(() => {
                const outcome = Exit.isSuccess(exit)
                  ? "ok"
                  : Option.match(Cause.failureOption(exit.cause), { onNone: () => "defect", onSome: (e) => e._tag })
                commits.log.push(entry(outcome))
              })
            )
          )
        }
      })
    })
  ).pipe(Layer.provideMerge(store))

/** Everything a test's workers and the test itself use. */
export type Env = Runner.Runner | RunStore | WorkQueue | GraphRegistry | CircuitBreakers | Commits | Probe

/** The services of a test over a store-and-queue backend (which may need `Commits`). */
export const envLayer = <E, R>(
  backend: Layer.Layer<RunStore | WorkQueue, E, R>
): Layer.Layer<Env, E, Exclude<R, Commits | Probe>> =>
  Layer.mergeAll(Runner.layer(), registryLayer).pipe(
    Layer.provideMerge(Layer.merge(backend, CircuitBreaker.layer)),
    Layer.provideMerge(Layer.merge(commitsLayer, probeLayer))
  ) as Layer.Layer<Env, E, Exclude<R, Commits | Probe>>

/** The in-memory queue over the in-memory store. */
export const memoryBackend = recorded(MemoryStore.layer())

/** The SQL queue and store on a database. */
export const sqlBackend = <E, R>(database: Layer.Layer<SqlClient.SqlClient, E, R>) =>
  recorded(SqlStore.layer()).pipe(Layer.provide(database))

/** Which clock a suite runs on: the `TestClock` (moved by the test) or the real one. */
export interface Clocked {
  readonly kind: "test" | "live"
  /** Lets `millis` pass: moves the `TestClock`, or sleeps. */
  readonly advance: (millis: number) => Effect.Effect<void>
}

/** The `TestClock`. */
export const testClock: Clocked = {
  kind: "test",
  advance: (millis) => Effect.zipRight(TestClock.adjust(millis), yieldMany(20))
}

/** The real clock. */
export const liveClock: Clocked = { kind: "live", advance: (millis) => Effect.sleep(millis) }

const yieldMany = (n: number) => Effect.repeatN(Effect.yieldNow(), n - 1)

/**
 * Waits until `condition` holds, letting time pass in steps of `step` ms (on the `TestClock`, other
 * fibers first get to run without the clock moving), for at most `within` ms of that clock. Fails
 * the test with `what` (and `detail`, if given) otherwise.
 */
export const until = <E, R>(
  clock: Clocked,
  condition: Effect.Effect<boolean, E, R>,
  what: string,
  options: { readonly step?: number; readonly within?: number; readonly detail?: Effect.Effect<string, never, R> } = {}
) =>
  Effect.gen(function*() {
    const step = options.step ?? (clock.kind === "test" ? 1_000 : 25)
    const within = options.within ?? (clock.kind === "test" ? 600_000 : 20_000)
    let waited = 0
    while (true) {
      if (clock.kind === "test") {
        for (let i = 0; i < 200; i++) {
          if (yield* condition) return
          yield* Effect.yieldNow()
        }
      }
      if (yield* condition) return
      if (waited >= within) break
      yield* clock.advance(step)
      waited += step
    }
    const detail = options.detail === undefined ? "" : `: ${yield* options.detail}`
    return yield* Effect.dieMessage(`gave up after ${waited} ms waiting for ${what}${detail}`)
  })

/** Lets the other fibers run without moving any clock (on the real clock: for `millis`). */
export const settle = (clock: Clocked, millis = 200) =>
  clock.kind === "test" ? yieldMany(500) : Effect.sleep(millis)

/** A worker started like a process: its own runner, its own scope, its logs captured in the probe. */
export interface RunningWorker {
  readonly id: string
  readonly status: Effect.Effect<Worker.WorkerStatus>
  readonly runner: Runner.Runner["Type"]
  /** Closes the worker's scope (graceful shutdown) and waits for it. */
  readonly close: Effect.Effect<void>
  /** The lines it (and its runner) logged. */
  readonly logs: Effect.Effect<ReadonlyArray<LogLine>>
}

const captureLogger = (probe: ProbeState, workerId: string) =>
  Logger.make(({ annotations, logLevel, message }) => {
    const parts = Array.isArray(message) ? message : [message]
    probe.logs.push({
      level: logLevel.label,
      message: parts.map((p) => (typeof p === "string" ? p : String(p))).join(" "),
      annotations: { ...Object.fromEntries(HashMap.toEntries(annotations)), loggedBy: workerId }
    })
  })

/**
 * Starts a worker (with its own runner) in a scope of its own. The test's scope stops it at the end
 * if the test did not, waiting at most its shutdown grace and a little more (and, on the
 * `TestClock`, moving the clock): a shutdown that does not end then is left behind, detached, so
 * the tests that are not about shutdown still end.
 */
export const spawnWorker = (clock: Clocked, options: Worker.Options & { readonly workerId: string }) =>
  Effect.gen(function*() {
    const probe = yield* Probe
    const scope = yield* Scope.make()
    const context = yield* Layer.buildWithScope(Worker.layer(options).pipe(Layer.provideMerge(Runner.layer())), scope).pipe(
      Effect.provide(Logger.replace(Logger.defaultLogger, captureLogger(probe, options.workerId)))
    )
    const worker = Context.get(context, Worker.WorkflowWorker)
    const close = Scope.close(scope, Exit.void)
    const grace = ms(options.shutdownGrace ?? "10 seconds")
    yield* Effect.addFinalizer(() => stopWith(clock, close, { limit: grace + 2_000 }))
    const running: RunningWorker = {
      id: options.workerId,
      status: worker.status,
      runner: Context.get(context, Runner.Runner),
      close,
      logs: Effect.sync(() => probe.logs.filter((l) => l.annotations["loggedBy"] === options.workerId))
    }
    return running
  })

/**
 * Closes a worker's scope (a graceful shutdown) and waits for it for at most `limit` ms of the
 * suite's clock (on the `TestClock`, moving it in steps of `step` ms). Returns how long the
 * shutdown took, or none if it had not ended by then. The shutdown runs detached (a daemon fiber)
 * so that one that never ends cannot hold up the test.
 */
export const stopWith = (
  clock: Clocked,
  close: Effect.Effect<void>,
  options: { readonly step?: number; readonly limit?: number } = {}
) =>
  Effect.gen(function*() {
    const step = options.step ?? (clock.kind === "test" ? 1_000 : 25)
    const limit = options.limit ?? 60_000
    const fiber = yield* Effect.forkDaemon(close)
    let waited = 0
    while (true) {
      if (clock.kind === "test") yield* yieldMany(50)
      if (Option.isSome(yield* Fiber.poll(fiber))) return Option.some(waited)
      if (waited >= limit) return Option.none<number>()
      yield* clock.kind === "test" ? TestClock.adjust(step) : Effect.sleep(step)
      waited += step
    }
  })

/** Stops a worker and fails the test if its shutdown did not end within `limit` ms; returns how long it took. */
export const stop = (clock: Clocked, worker: RunningWorker, options: { readonly step?: number; readonly limit: number }) =>
  Effect.flatMap(stopWith(clock, worker.close, options), (took) =>
    Option.match(took, {
      onNone: () => Effect.dieMessage(`worker ${worker.id} did not stop: its shutdown had not ended after ${options.limit} ms`),
      onSome: Effect.succeed
    }))

/** Milliseconds of a duration. */
export const ms = (d: Duration.DurationInput) => Duration.toMillis(d)
