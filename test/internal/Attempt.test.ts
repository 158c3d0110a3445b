import { assert, describe, it } from "@effect/vitest"
import { Context, DefaultServices, Effect, Option, Schema, Tracer } from "effect"
import * as CircuitBreaker from "../../src/CircuitBreaker.js"
import * as Graph from "../../src/Graph.js"
import type { NodeContext } from "../../src/Node.js"
import * as State from "../../src/State.js"
import * as Subgraph from "../../src/Subgraph.js"
import { CurrentAttempt } from "../../src/internal/Attempt.js"
import { makeSpendTracker } from "../../src/internal/Budget.js"
import { type Draft, type Env, initialPosition, type Position, type Stamp, type StepOutcome } from "../../src/internal/Position.js"
import { startFrontier } from "../../src/internal/Routing.js"
import { runStep } from "../../src/internal/Step.js"

const S = State.define({ value: State.channel(Schema.String) })

class Flaky extends Schema.TaggedError<Flaky>()("Flaky", { attempt: Schema.Number }) {}

const retry = { retry: { maxAttempts: 3, initialDelay: "0 millis", jitter: false } } as const

const stamp: Stamp = (body) => ({ ...body, seq: 0, runId: "run-1", at: 0 }) as unknown as Draft

/** One step of the test graph (its nodes need nothing from the environment). */
const stepOnce = (env: Env, pos: Position) => runStep(env, pos, stamp) as Effect.Effect<StepOutcome>

/** The environment of a one-node graph's run, and its first position. */
const setup = (
  run: (ctx: NodeContext<unknown, unknown>) => Effect.Effect<unknown, unknown>,
  budget: { readonly tokens: number | null } = { tokens: null }
) =>
  Effect.gen(function*() {
    const graph = yield* Graph.make({ id: "attempts", state: S })
      .node("only", { policy: retry }, run as never)
      .edge(Graph.START, "only")
      .edge("only", Graph.END)
      .compile
    const config = {
      maxSteps: 10,
      deadline: null,
      budget: { tokens: budget.tokens, usd: null },
      nodeBudgets: {},
      interruptBefore: [],
      interruptAfter: [],
      concurrency: 4
    }
    const env: Env = {
      graph,
      runId: "run-1",
      config,
      clock: yield* Effect.clock,
      breakers: yield* CircuitBreaker.make,
      spend: makeSpendTracker(graph, { runId: "run-1", usage: { total: { tokens: 0, usd: 0 }, byNode: {} }, config }),
      prefix: "",
      scope: "",
      resumeSource: undefined,
      epoch: 1,
      guard: Effect.void,
      live: () => Effect.void,
      journal: undefined
    }
    const state = State.initial(graph.state, {}) as Record<string, unknown>
    const frontier = startFrontier(env, state)
    assert.isTrue(Array.isArray(frontier))
    return { env, pos: initialPosition(state, frontier as never) }
  })

/** A tracer that records every span it starts (delegating to Effect's built-in one). */
const recordingTracer = () => {
  const native = Context.get(DefaultServices.liveServices, Tracer.Tracer)
  const spans: Array<Tracer.Span> = []
  const tracer = Tracer.make({
    span: (...args) => {
      const span = native.span(...args)
      spans.push(span)
      return span
    },
    context: (f, fiber) => native.context(f, fiber)
  })
  return { spans, tracer }
}

describe("node attempts", () => {
  it.effect("retry with the attempt number in CurrentAttempt, the same as ctx.attempt", () =>
    Effect.gen(function*() {
      const seen: Array<[number, number]> = []
      const { env, pos } = yield* setup((ctx) =>
        Effect.gen(function*() {
          seen.push([ctx.attempt, yield* CurrentAttempt])
          if (ctx.attempt < 3) return yield* new Flaky({ attempt: ctx.attempt })
          return { value: "done" }
        })
      )
      const outcome = yield* stepOnce(env, pos)
      assert.strictEqual(outcome._tag, "Advanced")
      assert.deepStrictEqual(seen, [[1, 1], [2, 2], [3, 3]])
      const retrying = outcome.events.filter((e) => e._tag === "NodeRetrying") as unknown as Array<{ attempt: number }>
      assert.deepStrictEqual(retrying.map((e) => e.attempt), [1, 2])
    }))

  it.effect("a subgraph run by a retried node starts its own nodes at attempt 1", () =>
    Effect.gen(function*() {
      const seen: Array<[number, number]> = []
      const child = yield* Graph.make({ id: "child", state: S })
        .node("inner", {}, (ctx) =>
          Effect.gen(function*() {
            seen.push([ctx.attempt, yield* CurrentAttempt])
            return { value: "inner" }
          }))
        .edge(Graph.START, "inner")
        .edge("inner", Graph.END)
        .compile
      const nested = Subgraph.node(child, { input: () => ({}), output: (s) => ({ value: s.value }) })
      const { env, pos } = yield* setup((ctx) =>
        Effect.gen(function*() {
          seen.push([ctx.attempt, yield* CurrentAttempt])
          if (ctx.attempt === 1) return yield* new Flaky({ attempt: 1 })
          return yield* nested(ctx as never)
        })
      )
      const outcome = yield* stepOnce(env, pos)
      assert.strictEqual(outcome._tag, "Advanced")
      assert.deepStrictEqual(seen, [[1, 1], [2, 2], [1, 1]])
    }))

  it.effect("a failed attempt gives back its reservation, so the next attempt can reserve again", () =>
    Effect.gen(function*() {
      const { env, pos } = yield* setup(
        (ctx) =>
          Effect.gen(function*() {
            yield* ctx.reserve({ tokens: 100 })
            if (ctx.attempt === 1) return yield* new Flaky({ attempt: 1 })
            yield* ctx.recordUsage({ model: "m", inputTokens: 60, outputTokens: 0, usd: 0 })
            return { value: "done" }
          }),
        { tokens: 150 }
      )
      const outcome = yield* stepOnce(env, pos)
      assert.strictEqual(outcome._tag, "Advanced")
      assert.deepStrictEqual(env.spend.reserved, { tokens: 0, usd: 0 })
      assert.strictEqual(env.spend.snapshot().total.tokens, 60)
    }))

  it.effect("with a tracer installed, each step and each node attempt is a span with fixed attributes", () =>
    Effect.gen(function*() {
      const { spans, tracer } = recordingTracer()
      const { env, pos } = yield* setup((ctx) =>
        ctx.attempt === 1 ? Effect.fail(new Flaky({ attempt: 1 })) : Effect.succeed({ value: "done" })
      )
      const outcome = yield* stepOnce(env, pos).pipe(Effect.withTracer(tracer))
      assert.strictEqual(outcome._tag, "Advanced")
      const step = spans.find((s) => s.name === "fibergraph.step")
      assert.isDefined(step)
      assert.deepStrictEqual(Object.fromEntries(step!.attributes), {
        "fibergraph.graph_id": "attempts",
        "fibergraph.run_id": "run-1",
        "fibergraph.step": 0
      })
      const nodes = spans.filter((s) => s.name === "fibergraph.node")
      assert.deepStrictEqual(nodes.map((s) => Object.fromEntries(s.attributes)), [1, 2].map((attempt) => ({
        "fibergraph.graph_id": "attempts",
        "fibergraph.run_id": "run-1",
        "fibergraph.node": "only",
        "fibergraph.index": 0,
        "fibergraph.attempt": attempt,
        "fibergraph.step": 0
      })))
      for (const node of nodes) {
        assert.strictEqual(Option.getOrUndefined(node.parent)?.spanId, step!.spanId)
        assert.strictEqual(node.status._tag, "Ended")
      }
    }))

  it.effect("under Effect's built-in tracer the step starts no span", () =>
    Effect.gen(function*() {
      let inside: Option.Option<Tracer.Span> = Option.none()
      const { env, pos } = yield* setup(() =>
        Effect.map(Effect.option(Effect.currentSpan), (span) => {
          inside = span
          return { value: "done" }
        })
      )
      yield* stepOnce(env, pos)
      assert.isTrue(Option.isNone(inside))
    }))
})
