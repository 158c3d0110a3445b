/**
 * Shared test helpers: the runner's test layer (Runner + in-memory RunStore + CircuitBreakers),
 * runners built on an existing store, TestClock drivers and event helpers.
 */
import { Chunk, Context, Duration, Effect, Exit, Fiber, Layer, Option, Scope, Stream, TestClock } from "effect"
import { CircuitBreakers } from "../src/CircuitBreaker.js"
import * as CircuitBreaker from "../src/CircuitBreaker.js"
import type { GraphCompileError, GraphProblem } from "../src/Errors.js"
import type { RunEvent } from "../src/Events.js"
import * as Runner from "../src/Runner.js"
import { RunStore } from "../src/services/RunStore.js"
import * as RunStoreMemory from "../src/layers/memory/RunStoreMemory.js"

/** What a test running graphs needs. */
export type TestServices = Runner.Runner | RunStore | CircuitBreakers

/** A fresh runner over a fresh in-memory store and a fresh breaker registry. */
export const testLayer = (options: Runner.Options = {}): Layer.Layer<TestServices> =>
  Runner.layer(options).pipe(Layer.provideMerge(Layer.merge(RunStoreMemory.layer(), CircuitBreaker.layer)))

/** Runs `effect` against a fresh test layer; its runner (and every run in it) stops when the effect ends. */
export const withRunner = <A, E>(
  effect: Effect.Effect<A, E, TestServices>,
  options: Runner.Options = {}
): Effect.Effect<A, E> => Effect.provide(effect, testLayer(options))

/** A runner over an existing store (and, optionally, an existing breaker registry). */
export const runnerOn = (
  store: RunStore["Type"],
  breakers?: CircuitBreakers["Type"]
): Layer.Layer<TestServices> =>
  Runner.layer().pipe(
    Layer.provideMerge(
      Layer.merge(
        Layer.succeed(RunStore, store),
        breakers === undefined ? CircuitBreaker.layer : Layer.succeed(CircuitBreakers, breakers)
      )
    )
  )

/** Builds a runner over `store` in its own scope, so a test can stop it (like a process exit) by closing the scope. */
export const openRunner = (store: RunStore["Type"]) =>
  Effect.gen(function*() {
    const scope = yield* Scope.make()
    const context = yield* Layer.buildWithScope(runnerOn(store), scope)
    return {
      runner: Context.get(context, Runner.Runner),
      stop: Scope.close(scope, Exit.void)
    }
  })

/** The problems of a graph that must not compile. */
export const problemsOf = <A>(compile: Effect.Effect<A, GraphCompileError>) =>
  Effect.map(Effect.flip(compile), (e): ReadonlyArray<GraphProblem> => e.problems)

/** The stored events of a run, from the first. */
export const storedEvents = (runId: string) =>
  Effect.flatMap(RunStore, (store) => store.events(runId, 0))

/** A run's full event stream, collected (the stream ends with the run's terminal event). */
export const collectEvents = (runId: string, afterSeq?: number) =>
  Effect.flatMap(Runner.Runner, (runner) =>
    Effect.map(Stream.runCollect(runner.events(runId, afterSeq)), (c): Array<RunEvent> => Chunk.toArray(c)))

/** Events without what differs between two otherwise identical runs (`at`, `runId`). */
export const comparable = (events: ReadonlyArray<RunEvent>) =>
  events.map((e) => {
    const { at: _at, runId: _runId, ...rest } = e
    return rest
  })

/** The tags of events. */
export const tags = (events: ReadonlyArray<RunEvent>) => events.map((e) => e._tag)

/** The events of one tag. */
export const ofTag = <T extends RunEvent["_tag"]>(events: ReadonlyArray<RunEvent>, tag: T) =>
  events.filter((e): e is Extract<RunEvent, { _tag: T }> => e._tag === tag)

/** Yields until at least `n` sleeps are registered with the TestClock (fails the test if they never are). */
export const awaitSleeps = (n: number) =>
  Effect.gen(function*() {
    for (let i = 0; i < 10_000; i++) {
      const sleeps = yield* TestClock.sleeps()
      if (sleeps.length >= n) return
      yield* Effect.yieldNow()
    }
    return yield* Effect.dieMessage(`expected ${n} pending sleep(s) on the TestClock`)
  })

/** Yields until `condition` holds (fails the test if it never does). */
export const eventually = <E, R>(condition: Effect.Effect<boolean, E, R>, what = "condition") =>
  Effect.gen(function*() {
    for (let i = 0; i < 10_000; i++) {
      if (yield* condition) return
      yield* Effect.yieldNow()
    }
    return yield* Effect.dieMessage(`timed out waiting for ${what}`)
  })

/** Advances the TestClock by `tick` until `fiber` is done (at most `maxTicks` times), then joins it. */
export const advanceUntilDone = <A, E>(
  fiber: Fiber.Fiber<A, E>,
  tick: Duration.DurationInput = "10 millis",
  maxTicks = 2_000
) =>
  Effect.gen(function*() {
    for (let i = 0; i < maxTicks; i++) {
      const done = yield* Fiber.poll(fiber)
      if (Option.isSome(done)) return yield* Fiber.join(fiber)
      yield* TestClock.adjust(tick)
      yield* Effect.yieldNow()
    }
    if (Option.isNone(yield* Fiber.poll(fiber))) {
      yield* Fiber.interrupt(fiber)
      return yield* Effect.dieMessage(`not done after ${maxTicks} clock ticks of ${Duration.format(tick)}`)
    }
    return yield* Fiber.join(fiber)
  })

/** Waits until the stored run has `status` (fails the test if it never does). */
export const awaitStatus = (runId: string, status: string) =>
  Effect.flatMap(RunStore, (store) =>
    eventually(Effect.map(Effect.orDie(store.get(runId)), (run) => run.status === status), `run ${runId} to be ${status}`))

/** The number of sleeps currently registered with the TestClock. */
export const pendingSleeps = Effect.map(TestClock.sleeps(), (s) => s.length)
