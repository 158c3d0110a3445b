/**
 * Resume parity: for random graphs (parallel branches with joins, loops, fan-out, failures with
 * retries, final failures), a run whose process dies at any step boundary and is resumed from the
 * store by a new runner ends with the same state and the same event sequence as an uninterrupted run.
 */
import { describe, expect, it } from "@effect/vitest"
import { Context, Deferred, Effect, Exit, Layer, Schema, Scope } from "effect"
import * as fc from "fast-check"
import * as CircuitBreaker from "../src/CircuitBreaker.js"
import type { RunEvent } from "../src/Events.js"
import * as Graph from "../src/Graph.js"
import * as RunStoreMemory from "../src/layers/memory/RunStoreMemory.js"
import * as Runner from "../src/Runner.js"
import { RunStore } from "../src/services/RunStore.js"
import * as State from "../src/State.js"

type Segment =
  | { readonly kind: "plain"; readonly fail: number }
  | { readonly kind: "parallel"; readonly a: number; readonly b: number; readonly fail: number }
  | { readonly kind: "loop"; readonly times: number }
  | { readonly kind: "fanout"; readonly width: number; readonly fail: number }

const segment: fc.Arbitrary<Segment> = fc.oneof(
  fc.record({ kind: fc.constant("plain" as const), fail: fc.integer({ min: 0, max: 2 }) }),
  fc.record({
    kind: fc.constant("parallel" as const),
    a: fc.integer({ min: 1, max: 3 }),
    b: fc.integer({ min: 1, max: 2 }),
    fail: fc.integer({ min: 0, max: 2 })
  }),
  fc.record({ kind: fc.constant("loop" as const), times: fc.integer({ min: 1, max: 4 }) }),
  fc.record({ kind: fc.constant("fanout" as const), width: fc.integer({ min: 1, max: 5 }), fail: fc.integer({ min: 0, max: 1 }) })
)

const Spec = fc.record({
  segments: fc.array(segment, { minLength: 1, maxLength: 4 }),
  /** A node that exhausts its retries, failing the run (-1: none). */
  fatal: fc.integer({ min: -1, max: 3 })
})

const Loops = Schema.Record({ key: Schema.String, value: Schema.Number })

const S = State.define({
  log: State.list(Schema.String),
  counter: State.counter(),
  loops: State.channel(Loops, {
    reducer: State.merge<typeof Loops.Type>(),
    initial: () => ({})
  })
})
type S = State.StateOf<typeof S.channels>

const retry = { retry: { maxAttempts: 3, initialDelay: "0 millis", jitter: false } } as const

const build = (spec: typeof Spec extends fc.Arbitrary<infer A> ? A : never) => {
  let b = Graph.make({ id: "parity", state: S }) as unknown as Graph.Builder<typeof S.channels, string, unknown, never>
  const step = (name: string, fail: number) =>
    b = b.node(name, { policy: retry }, (ctx) =>
      ctx.attempt <= fail
        ? Effect.fail({ _tag: "Flaky", message: `${name} attempt ${ctx.attempt}` })
        : Effect.succeed({ log: [name], counter: 1 }))
  const bounds: Array<{ entry: string; exit: string; loop?: number }> = []
  spec.segments.forEach((seg, i) => {
    const id = `s${i}`
    const fail = spec.fatal === i ? 3 : "fail" in seg ? seg.fail : 0
    switch (seg.kind) {
      case "plain":
        step(id, fail)
        bounds.push({ entry: id, exit: id })
        break
      case "parallel": {
        step(id, 0)
        const branch = (tag: string, n: number) => {
          const names = Array.from({ length: n }, (_, k) => `${id}${tag}${k}`)
          names.forEach((name, k) => step(name, k === 0 ? fail : 0))
          return names
        }
        const as = branch("a", seg.a)
        const bs = branch("b", seg.b)
        step(`${id}j`, 0)
        b = b.edge(id, as[0]!).edge(id, bs[0]!)
        for (const chain of [as, bs]) for (let k = 1; k < chain.length; k++) b = b.edge(chain[k - 1]!, chain[k]!)
        b = b.edge([as.at(-1)!, bs.at(-1)!], `${id}j`)
        bounds.push({ entry: id, exit: `${id}j` })
        break
      }
      case "loop":
        b = b.node(id, {}, (ctx) => Effect.succeed({ log: [id], loops: { [id]: (ctx.state.loops[id] ?? 0) + 1 } }))
        bounds.push({ entry: id, exit: id, loop: seg.times })
        break
      case "fanout":
        step(id, 0)
        b = b.node(`${id}w`, { input: Schema.Number, policy: retry }, (ctx) =>
          ctx.attempt <= (ctx.input === 0 ? fail : 0)
            ? Effect.fail({ _tag: "Flaky", message: "worker" })
            : Effect.succeed({ log: [`${id}w[${ctx.input}]`], counter: ctx.input }))
        step(`${id}j`, 0)
        b = b.fanOut(id, `${id}w`, () => Array.from({ length: seg.width }, (_, k) => k)).edge(`${id}w`, `${id}j`)
        bounds.push({ entry: id, exit: `${id}j` })
        break
    }
  })
  b = b.edge(Graph.START, bounds[0]!.entry)
  bounds.forEach((bound, i) => {
    const next = bounds[i + 1]?.entry ?? Graph.END
    if (bound.loop !== undefined) {
      const { exit, loop } = bound
      b = b.route(exit, (s: S) => (s.loops[exit] ?? 0) < loop ? exit : next, [exit, next])
    } else {
      b = b.edge(bound.exit, next)
    }
  })
  return b.compile
}

const withoutTime = (events: ReadonlyArray<RunEvent>) => events.map(({ at: _at, ...rest }) => rest)

/** Runs a graph on `store` with a runner that lives in its own scope. */
const withRunner = <A, E>(store: RunStore["Type"], f: (runner: Runner.Runner["Type"]) => Effect.Effect<A, E, unknown>) =>
  Effect.gen(function*() {
    const scope = yield* Scope.make()
    const runner = yield* Layer.buildWithScope(
      Runner.layer().pipe(Layer.provide(Layer.merge(Layer.succeed(RunStore, store), CircuitBreaker.layer))),
      scope
    )
    const run = f(Context.get(runner, Runner.Runner)) as Effect.Effect<A, E>
    return yield* run.pipe(Effect.ensuring(Scope.close(scope, Exit.void)))
  })

const reference = (graph: Graph.CompiledGraph<typeof S.channels>) =>
  Effect.gen(function*() {
    const store = yield* RunStoreMemory.make()
    let commits = 0
    const counting = RunStore.of({ ...store, commit: (c) => Effect.tap(store.commit(c), () => Effect.sync(() => commits++)) })
    const result = yield* withRunner(counting, (runner) =>
      Effect.flatMap(runner.start(graph, {}, { runId: "run-1" }), (h) => h.result))
    const events = yield* store.events("run-1", 0)
    return { result, events, commits }
  })

/** Runs until `crashAfter` commits, then "kills the process" (its next commit never returns) and resumes on a new runner. */
const crashAndResume = (graph: Graph.CompiledGraph<typeof S.channels>, crashAfter: number) =>
  Effect.gen(function*() {
    const store = yield* RunStoreMemory.make()
    const blocked = yield* Deferred.make<void>()
    let commits = 0
    const dying = RunStore.of({
      ...store,
      commit: (c) =>
        commits++ < crashAfter ? store.commit(c) : Effect.zipRight(Deferred.succeed(blocked, undefined), Effect.never)
    })
    yield* withRunner(dying, (runner) =>
      Effect.flatMap(runner.start(graph, {}, { runId: "run-1" }), (h) =>
        Effect.raceFirst(Deferred.await(blocked), Effect.asVoid(h.result))))
    const result = yield* withRunner(store, (runner) =>
      Effect.flatMap(runner.resume(graph, "run-1"), (h) => h.result))
    const events = yield* store.events("run-1", 0)
    return { result, events }
  })

describe("resume parity", () => {
  it.live("a run resumed after dying at any step boundary equals an uninterrupted run", () =>
    Effect.promise(() =>
      fc.assert(
        fc.asyncProperty(Spec, async (spec) => {
          await Effect.runPromise(Effect.gen(function*() {
            const graph = yield* build(spec)
            const ref = yield* reference(graph)
            expect(["completed", "failed"]).toContain(ref.result.status)
            expect(ref.events.map((e) => e.seq)).toEqual(ref.events.map((_, i) => i + 1))
            for (let k = 0; k < ref.commits; k++) {
              const resumed = yield* crashAndResume(graph, k)
              expect(resumed.result.status).toEqual(ref.result.status)
              expect(resumed.result.state).toEqual(ref.result.state)
              expect(withoutTime(resumed.events)).toEqual(withoutTime(ref.events))
            }
          }))
        }),
        { numRuns: 60 }
      )
    ))
})
