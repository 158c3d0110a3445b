import { assert, describe, it } from "@effect/vitest"
import { Effect, Ref, Schema } from "effect"
import * as Errors from "../src/Errors.js"
import * as Graph from "../src/Graph.js"
import { Runner } from "../src/Runner.js"
import * as State from "../src/State.js"
import { ofTag, storedEvents, withRunner } from "./util.js"

describe("State reducers", () => {
  it("lastValue replaces, append concatenates, merge merges shallowly, sum adds, custom applies its function", () => {
    assert.strictEqual(State.lastValue<number>().combine(1, 2), 2)
    assert.deepStrictEqual(State.append<number>().combine([1, 2], [3]), [1, 2, 3])
    assert.deepStrictEqual(State.append<number>().combine([], [3]), [3])
    assert.deepStrictEqual(State.append<number>().combine([1], []), [1])
    assert.deepStrictEqual(
      State.merge<Record<string, number>>().combine({ a: 1, b: 2 }, { b: 3, c: 4 }),
      { a: 1, b: 3, c: 4 }
    )
    assert.strictEqual(State.sum.combine(2, 3), 5)
    assert.strictEqual(State.custom<number>("max", Math.max).combine(7, 3), 7)
  })

  it("channels default to lastValue; list and counter start empty and at zero", () => {
    const S = State.define({
      name: State.channel(Schema.String),
      items: State.list(Schema.Number),
      total: State.counter()
    })
    assert.strictEqual(S.channels.name.reducer.name, "last")
    assert.deepStrictEqual(State.initial(S, {}), { items: [], total: 0 })
    assert.deepStrictEqual(State.initial(S, { name: "x", total: 5 }), { name: "x", items: [], total: 5 })
  })
})

const S = State.define({
  last: State.channel(Schema.String, { reducer: State.lastWriterWins() }),
  items: State.list(Schema.String),
  tags: State.channel(Schema.Record({ key: Schema.String, value: Schema.Number }), {
    reducer: State.merge<{ readonly [k: string]: number }>(),
    initial: () => ({})
  }),
  total: State.counter(),
  best: State.channel(Schema.Number, { reducer: State.custom("max", Math.max) })
})

describe("State in a run", () => {
  it.effect("each reducer merges the updates of sequential and parallel nodes", () =>
    withRunner(Effect.gen(function*() {
      const g = yield* Graph.make({ id: "reducers", state: S })
        .node("a", {}, () => Effect.succeed({ last: "a", items: ["a"], tags: { a: 1, shared: 1 }, total: 2, best: 5 }))
        .node("b", {}, () => Effect.succeed({ last: "b", items: ["b"], tags: { b: 2, shared: 2 }, total: 3, best: 9 }))
        .node("c", {}, () => Effect.succeed({ last: "c", items: ["c1", "c2"], tags: { c: 3 }, total: 10, best: 4 }))
        .edge(Graph.START, "a")
        .edge(Graph.START, "b")
        .edge(["a", "b"], "c")
        .edge("c", Graph.END)
        .compile
      const runner = yield* Runner
      const h = yield* runner.start(g, { best: 1 })
      const r = yield* h.result
      assert.strictEqual(r.status, "completed")
      assert.deepStrictEqual(r.state, {
        last: "c",
        items: ["a", "b", "c1", "c2"],
        tags: { a: 1, b: 2, shared: 2, c: 3 },
        total: 15,
        best: 9
      })
    })))

  it.effect("a node's update with a bad value fails the run with StateValidationError naming graph, node and key", () =>
    withRunner(Effect.gen(function*() {
      const attempts = yield* Ref.make(0)
      const g = yield* Graph.make({ id: "validating", state: S })
        .node(
          "writer",
          { policy: { retry: { maxAttempts: 3, jitter: false } } },
          () => Effect.as(Ref.update(attempts, (n) => n + 1), { total: "three" as unknown as number })
        )
        .edge(Graph.START, "writer")
        .edge("writer", Graph.END)
        .compile
      const runner = yield* Runner
      const h = yield* runner.start(g, {})
      const r = yield* h.result
      assert.strictEqual(r.status, "failed")
      assert.strictEqual(r.error?.tag, "StateValidationError")
      assert.include(r.error!.message, "validating")
      assert.include(r.error!.message, "writer")
      assert.include(r.error!.message, "total")
      assert.strictEqual(yield* Ref.get(attempts), 1, "a bad update is not retried")
      const events = yield* storedEvents(h.runId)
      const failed = ofTag(events, "NodeFailed")
      assert.strictEqual(failed.length, 1)
      assert.strictEqual(failed[0]!.errorTag, "StateValidationError")
      assert.strictEqual(failed[0]!.node, "writer")
      const runFailed = ofTag(events, "RunFailed")
      assert.strictEqual(runFailed.length, 1)
      assert.strictEqual(runFailed[0]!.errorTag, "StateValidationError")
      assert.strictEqual(events[events.length - 1]!._tag, "RunFailed")
    })))

  it.effect("the update is not merged when it fails validation", () =>
    withRunner(Effect.gen(function*() {
      const g = yield* Graph.make({ id: "validating", state: S })
        .node("ok", {}, () => Effect.succeed({ items: ["kept"] }))
        .node("bad", {}, () => Effect.succeed({ items: [1] as unknown as Array<string> }))
        .edge(Graph.START, "ok")
        .edge("ok", "bad")
        .edge("bad", Graph.END)
        .compile
      const runner = yield* Runner
      const r = yield* Effect.flatMap(runner.start(g, {}), (h) => h.result)
      assert.strictEqual(r.status, "failed")
      assert.strictEqual(r.error?.tag, "StateValidationError")
      assert.deepStrictEqual(r.state.items, ["kept"])
    })))

  it.effect("writing a key outside the node's declared writes fails the run with WritePermissionError", () =>
    withRunner(Effect.gen(function*() {
      const g = yield* Graph.make({ id: "perms", state: S })
        .node("narrow", { writes: ["items"] }, () => Effect.succeed({ items: ["x"], total: 1 } as { items: Array<string> }))
        .edge(Graph.START, "narrow")
        .edge("narrow", Graph.END)
        .compile
      const runner = yield* Runner
      const h = yield* runner.start(g, {})
      const r = yield* h.result
      assert.strictEqual(r.status, "failed")
      assert.strictEqual(r.error?.tag, "WritePermissionError")
      assert.include(r.error!.message, "narrow")
      assert.include(r.error!.message, "total")
      assert.strictEqual(r.state.total, 0)
      const failed = ofTag(yield* storedEvents(h.runId), "NodeFailed")
      assert.strictEqual(failed[0]?.errorTag, "WritePermissionError")
    })))

  it.effect("writing a key the state does not have fails the run with WritePermissionError", () =>
    withRunner(Effect.gen(function*() {
      const g = yield* Graph.make({ id: "perms", state: S })
        .node("stray", {}, () => Effect.succeed({ nope: 1 } as unknown as { total: number }))
        .edge(Graph.START, "stray")
        .edge("stray", Graph.END)
        .compile
      const runner = yield* Runner
      const r = yield* Effect.flatMap(runner.start(g, {}), (h) => h.result)
      assert.strictEqual(r.status, "failed")
      assert.strictEqual(r.error?.tag, "WritePermissionError")
      assert.include(r.error!.message, "nope")
    })))

  it.effect("a declared write succeeds", () =>
    withRunner(Effect.gen(function*() {
      const g = yield* Graph.make({ id: "perms", state: S })
        .node("narrow", { writes: ["items", "total"] }, () => Effect.succeed({ items: ["x"], total: 1 }))
        .edge(Graph.START, "narrow")
        .edge("narrow", Graph.END)
        .compile
      const runner = yield* Runner
      const r = yield* Effect.flatMap(runner.start(g, {}), (h) => h.result)
      assert.strictEqual(r.status, "completed")
      assert.deepStrictEqual(r.state.items, ["x"])
      assert.strictEqual(r.state.total, 1)
    })))

  it.effect("reads restricts the state a node sees", () =>
    withRunner(Effect.gen(function*() {
      const seen = yield* Ref.make<ReadonlyArray<Record<string, unknown>>>([])
      const g = yield* Graph.make({ id: "reads", state: S })
        .node("narrow", { reads: ["items", "total"] }, (ctx) =>
          Effect.as(Ref.update(seen, (xs) => [...xs, { ...ctx.state }]), {}))
        .node("wide", {}, (ctx) => Effect.as(Ref.update(seen, (xs) => [...xs, { ...ctx.state }]), {}))
        .edge(Graph.START, "narrow")
        .edge("narrow", "wide")
        .edge("wide", Graph.END)
        .compile
      const runner = yield* Runner
      const r = yield* Effect.flatMap(runner.start(g, { last: "secret", items: ["i"], total: 4 }), (h) => h.result)
      assert.strictEqual(r.status, "completed")
      const [narrow, wide] = yield* Ref.get(seen)
      assert.deepStrictEqual(Object.keys(narrow!).sort(), ["items", "total"])
      assert.deepStrictEqual(narrow, { items: ["i"], total: 4 })
      assert.strictEqual(wide!.last, "secret")
    })))

  it.effect("a run's input is validated against the schema before it starts", () =>
    withRunner(Effect.gen(function*() {
      const g = yield* Graph.make({ id: "input", state: S })
        .node("a", {}, () => Effect.succeed({}))
        .edge(Graph.START, "a")
        .edge("a", Graph.END)
        .compile
      const runner = yield* Runner
      const bad = yield* Effect.flip(runner.start(g, { total: "x" as unknown as number }))
      assert.instanceOf(bad, Errors.InputValidationError)
      const unknown = yield* Effect.flip(runner.start(g, { nope: 1 } as unknown as { total: number }))
      assert.instanceOf(unknown, Errors.InputValidationError)
    })))
})
