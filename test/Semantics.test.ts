/**
 * Graph semantics people rely on (issue 8): user code outside a node that throws fails the run
 * durably with a typed error; a branch that fails for good stops its siblings; two writes to one
 * last-value key in one step are an error; thrown exceptions in nodes are retried by the policy.
 */
import { assert, describe, it } from "@effect/vitest"
import { Data, Effect, Fiber, Layer, Option, Ref, Schema, TestClock } from "effect"
import * as Errors from "../src/Errors.js"
import * as Graph from "../src/Graph.js"
import * as RunStoreMemory from "../src/layers/memory/RunStoreMemory.js"
import { Runner } from "../src/Runner.js"
import { RunStore } from "../src/services/RunStore.js"
import * as State from "../src/State.js"
import * as Subgraph from "../src/Subgraph.js"
import { eventually, ofTag, openRunner, storedEvents, withRunner } from "./util.js"

const S = State.define({
  value: State.channel(Schema.String, { initial: () => "" }),
  items: State.list(Schema.Number),
  max: State.channel(Schema.Number, {
    initial: () => 0,
    reducer: State.custom("explode", (_current: number, _update: number): number => {
      throw new Error("reducer exploded")
    })
  })
})

const boom = (): never => {
  throw new Error("user code exploded")
}

/** Runs `graph` to its end and checks the run failed durably with a UserCodeError naming `node` and `fn`. */
const expectUserCodeFailure = (graph: Graph.CompiledGraph<any, any, any>, node: string, fn: string) =>
  Effect.gen(function*() {
    const runner = yield* Runner
    const h = yield* runner.start(graph, {})
    const result = yield* h.result
    assert.strictEqual(result.status, "failed")
    assert.strictEqual(result.error?.tag, "UserCodeError")
    assert.include(result.error?.message ?? "", `node "${node}"`)
    assert.include(result.error?.message ?? "", `graph "${graph.id}"`)
    assert.include(result.error?.message ?? "", "exploded")
    assert.strictEqual(result.stopped, undefined)
    const events = yield* storedEvents(h.runId)
    const failed = ofTag(events, "RunFailed")
    assert.strictEqual(failed.length, 1)
    assert.strictEqual(failed[0]!.errorTag, "UserCodeError")
    const stored = yield* Effect.flatMap(RunStore, (store) => store.get(h.runId))
    assert.strictEqual(stored.status, "failed")
    assert.include(result.error?.message ?? "", fn)
  })

describe("user code outside a node that throws fails the run", () => {
  it.effect("a throwing route", () =>
    withRunner(Effect.gen(function*() {
      const g = yield* Graph.make({ id: "throwing-route", state: S })
        .node("a", {}, () => Effect.succeed({ value: "a" }))
        .node("b", {}, () => Effect.succeed({}))
        .edge(Graph.START, "a")
        .route("a", () => boom(), ["b", Graph.END])
        .edge("b", Graph.END)
        .compile
      yield* expectUserCodeFailure(g, "a", "route function")
    })))

  it.effect("a throwing fan-out item function", () =>
    withRunner(Effect.gen(function*() {
      const g = yield* Graph.make({ id: "throwing-fanout", state: S })
        .node("a", {}, () => Effect.succeed({ value: "a" }))
        .node("b", {}, () => Effect.succeed({}))
        .edge(Graph.START, "a")
        .fanOut("a", "b", () => boom())
        .edge("b", Graph.END)
        .compile
      yield* expectUserCodeFailure(g, "a", "fan-out item function")
    })))

  it.effect("a throwing reducer", () =>
    withRunner(Effect.gen(function*() {
      const g = yield* Graph.make({ id: "throwing-reducer", state: S })
        .node("a", {}, () => Effect.succeed({ max: 1 }))
        .edge(Graph.START, "a")
        .edge("a", Graph.END)
        .compile
      yield* expectUserCodeFailure(g, "a", "reducer")
    })))

  it.effect("a throwing subgraph output mapping", () =>
    withRunner(Effect.gen(function*() {
      const child = yield* Graph.make({ id: "child", state: S })
        .node("inner", {}, () => Effect.succeed({ value: "inner" }))
        .edge(Graph.START, "inner")
        .edge("inner", Graph.END)
        .compile
      const g = yield* Graph.make({ id: "throwing-output", state: S })
        .node("sub", {}, Subgraph.node(child, { input: () => ({}), output: () => boom() }))
        .edge(Graph.START, "sub")
        .edge("sub", Graph.END)
        .compile
      yield* expectUserCodeFailure(g, "sub", "output mapping")
    })))

  it.effect("a throwing subgraph input mapping", () =>
    withRunner(Effect.gen(function*() {
      const child = yield* Graph.make({ id: "child", state: S })
        .node("inner", {}, () => Effect.succeed({ value: "inner" }))
        .edge(Graph.START, "inner")
        .edge("inner", Graph.END)
        .compile
      const g = yield* Graph.make({ id: "throwing-input", state: S })
        .node("sub", {}, Subgraph.node(child, { input: () => boom(), output: () => ({}) }))
        .edge(Graph.START, "sub")
        .edge("sub", Graph.END)
        .compile
      yield* expectUserCodeFailure(g, "sub", "input mapping")
    })))

  it.effect("a throwing START route fails start with a typed error", () =>
    withRunner(Effect.gen(function*() {
      const g = yield* Graph.make({ id: "throwing-start", state: S })
        .node("a", {}, () => Effect.succeed({}))
        .route(Graph.START, () => boom(), ["a"])
        .edge("a", Graph.END)
        .compile
      const runner = yield* Runner
      const error = yield* Effect.flip(runner.start(g, {}))
      assert.strictEqual(error._tag, "UserCodeError")
      assert.include(error.message, "START route")
      assert.include(error.message, "exploded")
    })))

  it.effect("a throwing migrateFrom function fails the resume with a typed error", () =>
    Effect.gen(function*() {
      const store = yield* RunStore
      const V1 = State.define({ value: State.channel(Schema.String) })
      const v1 = yield* Graph.make({ id: "migrating", version: 1, state: V1 })
        .node("ask", {}, (ctx) => Effect.map(ctx.interrupt("ok?"), () => ({ value: "done" })))
        .edge(Graph.START, "ask")
        .edge("ask", Graph.END)
        .compile
      const v2 = yield* Graph.make({ id: "migrating", version: 2, state: V1 })
        .node("ask", {}, (ctx) => Effect.map(ctx.interrupt("ok?"), () => ({ value: "done" })))
        .edge(Graph.START, "ask")
        .edge("ask", Graph.END)
        .migrateFrom(1, Schema.Struct({ value: Schema.optional(Schema.String) }), () => boom())
        .compile
      const first = yield* openRunner(store)
      const h = yield* first.runner.start(v1, { value: "x" })
      assert.strictEqual((yield* h.result).status, "waiting")
      yield* first.stop
      const second = yield* openRunner(store)
      const error = yield* Effect.flip(second.runner.resume(v2, h.runId))
      yield* second.stop
      assert.strictEqual(error._tag, "CheckpointMigrationError")
      assert.include(error.message, "migrateFrom function threw")
      assert.include(error.message, "exploded")
    }).pipe(Effect.provide(Layer.orDie(RunStoreMemory.layer()))))
})

class Boom extends Data.TaggedError("Boom")<{}> {}

describe("a branch that fails for good stops its siblings", () => {
  it.effect("the slow sibling is interrupted at once and nothing of the step but the failure is committed", () =>
    withRunner(Effect.gen(function*() {
      const sideEffect = yield* Ref.make(false)
      const interrupted = yield* Ref.make(false)
      const g = yield* Graph.make({ id: "fail-fast", state: S })
        .node("fails", { policy: { retry: { maxAttempts: 2, initialDelay: "1 milli", jitter: false } } }, () =>
          Effect.zipRight(Effect.sleep("10 millis"), Effect.fail(new Boom())))
        .node("slow", {}, () =>
          Effect.sleep("1 second").pipe(
            Effect.zipRight(Ref.set(sideEffect, true)),
            Effect.as({ value: "slow" }),
            Effect.onInterrupt(() => Ref.set(interrupted, true))
          ))
        .node("quick", {}, () => Effect.succeed({ items: [1] }))
        .edge(Graph.START, "fails")
        .edge(Graph.START, "slow")
        .edge(Graph.START, "quick")
        .edge("fails", Graph.END)
        .edge("slow", Graph.END)
        .edge("quick", Graph.END)
        .compile
      const runner = yield* Runner
      const h = yield* runner.start(g, {})
      const fiber = yield* Effect.fork(h.result)
      for (let i = 0; i < 5; i++) {
        yield* TestClock.adjust("10 millis")
        yield* Effect.yieldNow()
      }
      yield* eventually(Effect.map(Fiber.poll(fiber), Option.isSome), "the run to fail before the slow sibling ends")
      const result = yield* Fiber.join(fiber)
      assert.strictEqual(result.status, "failed")
      assert.strictEqual(result.error?.tag, "Boom")
      assert.isTrue(yield* Ref.get(interrupted))
      yield* TestClock.adjust("2 seconds")
      assert.isFalse(yield* Ref.get(sideEffect))
      const events = yield* storedEvents(h.runId)
      assert.deepStrictEqual(ofTag(events, "NodeCompleted"), [])
      assert.deepStrictEqual(ofTag(events, "StepCommitted"), [])
      assert.deepStrictEqual(ofTag(events, "NodeFailed").map((e) => e.node), ["fails"])
      assert.strictEqual(ofTag(events, "RunFailed").length, 1)
    })))

  it.effect("a sibling waiting for a human is not a failure: the run waits, and fails only when a node fails", () =>
    withRunner(Effect.gen(function*() {
      const g = yield* Graph.make({ id: "fail-fast-hitl", state: S })
        .node("ask", {}, (ctx) => Effect.map(ctx.interrupt("ok?"), () => ({ value: "ok" })))
        .node("works", {}, () => Effect.succeed({ items: [1] }))
        .edge(Graph.START, "ask")
        .edge(Graph.START, "works")
        .edge("ask", Graph.END)
        .edge("works", Graph.END)
        .compile
      const runner = yield* Runner
      const h = yield* runner.start(g, {})
      assert.strictEqual((yield* h.result).status, "waiting")
      yield* runner.respond(g, h.runId, { _tag: "approve" })
      const done = yield* runner.result(g, h.runId)
      assert.strictEqual(done.status, "completed")
      assert.deepStrictEqual(done.state.items, [1])
    })))
})

describe("thrown exceptions in node code are retried by the policy", () => {
  it.effect("a node that throws twice succeeds on its third attempt", () =>
    withRunner(Effect.gen(function*() {
      const attempts = yield* Ref.make(0)
      const g = yield* Graph.make({ id: "retry-defects", state: S })
        .node("flaky", { policy: { retry: { maxAttempts: 3, initialDelay: "1 milli", jitter: false } } }, () =>
          Effect.flatMap(Ref.updateAndGet(attempts, (n) => n + 1), (n) =>
            Effect.sync(() => {
              if (n < 3) throw new Error(`library threw on attempt ${n}`)
              return { value: `ok on ${n}` }
            })))
        .edge(Graph.START, "flaky")
        .edge("flaky", Graph.END)
        .compile
      const runner = yield* Runner
      const h = yield* runner.start(g, {})
      const fiber = yield* Effect.fork(h.result)
      for (let i = 0; i < 10; i++) {
        yield* TestClock.adjust("10 millis")
        yield* Effect.yieldNow()
      }
      const result = yield* Fiber.join(fiber)
      assert.strictEqual(result.status, "completed")
      assert.strictEqual(result.state.value, "ok on 3")
      assert.strictEqual(yield* Ref.get(attempts), 3)
      const events = yield* storedEvents(h.runId)
      assert.deepStrictEqual(ofTag(events, "NodeRetrying").map((e) => e.error), [
        `node "flaky" attempt 1 threw: Error: library threw on attempt 1`,
        `node "flaky" attempt 2 threw: Error: library threw on attempt 2`
      ])
    })))

  it.effect("retryOn sees a throw as a NodeDefectError and can exclude it; the run fails with the thrown error", () =>
    withRunner(Effect.gen(function*() {
      const attempts = yield* Ref.make(0)
      const seen: Array<unknown> = []
      const g = yield* Graph.make({ id: "retry-defects-excluded", state: S })
        .node("throws", {
          policy: {
            retry: { maxAttempts: 3, initialDelay: "1 milli", jitter: false },
            retryOn: (error) => {
              seen.push(error)
              return !(error instanceof Errors.NodeDefectError)
            }
          }
        }, () =>
          Effect.flatMap(Ref.update(attempts, (n) => n + 1), () =>
            Effect.sync(() => {
              throw new TypeError("not a function")
            })))
        .edge(Graph.START, "throws")
        .edge("throws", Graph.END)
        .compile
      const runner = yield* Runner
      const result = yield* Effect.flatMap(runner.start(g, {}), (h) => h.result)
      assert.strictEqual(result.status, "failed")
      assert.strictEqual(yield* Ref.get(attempts), 1)
      assert.strictEqual(seen.length, 1)
      assert.instanceOf(seen[0], Errors.NodeDefectError)
      assert.instanceOf((seen[0] as Errors.NodeDefectError).defect, TypeError)
      assert.strictEqual(result.error?.tag, "TypeError")
      assert.include(result.error?.message ?? "", "not a function")
    })))
})

describe("two writes to one last-value key in one step", () => {
  const W = State.define({
    value: State.channel(Schema.String, { initial: () => "" }),
    winner: State.channel(Schema.String, { initial: () => "", reducer: State.lastWriterWins() }),
    log: State.list(Schema.String)
  })
  const parallel = (id: string, key: "value" | "winner" | "log") =>
    Graph.make({ id, state: W })
      .node("left", {}, () => Effect.succeed(key === "log" ? { log: ["left"] } : { [key]: "left" }))
      .node("right", {}, () => Effect.succeed(key === "log" ? { log: ["right"] } : { [key]: "right" }))
      .edge(Graph.START, "left")
      .edge(Graph.START, "right")
      .edge("left", Graph.END)
      .edge("right", Graph.END)
      .compile

  it.effect("fail the run with a typed error naming both nodes and the key", () =>
    withRunner(Effect.gen(function*() {
      const g = yield* parallel("conflict", "value")
      const runner = yield* Runner
      const h = yield* runner.start(g, {})
      const result = yield* h.result
      assert.strictEqual(result.status, "failed")
      assert.strictEqual(result.error?.tag, "ConflictingUpdateError")
      assert.include(result.error?.message ?? "", `"left" and "right"`)
      assert.include(result.error?.message ?? "", `"value"`)
      const events = yield* storedEvents(h.runId)
      assert.strictEqual(ofTag(events, "RunFailed")[0]?.errorTag, "ConflictingUpdateError")
      assert.deepStrictEqual(ofTag(events, "StepCommitted"), [])
    })))

  it.effect("fan-out instances of one node writing one last-value key conflict too", () =>
    withRunner(Effect.gen(function*() {
      const g = yield* Graph.make({ id: "conflict-fanout", state: W })
        .node("split", {}, () => Effect.succeed({}))
        .node("each", {}, () => Effect.succeed({ value: "item" }))
        .edge(Graph.START, "split")
        .fanOut("split", "each", () => [1, 2])
        .edge("each", Graph.END)
        .compile
      const runner = yield* Runner
      const result = yield* Effect.flatMap(runner.start(g, {}), (h) => h.result)
      assert.strictEqual(result.status, "failed")
      assert.strictEqual(result.error?.tag, "ConflictingUpdateError")
      assert.include(result.error?.message ?? "", `"each[0]" and "each[1]"`)
    })))

  it.effect("a reducer or an explicit last-writer-wins key takes both; one writer per step is fine", () =>
    withRunner(Effect.gen(function*() {
      const runner = yield* Runner
      const listed = yield* Effect.flatMap(runner.start(yield* parallel("conflict-list", "log"), {}), (h) => h.result)
      assert.strictEqual(listed.status, "completed")
      assert.deepStrictEqual(listed.state.log, ["left", "right"])
      const won = yield* Effect.flatMap(runner.start(yield* parallel("conflict-lww", "winner"), {}), (h) => h.result)
      assert.strictEqual(won.status, "completed")
      assert.strictEqual(won.state.winner, "right")
      const g = yield* Graph.make({ id: "one-writer", state: W })
        .node("a", {}, () => Effect.succeed({ value: "a" }))
        .node("b", {}, () => Effect.succeed({ value: "b" }))
        .edge(Graph.START, "a")
        .edge("a", "b")
        .edge("b", Graph.END)
        .compile
      const sequential = yield* Effect.flatMap(runner.start(g, {}), (h) => h.result)
      assert.strictEqual(sequential.status, "completed")
      assert.strictEqual(sequential.state.value, "b")
    })))
})

describe("deferred nodes", () => {
  const graphOf = (defer: boolean) =>
    Graph.make({ id: `deferred-${defer}`, state: S })
      .node("a", {}, () => Effect.succeed({ items: [1] }))
      .node("b", {}, () => Effect.succeed({ items: [2] }))
      .node("c", {}, () => Effect.succeed({ items: [3] }))
      .node("d", {}, () => Effect.succeed({ items: [4] }))
      .node("summary", { defer }, (ctx) => Effect.succeed({ value: `${ctx.state.value}[${ctx.state.items.join(",")}]` }))
      .edge(Graph.START, "a")
      .edge("a", "b")
      .edge("a", "c")
      .edge("c", "d")
      .edge("b", "summary")
      .edge("d", "summary")
      .edge("summary", Graph.END)
      .compile

  it.effect("a deferred node waits until no other branch has work, then runs once", () =>
    withRunner(Effect.gen(function*() {
      const runner = yield* Runner
      const eager = yield* (yield* runner.start(yield* graphOf(false), {})).result
      assert.strictEqual(eager.state.value, "[1,2,3][1,2,3,4]", "without defer the summary runs after each branch")
      const handle = yield* runner.start(yield* graphOf(true), {})
      const deferred = yield* handle.result
      assert.strictEqual(deferred.status, "completed")
      assert.strictEqual(deferred.state.value, "[1,2,3,4]", "with defer it runs once, after the longer branch")
      const steps = ofTag(yield* storedEvents(handle.runId), "StepStarted").map((e) => e.nodes)
      assert.deepStrictEqual(steps, [["a"], ["b", "c"], ["d"], ["summary"]])
    })))

  it.effect("a deferred node's wait survives a resume from its checkpoint", () =>
    withRunner(Effect.gen(function*() {
      const runner = yield* Runner
      const graph = yield* graphOf(true)
      const handle = yield* runner.start(graph, {}, { interruptBefore: ["d"] })
      const parked = yield* handle.result
      assert.strictEqual(parked.status, "waiting")
      yield* runner.stop(handle.runId)
      yield* runner.resume(graph, handle.runId)
      yield* runner.respond(graph, handle.runId, { _tag: "approve" })
      const done = yield* handle.result
      assert.strictEqual(done.state.value, "[1,2,3,4]")
    })))
})
