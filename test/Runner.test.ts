import { assert, describe, it } from "@effect/vitest"
import { Clock, Data, Deferred, type Duration, Effect, Either, Fiber, Option, Ref, Schema, Stream, TestClock } from "effect"
import { CircuitBreakers } from "../src/CircuitBreaker.js"
import * as Errors from "../src/Errors.js"
import * as Graph from "../src/Graph.js"
import * as Node from "../src/Node.js"
import { Runner } from "../src/Runner.js"
import * as RunStoreMemory from "../src/layers/memory/RunStoreMemory.js"
import { RunStore } from "../src/services/RunStore.js"
import * as State from "../src/State.js"
import {
  advanceUntilDone,
  awaitSleeps,
  awaitStatus,
  collectEvents,
  comparable,
  eventually,
  ofTag,
  openRunner,
  pendingSleeps,
  storedEvents,
  tags,
  withRunner
} from "./util.js"

const S = State.define({
  log: State.list(Schema.String),
  value: State.channel(Schema.String, { reducer: State.lastWriterWins() }),
  count: State.counter(),
  items: State.list(Schema.Number),
  results: State.list(Schema.Number)
})

class Transient extends Data.TaggedError("Transient")<{ readonly attempt: number }> {}
class Fatal extends Data.TaggedError("Fatal")<{}> {}
class Boom extends Data.TaggedError("Boom")<{}> {}

const counter = () => Ref.make(0)
const bump = (ref: Ref.Ref<number>) => Ref.update(ref, (n) => n + 1)
const isDone = <A, E>(fiber: Fiber.Fiber<A, E>) => Effect.map(Fiber.poll(fiber), Option.isSome)

describe("Supersteps", () => {
  it.effect("parallel branches run concurrently (each waits for the other to start)", () =>
    withRunner(Effect.gen(function*() {
      const aStarted = yield* Deferred.make<void>()
      const bStarted = yield* Deferred.make<void>()
      const g = yield* Graph.make({ id: "rendezvous", state: S })
        .node("a", {}, () =>
          Effect.gen(function*() {
            yield* Deferred.succeed(aStarted, undefined)
            yield* Deferred.await(bStarted)
            return { log: ["a"] }
          }))
        .node("b", {}, () =>
          Effect.gen(function*() {
            yield* Deferred.succeed(bStarted, undefined)
            yield* Deferred.await(aStarted)
            return { log: ["b"] }
          }))
        .edge(Graph.START, "a")
        .edge(Graph.START, "b")
        .edge("a", Graph.END)
        .edge("b", Graph.END)
        .compile
      const runner = yield* Runner
      const h = yield* runner.start(g, {})
      const result = yield* Effect.fork(h.result)
      yield* eventually(isDone(result), "both branches to meet")
      const r = yield* Fiber.join(result)
      assert.strictEqual(r.status, "completed")
      assert.deepStrictEqual(r.state.log, ["a", "b"])
    })))

  it.effect("two branches sleeping 100 ms both finish after one 100 ms adjust", () =>
    withRunner(Effect.gen(function*() {
      const g = yield* Graph.make({ id: "sleepers", state: S })
        .node("a", {}, () => Effect.as(Effect.sleep("100 millis"), { log: ["a"] }))
        .node("b", {}, () => Effect.as(Effect.sleep("100 millis"), { log: ["b"] }))
        .edge(Graph.START, "a")
        .edge(Graph.START, "b")
        .edge("a", Graph.END)
        .edge("b", Graph.END)
        .compile
      const runner = yield* Runner
      const h = yield* runner.start(g, {})
      const result = yield* Effect.fork(h.result)
      yield* awaitSleeps(2)
      yield* TestClock.adjust("100 millis")
      yield* eventually(isDone(result), "the run to end after one adjust")
      const r = yield* Fiber.join(result)
      assert.strictEqual(r.status, "completed")
      assert.deepStrictEqual(r.state.log, ["a", "b"])
    })))

  it.effect("the final state and the event sequence do not depend on which branch finishes first", () =>
    Effect.gen(function*() {
      const runWith = (delayA: number, delayB: number) =>
        withRunner(Effect.gen(function*() {
          const finished = yield* Ref.make<ReadonlyArray<string>>([])
          const branch = (name: string, delay: number) => () =>
            Effect.sleep(delay).pipe(
              Effect.zipRight(Ref.update(finished, (xs) => [...xs, name])),
              Effect.as({ log: [name], value: name, count: delay })
            )
          const g = yield* Graph.make({ id: "race", state: S })
            .node("a", {}, branch("a", delayA))
            .node("b", {}, branch("b", delayB))
            .node("c", {}, (ctx) => Effect.succeed({ log: [`c saw ${ctx.state.log.join(",")}`] }))
            .edge(Graph.START, "a")
            .edge(Graph.START, "b")
            .edge(["a", "b"], "c")
            .edge("c", Graph.END)
            .compile
          const runner = yield* Runner
          const h = yield* runner.start(g, {}, { runId: "race-run" })
          const r = yield* advanceUntilDone(yield* Effect.fork(h.result))
          const events = yield* collectEvents(h.runId)
          return { state: r.state, status: r.status, events, finished: yield* Ref.get(finished) }
        }))
      const fastA = yield* runWith(10, 50)
      const fastB = yield* runWith(50, 10)
      assert.deepStrictEqual(fastA.finished, ["a", "b"])
      assert.deepStrictEqual(fastB.finished, ["b", "a"])
      assert.strictEqual(fastA.status, "completed")
      assert.deepStrictEqual(fastA.state.log, ["a", "b", "c saw a,b"])
      assert.strictEqual(fastA.state.value, "b")
      assert.deepStrictEqual(fastA.state, fastB.state)
      assert.deepStrictEqual(comparable(fastA.events), comparable(fastB.events))
    }))

  it.effect("updates merge in node declaration order, whatever the edge order or finishing order", () =>
    withRunner(Effect.gen(function*() {
      const g = yield* Graph.make({ id: "declared", state: S })
        .node("z", {}, () => Effect.as(Effect.sleep("50 millis"), { log: ["z"], value: "z" }))
        .node("y", {}, () => Effect.as(Effect.sleep("10 millis"), { log: ["y"], value: "y" }))
        .edge(Graph.START, "y")
        .edge(Graph.START, "z")
        .edge("y", Graph.END)
        .edge("z", Graph.END)
        .compile
      const runner = yield* Runner
      const h = yield* runner.start(g, {})
      const r = yield* advanceUntilDone(yield* Effect.fork(h.result))
      assert.deepStrictEqual(r.state.log, ["z", "y"])
      assert.strictEqual(r.state.value, "y")
    })))

  it.effect("fan-out results merge by reducer in index order, whatever the finishing order", () =>
    withRunner(Effect.gen(function*() {
      const finished = yield* Ref.make<ReadonlyArray<number>>([])
      const g = yield* Graph.make({ id: "fan", state: S })
        .node("work", { input: Schema.Number, writes: ["results"] }, (ctx) =>
          Effect.sleep((5 - ctx.input) * 10).pipe(
            Effect.zipRight(Ref.update(finished, (xs) => [...xs, ctx.input])),
            Effect.as({ results: [ctx.input * 10] })
          ))
        .fanOut(Graph.START, "work", (s) => s.items)
        .edge("work", Graph.END)
        .compile
      const runner = yield* Runner
      const h = yield* runner.start(g, { items: [1, 2, 3, 4] })
      const r = yield* advanceUntilDone(yield* Effect.fork(h.result))
      assert.strictEqual(r.status, "completed")
      assert.deepStrictEqual(yield* Ref.get(finished), [4, 3, 2, 1])
      assert.deepStrictEqual(r.state.results, [10, 20, 30, 40])
      const completed = ofTag(yield* storedEvents(h.runId), "NodeCompleted")
      assert.deepStrictEqual(completed.map((e) => e.index), [0, 1, 2, 3])
    })))

  it.effect("a fan-out node's concurrency bounds its in-flight instances", () =>
    withRunner(Effect.gen(function*() {
      const inFlight = yield* Ref.make(0)
      const maxInFlight = yield* Ref.make(0)
      const g = yield* Graph.make({ id: "bounded", state: S })
        .node("work", { input: Schema.Number, concurrency: 2 }, (ctx) =>
          Effect.gen(function*() {
            const now = yield* Ref.updateAndGet(inFlight, (n) => n + 1)
            yield* Ref.update(maxInFlight, (m) => Math.max(m, now))
            yield* Effect.sleep((7 - ctx.input) * 10)
            yield* Ref.update(inFlight, (n) => n - 1)
            return { results: [ctx.input] }
          }))
        .fanOut(Graph.START, "work", (s) => s.items)
        .edge("work", Graph.END)
        .compile
      const runner = yield* Runner
      const h = yield* runner.start(g, { items: [1, 2, 3, 4, 5, 6] })
      const r = yield* advanceUntilDone(yield* Effect.fork(h.result))
      assert.strictEqual(r.status, "completed")
      assert.strictEqual(yield* Ref.get(maxInFlight), 2)
      assert.deepStrictEqual(r.state.results, [1, 2, 3, 4, 5, 6])
    })))

  it.effect("the run's concurrency option bounds the node instances running at once in a step", () =>
    withRunner(Effect.gen(function*() {
      const inFlight = yield* Ref.make(0)
      const maxInFlight = yield* Ref.make(0)
      const branch = (name: string, delay: number) => () =>
        Effect.gen(function*() {
          const now = yield* Ref.updateAndGet(inFlight, (n) => n + 1)
          yield* Ref.update(maxInFlight, (m) => Math.max(m, now))
          yield* Effect.sleep(delay)
          yield* Ref.update(inFlight, (n) => n - 1)
          return { log: [name] }
        })
      const g = yield* Graph.make({ id: "run-concurrency", state: S })
        .node("a", {}, branch("a", 40))
        .node("b", {}, branch("b", 30))
        .node("c", {}, branch("c", 20))
        .node("d", {}, branch("d", 10))
        .edge(Graph.START, "a")
        .edge(Graph.START, "b")
        .edge(Graph.START, "c")
        .edge(Graph.START, "d")
        .edge("a", Graph.END)
        .edge("b", Graph.END)
        .edge("c", Graph.END)
        .edge("d", Graph.END)
        .compile
      const runner = yield* Runner
      const h = yield* runner.start(g, {}, { concurrency: 2 })
      const r = yield* advanceUntilDone(yield* Effect.fork(h.result))
      assert.strictEqual(r.status, "completed")
      assert.strictEqual(yield* Ref.get(maxInFlight), 2)
      assert.deepStrictEqual(r.state.log, ["a", "b", "c", "d"])
    })))

  it.effect("loops through conditional edges until the route exits", () =>
    withRunner(Effect.gen(function*() {
      const g = yield* Graph.make({ id: "loop", state: S })
        .node("inc", { writes: ["count", "log"] }, (ctx) => Effect.succeed({ count: 1, log: [`step ${ctx.step}`] }))
        .edge(Graph.START, "inc")
        .route("inc", (s) => s.count < 3 ? "inc" : Graph.END, ["inc", Graph.END])
        .compile
      const runner = yield* Runner
      const h = yield* runner.start(g, {})
      const r = yield* h.result
      assert.strictEqual(r.status, "completed")
      assert.strictEqual(r.state.count, 3)
      assert.deepStrictEqual(r.state.log, ["step 0", "step 1", "step 2"])
      const events = yield* storedEvents(h.runId)
      assert.strictEqual(ofTag(events, "NodeStarted").length, 3)
      assert.strictEqual(ofTag(events, "StepCommitted").length, 3)
    })))

  it.effect("Node.goto routes to the chosen target instead of the node's edges", () =>
    withRunner(Effect.gen(function*() {
      const ran = yield* Ref.make<ReadonlyArray<string>>([])
      const mark = (name: string) => () => Effect.as(Ref.update(ran, (xs) => [...xs, name]), { log: [name] })
      const g = yield* Graph.make({ id: "goto", state: S })
        .node("router", { goto: ["left", "right"] }, () => Effect.succeed(Node.goto("right", { log: ["router"] })))
        .node("left", {}, mark("left"))
        .node("right", {}, mark("right"))
        .edge(Graph.START, "router")
        .edge("router", "left")
        .edge("left", Graph.END)
        .edge("right", Graph.END)
        .compile
      const runner = yield* Runner
      const r = yield* Effect.flatMap(runner.start(g, {}), (h) => h.result)
      assert.strictEqual(r.status, "completed")
      assert.deepStrictEqual(yield* Ref.get(ran), ["right"])
      assert.deepStrictEqual(r.state.log, ["router", "right"])
    })))

  it.effect("Node.goto to END ends the branch", () =>
    withRunner(Effect.gen(function*() {
      const g = yield* Graph.make({ id: "goto-end", state: S })
        .node("router", { goto: ["next"] }, () => Effect.succeed(Node.goto(Graph.END, { value: "done" })))
        .node("next", {}, () => Effect.succeed({ value: "next" }))
        .edge(Graph.START, "router")
        .edge("next", Graph.END)
        .compile
      const runner = yield* Runner
      const r = yield* Effect.flatMap(runner.start(g, {}), (h) => h.result)
      assert.strictEqual(r.status, "completed")
      assert.strictEqual(r.state.value, "done")
    })))

  it.effect("Node.send runs one instance per item with its input, merged in index order", () =>
    withRunner(Effect.gen(function*() {
      const g = yield* Graph.make({ id: "send", state: S })
        .node("dispatch", { goto: ["work"] }, () =>
          Effect.succeed(Node.send([{ node: "work", input: 3 }, { node: "work", input: 1 }, { node: "work", input: 2 }], {})))
        .node("work", { input: Schema.Number }, (ctx) =>
          Effect.as(Effect.sleep(ctx.input * 10), { results: [ctx.input], log: [`work[${ctx.index}]`] }))
        .edge(Graph.START, "dispatch")
        .edge("work", Graph.END)
        .compile
      const runner = yield* Runner
      const h = yield* runner.start(g, {})
      const r = yield* advanceUntilDone(yield* Effect.fork(h.result))
      assert.strictEqual(r.status, "completed")
      assert.deepStrictEqual(r.state.results, [3, 1, 2])
      assert.deepStrictEqual(r.state.log, ["work[0]", "work[1]", "work[2]"])
    })))

  it.effect("a goto to a target the node did not declare fails the run with RoutingError", () =>
    withRunner(Effect.gen(function*() {
      const rightRan = yield* counter()
      const g = yield* Graph.make({ id: "bad-goto", state: S })
        .node("router", { goto: ["left"] }, () => Effect.succeed(Node.goto("right", {})))
        .node("left", {}, () => Effect.succeed({}))
        .node("right", {}, () => Effect.as(bump(rightRan), {}))
        .edge(Graph.START, "router")
        .edge("left", "right")
        .edge("right", Graph.END)
        .compile
      const runner = yield* Runner
      const h = yield* runner.start(g, {})
      const r = yield* h.result
      assert.strictEqual(r.status, "failed")
      assert.strictEqual(r.error?.tag, "RoutingError")
      assert.include(r.error!.message, "right")
      assert.strictEqual(yield* Ref.get(rightRan), 0)
      assert.strictEqual(ofTag(yield* storedEvents(h.runId), "RunFailed")[0]?.errorTag, "RoutingError")
    })))

  it.effect("a conditional edge choosing an undeclared target fails the run with RoutingError", () =>
    withRunner(Effect.gen(function*() {
      const g = yield* Graph.make({ id: "bad-route", state: S })
        .node("a", {}, () => Effect.succeed({}))
        .node("b", {}, () => Effect.succeed({}))
        .edge(Graph.START, "a")
        .route("a", () => "b" as typeof Graph.END, [Graph.END])
        .edge("b", Graph.END)
        .edge(Graph.START, "b")
        .compile
      const runner = yield* Runner
      const r = yield* Effect.flatMap(runner.start(g, {}), (h) => h.result)
      assert.strictEqual(r.status, "failed")
      assert.strictEqual(r.error?.tag, "RoutingError")
    })))

  it.effect("a join runs its target exactly once, after branches of different lengths both complete", () =>
    withRunner(Effect.gen(function*() {
      const cRuns = yield* Ref.make<ReadonlyArray<{ step: number; log: ReadonlyArray<string> }>>([])
      const say = (name: string) => () => Effect.succeed({ log: [name] })
      const g = yield* Graph.make({ id: "join", state: S })
        .node("a", {}, say("a"))
        .node("b1", {}, say("b1"))
        .node("b2", {}, say("b2"))
        .node("b3", {}, say("b3"))
        .node("c", {}, (ctx) =>
          Effect.as(Ref.update(cRuns, (xs) => [...xs, { step: ctx.step, log: ctx.state.log }]), { log: ["c"] }))
        .edge(Graph.START, "a")
        .edge(Graph.START, "b1")
        .edge("b1", "b2")
        .edge("b2", "b3")
        .edge(["a", "b3"], "c")
        .edge("c", Graph.END)
        .compile
      const runner = yield* Runner
      const r = yield* Effect.flatMap(runner.start(g, {}), (h) => h.result)
      assert.strictEqual(r.status, "completed")
      const runs = yield* Ref.get(cRuns)
      assert.strictEqual(runs.length, 1)
      assert.strictEqual(runs[0]!.step, 3)
      assert.deepStrictEqual(runs[0]!.log, ["a", "b1", "b2", "b3"])
      assert.deepStrictEqual(r.state.log, ["a", "b1", "b2", "b3", "c"])
    })))
})

describe("Runs and events", () => {
  it.effect("events have contiguous sequence numbers from 1, from RunStarted to RunCompleted", () =>
    withRunner(Effect.gen(function*() {
      const g = yield* Graph.make({ id: "seq", state: S })
        .node("a", {}, () => Effect.succeed({ log: ["a"] }))
        .node("b", {}, (ctx) => Effect.as(ctx.emit("note", { from: "b" }), { log: ["b"] }))
        .edge(Graph.START, "a")
        .edge("a", "b")
        .edge("b", Graph.END)
        .compile
      const runner = yield* Runner
      const h = yield* runner.start(g, {})
      const streamed = yield* Stream.runCollect(h.events)
      const events = [...streamed]
      assert.deepStrictEqual(events.map((e) => e.seq), events.map((_, i) => i + 1))
      assert.strictEqual(events[0]!._tag, "RunStarted")
      assert.strictEqual(events[events.length - 1]!._tag, "RunCompleted")
      assert.isTrue(events.every((e) => e.runId === h.runId))
      assert.deepStrictEqual(events, [...(yield* storedEvents(h.runId))])
      const custom = ofTag(events, "Custom")
      assert.strictEqual(custom.length, 1)
      assert.deepStrictEqual(custom[0]!.data, { from: "b" })
      assert.strictEqual(custom[0]!.node, "b")
    })))

  it.effect("events(runId, afterSeq) mid-run returns the history after it, then live events, none lost or repeated", () =>
    withRunner(Effect.gen(function*() {
      const bStarted = yield* Deferred.make<void>()
      const gate = yield* Deferred.make<void>()
      const g = yield* Graph.make({ id: "subscribe", state: S })
        .node("a", {}, () => Effect.succeed({ log: ["a"] }))
        .node("b", {}, () =>
          Effect.gen(function*() {
            yield* Deferred.succeed(bStarted, undefined)
            yield* Deferred.await(gate)
            return { log: ["b"] }
          }))
        .node("c", {}, () => Effect.succeed({ log: ["c"] }))
        .edge(Graph.START, "a")
        .edge("a", "b")
        .edge("b", "c")
        .edge("c", Graph.END)
        .compile
      const runner = yield* Runner
      const h = yield* runner.start(g, {})
      yield* Deferred.await(bStarted)
      const before = yield* storedEvents(h.runId)
      assert.isAbove(before.length, 2)
      assert.notInclude(tags(before), "RunCompleted")

      const seenFirst = yield* Deferred.make<void>()
      const fromTwo = yield* runner.events(h.runId, 2).pipe(
        Stream.tap(() => Deferred.succeed(seenFirst, undefined)),
        Stream.runCollect,
        Effect.fork
      )
      const fromStart = yield* Effect.fork(Stream.runCollect(runner.events(h.runId)))
      yield* Deferred.await(seenFirst)
      yield* Deferred.succeed(gate, undefined)

      const tail = [...(yield* Fiber.join(fromTwo))]
      const all = [...(yield* Fiber.join(fromStart))]
      const stored = yield* storedEvents(h.runId)
      assert.isAbove(stored.length, before.length)
      assert.deepStrictEqual(tail, stored.filter((e) => e.seq > 2))
      assert.deepStrictEqual(tail.map((e) => e.seq), tail.map((_, i) => i + 3))
      assert.deepStrictEqual(all, [...stored])
      assert.strictEqual(tail[tail.length - 1]!._tag, "RunCompleted")
    })))

  it.effect("a subscriber after the run ended gets the history and the stream ends", () =>
    withRunner(Effect.gen(function*() {
      const g = yield* Graph.make({ id: "late", state: S })
        .node("a", {}, () => Effect.succeed({ log: ["a"] }))
        .edge(Graph.START, "a")
        .edge("a", Graph.END)
        .compile
      const runner = yield* Runner
      const h = yield* runner.start(g, {})
      yield* h.result
      const stored = yield* storedEvents(h.runId)
      assert.deepStrictEqual(yield* collectEvents(h.runId, 3), stored.filter((e) => e.seq > 3))
      assert.deepStrictEqual(yield* collectEvents(h.runId), [...stored])
    })))

  it.effect("cancel interrupts in-flight nodes and the run ends cancelled with a RunCancelled event", () =>
    withRunner(Effect.gen(function*() {
      const started = yield* Deferred.make<void>()
      const interrupted = yield* Ref.make(false)
      const nextRan = yield* counter()
      const g = yield* Graph.make({ id: "cancel", state: S })
        .node("slow", {}, () =>
          Deferred.succeed(started, undefined).pipe(
            Effect.zipRight(Effect.never),
            Effect.onInterrupt(() => Ref.set(interrupted, true)),
            Effect.as({ log: ["slow"] })
          ))
        .node("next", {}, () => Effect.as(bump(nextRan), {}))
        .edge(Graph.START, "slow")
        .edge("slow", "next")
        .edge("next", Graph.END)
        .compile
      const runner = yield* Runner
      const h = yield* runner.start(g, {})
      yield* Deferred.await(started)
      yield* runner.cancel(h.runId, "user asked")
      const r = yield* h.result
      assert.strictEqual(r.status, "cancelled")
      assert.isTrue(yield* Ref.get(interrupted))
      assert.strictEqual(yield* Ref.get(nextRan), 0)
      const events = yield* storedEvents(h.runId)
      const last = events[events.length - 1]!
      assert.strictEqual(last._tag, "RunCancelled")
      assert.strictEqual((last as Extract<typeof last, { _tag: "RunCancelled" }>).reason, "user asked")
      assert.strictEqual(ofTag(events, "NodeCompleted").length, 0)
      assert.deepStrictEqual(events.map((e) => e.seq), events.map((_, i) => i + 1))
    })))

  it.effect("cancelling a finished run fails with RunStatusError; an unknown run with RunNotFoundError", () =>
    withRunner(Effect.gen(function*() {
      const g = yield* Graph.make({ id: "done", state: S })
        .node("a", {}, () => Effect.succeed({}))
        .edge(Graph.START, "a")
        .edge("a", Graph.END)
        .compile
      const runner = yield* Runner
      const h = yield* runner.start(g, {})
      assert.strictEqual((yield* h.result).status, "completed")
      const error = yield* Effect.flip(runner.cancel(h.runId))
      assert.instanceOf(error, Errors.RunStatusError)
      assert.strictEqual((error as Errors.RunStatusError).status, "completed")
      assert.strictEqual((yield* Effect.orDie(Effect.flatMap(RunStore, (s) => s.get(h.runId)))).status, "completed")
      assert.instanceOf(yield* Effect.flip(runner.cancel("no-such-run")), Errors.RunNotFoundError)
    })))

  it.effect("starting the same runId twice returns the existing run", () =>
    withRunner(Effect.gen(function*() {
      const runs = yield* counter()
      const g = yield* Graph.make({ id: "idem", state: S })
        .node("a", {}, () => Effect.as(bump(runs), {}))
        .edge(Graph.START, "a")
        .edge("a", Graph.END)
        .compile
      const runner = yield* Runner
      const one = yield* runner.start(g, {}, { runId: "fixed" })
      yield* one.result
      const two = yield* runner.start(g, {}, { runId: "fixed" })
      assert.strictEqual(two.runId, "fixed")
      assert.strictEqual((yield* two.result).status, "completed")
      assert.strictEqual(yield* Ref.get(runs), 1)
    })))
})

describe("Node policy", () => {
  it.effect("an attempt over its timeout fails the run with NodeTimeoutError", () =>
    withRunner(Effect.gen(function*() {
      const g = yield* Graph.make({ id: "timeout", state: S })
        .node("slow", { policy: { timeout: "1 second" } }, () => Effect.as(Effect.sleep("1 hour"), {}))
        .edge(Graph.START, "slow")
        .edge("slow", Graph.END)
        .compile
      const runner = yield* Runner
      const h = yield* runner.start(g, {})
      const result = yield* Effect.fork(h.result)
      yield* awaitSleeps(2)
      yield* TestClock.adjust("1 second")
      yield* eventually(isDone(result), "the attempt to time out")
      const r = yield* Fiber.join(result)
      assert.strictEqual(r.status, "failed")
      assert.strictEqual(r.error?.tag, "NodeTimeoutError")
      const failed = ofTag(yield* storedEvents(h.runId), "NodeFailed")
      assert.strictEqual(failed.length, 1)
      assert.strictEqual(failed[0]!.errorTag, "NodeTimeoutError")
      assert.strictEqual(failed[0]!.attempts, 1)
    })))

  it.effect("a timed-out attempt is retried when the node has a retry policy", () =>
    withRunner(Effect.gen(function*() {
      const attempts = yield* counter()
      const g = yield* Graph.make({ id: "timeout-retry", state: S })
        .node(
          "flaky",
          { policy: { timeout: "1 second", retry: { maxAttempts: 3, initialDelay: "100 millis", jitter: false } } },
          (ctx) =>
            Effect.zipRight(
              bump(attempts),
              ctx.attempt === 1 ? Effect.as(Effect.sleep("1 hour"), {}) : Effect.succeed({ value: `attempt ${ctx.attempt}` })
            )
        )
        .edge(Graph.START, "flaky")
        .edge("flaky", Graph.END)
        .compile
      const runner = yield* Runner
      const h = yield* runner.start(g, {})
      const r = yield* advanceUntilDone(yield* Effect.fork(h.result), "100 millis")
      assert.strictEqual(r.status, "completed")
      assert.strictEqual(r.state.value, "attempt 2")
      assert.strictEqual(yield* Ref.get(attempts), 2)
      const events = yield* storedEvents(h.runId)
      const retrying = ofTag(events, "NodeRetrying")
      assert.strictEqual(retrying.length, 1)
      assert.strictEqual(retrying[0]!.attempt, 1)
      assert.include(retrying[0]!.error, "timed out")
      assert.strictEqual(ofTag(events, "NodeCompleted")[0]!.attempts, 2)
    })))

  const backoffRun = (retry: Node.RetryPolicy, failures: number, tick: Duration.DurationInput = "10 millis") =>
    withRunner(Effect.gen(function*() {
      const times = yield* Ref.make<ReadonlyArray<number>>([])
      const g = yield* Graph.make({ id: "backoff", state: S })
        .node("flaky", { policy: { retry } }, (ctx) =>
          Effect.gen(function*() {
            const now = yield* Clock.currentTimeMillis
            yield* Ref.update(times, (xs) => [...xs, now])
            if (ctx.attempt <= failures) return yield* Effect.fail(new Transient({ attempt: ctx.attempt }))
            return { value: `ok on ${ctx.attempt}` }
          }))
        .edge(Graph.START, "flaky")
        .edge("flaky", Graph.END)
        .compile
      const runner = yield* Runner
      const t0 = yield* Clock.currentTimeMillis
      const h = yield* runner.start(g, {})
      const r = yield* advanceUntilDone(yield* Effect.fork(h.result), tick)
      const events = yield* storedEvents(h.runId)
      return { r, events, offsets: (yield* Ref.get(times)).map((t) => t - t0) }
    }))

  it.effect("retries with exponential backoff: attempts, NodeRetrying events and delays", () =>
    Effect.gen(function*() {
      const { events, offsets, r } = yield* backoffRun(
        { maxAttempts: 5, initialDelay: "100 millis", factor: 2, jitter: false },
        3
      )
      assert.strictEqual(r.status, "completed")
      assert.strictEqual(r.state.value, "ok on 4")
      assert.deepStrictEqual(offsets, [0, 100, 300, 700])
      assert.deepStrictEqual(ofTag(events, "NodeRetrying").map((e) => e.attempt), [1, 2, 3])
      assert.strictEqual(ofTag(events, "NodeStarted").length, 1)
      assert.strictEqual(ofTag(events, "NodeCompleted")[0]!.attempts, 4)
    }))

  it.effect("backoff delays are capped by maxDelay", () =>
    Effect.gen(function*() {
      const { offsets, r } = yield* backoffRun(
        { maxAttempts: 5, initialDelay: "100 millis", factor: 2, maxDelay: "250 millis", jitter: false },
        4
      )
      assert.strictEqual(r.status, "completed")
      assert.deepStrictEqual(offsets, [0, 100, 300, 550, 800])
    }))

  it.effect("jittered backoff never waits longer than the un-jittered delay", () =>
    Effect.gen(function*() {
      const { offsets, r } = yield* backoffRun({ maxAttempts: 4, initialDelay: "1 second", factor: 2 }, 3, "100 millis")
      assert.strictEqual(r.status, "completed")
      assert.strictEqual(offsets.length, 4)
      const delays = offsets.slice(1).map((t, i) => t - offsets[i]!)
      const nominal = [1000, 2000, 4000]
      delays.forEach((d, i) => assert.isAtMost(d, nominal[i]! + 100))
    }))

  it.effect("retries stop at maxAttempts and the run fails with the node's error", () =>
    Effect.gen(function*() {
      const { events, offsets, r } = yield* backoffRun({ maxAttempts: 3, initialDelay: "100 millis", jitter: false }, 99)
      assert.strictEqual(r.status, "failed")
      assert.strictEqual(r.error?.tag, "Transient")
      assert.strictEqual(offsets.length, 3)
      assert.strictEqual(ofTag(events, "NodeRetrying").length, 2)
      const failed = ofTag(events, "NodeFailed")
      assert.strictEqual(failed.length, 1)
      assert.strictEqual(failed[0]!.attempts, 3)
      assert.strictEqual(failed[0]!.errorTag, "Transient")
    }))

  it.effect("retryOn stops retries for errors it rejects and keeps them for the others", () =>
    withRunner(Effect.gen(function*() {
      const attempts = yield* Ref.make<Record<string, number>>({})
      const graphFor = (kind: "fatal" | "transient") =>
        Graph.make({ id: `retry-on-${kind}`, state: S })
          .node(
            "call",
            {
              policy: {
                retry: { maxAttempts: 5, initialDelay: "10 millis", jitter: false },
                retryOn: (e) => !(e instanceof Fatal)
              }
            },
            (ctx) =>
              Effect.gen(function*() {
                yield* Ref.update(attempts, (a) => ({ ...a, [kind]: (a[kind] ?? 0) + 1 }))
                if (kind === "fatal") return yield* Effect.fail(new Fatal())
                if (ctx.attempt < 3) return yield* Effect.fail(new Transient({ attempt: ctx.attempt }))
                return { value: "recovered" }
              })
          )
          .edge(Graph.START, "call")
          .edge("call", Graph.END)
          .compile
      const runner = yield* Runner

      const fatal = yield* runner.start(yield* graphFor("fatal"), {})
      const rf = yield* advanceUntilDone(yield* Effect.fork(fatal.result))
      assert.strictEqual(rf.status, "failed")
      assert.strictEqual(rf.error?.tag, "Fatal")
      assert.strictEqual(ofTag(yield* storedEvents(fatal.runId), "NodeRetrying").length, 0)

      const transient = yield* runner.start(yield* graphFor("transient"), {})
      const rt = yield* advanceUntilDone(yield* Effect.fork(transient.result))
      assert.strictEqual(rt.status, "completed")
      assert.strictEqual(rt.state.value, "recovered")

      assert.deepStrictEqual(yield* Ref.get(attempts), { fatal: 1, transient: 3 })
    })))

  it.effect("a circuit breaker is shared across runs: opens, fails fast, probes once, closes", () =>
    withRunner(Effect.gen(function*() {
      const mode = yield* Ref.make<"fail" | "block" | "ok">("fail")
      const calls = yield* counter()
      const probeStarted = yield* Deferred.make<void>()
      const gate = yield* Deferred.make<void>()
      const g = yield* Graph.make({ id: "breaker", state: S })
        .node("call", { policy: { breaker: { failureThreshold: 2, resetAfter: "1 minute" } } }, () =>
          Effect.gen(function*() {
            yield* bump(calls)
            const m = yield* Ref.get(mode)
            if (m === "fail") return yield* Effect.fail(new Boom())
            if (m === "block") {
              yield* Deferred.succeed(probeStarted, undefined)
              yield* Deferred.await(gate)
            }
            return { value: "called" }
          }))
        .edge(Graph.START, "call")
        .edge("call", Graph.END)
        .compile
      const runner = yield* Runner
      const breakers = yield* CircuitBreakers
      const stateOf = Effect.map(breakers.snapshot, (all) => all.find((b) => b.key === "breaker/call")?.state)
      const run = Effect.flatMap(runner.start(g, {}), (h) => h.result)

      for (let i = 0; i < 2; i++) {
        const r = yield* run
        assert.strictEqual(r.status, "failed")
        assert.strictEqual(r.error?.tag, "Boom")
      }
      assert.strictEqual(yield* stateOf, "open")

      const fast = yield* run
      assert.strictEqual(fast.status, "failed")
      assert.strictEqual(fast.error?.tag, "CircuitOpenError")
      assert.strictEqual(yield* Ref.get(calls), 2)

      yield* TestClock.adjust("1 minute")
      yield* Ref.set(mode, "block")
      const probe = yield* runner.start(g, {})
      yield* Deferred.await(probeStarted)
      assert.strictEqual(yield* stateOf, "half_open")

      const refused = yield* run
      assert.strictEqual(refused.status, "failed")
      assert.strictEqual(refused.error?.tag, "CircuitOpenError")
      assert.strictEqual(yield* Ref.get(calls), 3)

      yield* Deferred.succeed(gate, undefined)
      const probed = yield* probe.result
      assert.strictEqual(probed.status, "completed")
      assert.strictEqual(yield* stateOf, "closed")

      yield* Ref.set(mode, "ok")
      assert.strictEqual((yield* run).status, "completed")
      assert.strictEqual(yield* Ref.get(calls), 4)
    })))
})

describe("Run limits", () => {
  it.effect("maxSteps fails the run with MaxStepsExceededError", () =>
    withRunner(Effect.gen(function*() {
      const g = yield* Graph.make({ id: "spin", state: S })
        .node("spin", {}, () => Effect.succeed({ count: 1 }))
        .edge(Graph.START, "spin")
        .route("spin", (s) => s.count >= 0 ? "spin" : Graph.END, ["spin", Graph.END])
        .compile
      const runner = yield* Runner
      const h = yield* runner.start(g, {}, { maxSteps: 5 })
      const r = yield* h.result
      assert.strictEqual(r.status, "failed")
      assert.strictEqual(r.error?.tag, "MaxStepsExceededError")
      const events = yield* storedEvents(h.runId)
      assert.strictEqual(ofTag(events, "NodeStarted").length, 5)
      const last = events[events.length - 1]!
      assert.strictEqual(last._tag, "RunFailed")
      assert.strictEqual((last as Extract<typeof last, { _tag: "RunFailed" }>).errorTag, "MaxStepsExceededError")
    })))

  it.effect("a deadline times the run out (status timed_out, RunTimedOut) and interrupts the in-flight node", () =>
    withRunner(Effect.gen(function*() {
      const interrupted = yield* Ref.make(false)
      const g = yield* Graph.make({ id: "deadline", state: S })
        .node("slow", {}, () =>
          Effect.sleep("10 seconds").pipe(
            Effect.onInterrupt(() => Ref.set(interrupted, true)),
            Effect.as({ value: "finished" })
          ))
        .edge(Graph.START, "slow")
        .edge("slow", Graph.END)
        .compile
      const runner = yield* Runner
      const t0 = yield* Clock.currentTimeMillis
      const h = yield* runner.start(g, {}, { timeout: "1 second" })
      const r = yield* advanceUntilDone(yield* Effect.fork(h.result), "100 millis")
      assert.strictEqual(r.status, "timed_out")
      assert.isTrue(yield* Ref.get(interrupted))
      const events = yield* storedEvents(h.runId)
      const last = events[events.length - 1]!
      assert.strictEqual(last._tag, "RunTimedOut")
      assert.strictEqual((last as Extract<typeof last, { _tag: "RunTimedOut" }>).deadline, t0 + 1000)
      assert.strictEqual(ofTag(events, "NodeCompleted").length, 0)
    })))

  it.effect("the deadline is stored as an instant on the run", () =>
    withRunner(Effect.gen(function*() {
      yield* TestClock.adjust("5 seconds")
      const g = yield* Graph.make({ id: "instant", state: S })
        .node("a", {}, () => Effect.succeed({}))
        .edge(Graph.START, "a")
        .edge("a", Graph.END)
        .compile
      const runner = yield* Runner
      const store = yield* RunStore
      const t0 = yield* Clock.currentTimeMillis
      const relative = yield* runner.start(g, {}, { timeout: "1 second" })
      assert.strictEqual((yield* store.get(relative.runId)).config.deadline, t0 + 1000)
      const absolute = yield* runner.start(g, {}, { deadline: new Date(t0 + 7000) })
      assert.strictEqual((yield* store.get(absolute.runId)).config.deadline, t0 + 7000)
      const none = yield* runner.start(g, {})
      assert.isNull((yield* store.get(none.runId)).config.deadline)
    })))

  it.effect("max steps, budgets, node budgets and breakpoints are stored with the run", () =>
    withRunner(Effect.gen(function*() {
      const g = yield* Graph.make({ id: "stored-limits", state: S })
        .node("a", {}, () => Effect.succeed({}))
        .edge(Graph.START, "a")
        .edge("a", Graph.END)
        .compile
      const runner = yield* Runner
      const store = yield* RunStore
      const h = yield* runner.start(g, {}, {
        maxSteps: 7,
        budget: { tokens: 1000, usd: 2 },
        nodeBudgets: { a: { tokens: 10 } },
        interruptBefore: ["a"]
      })
      const config = (yield* store.get(h.runId)).config
      assert.strictEqual(config.maxSteps, 7)
      assert.deepStrictEqual(config.budget, { tokens: 1000, usd: 2 })
      assert.deepStrictEqual(config.nodeBudgets, { a: { tokens: 10, usd: null } })
      assert.deepStrictEqual(config.interruptBefore, ["a"])
    })))

  it.effect("a run waiting for a human past its deadline times out", () =>
    withRunner(Effect.gen(function*() {
      const g = yield* Graph.make({ id: "deadline-waiting", state: S })
        .node("ask", {}, (ctx) => Effect.as(ctx.interrupt("approve?"), { value: "answered" }))
        .edge(Graph.START, "ask")
        .edge("ask", Graph.END)
        .compile
      const runner = yield* Runner
      const h = yield* runner.start(g, {}, { timeout: "1 minute" })
      assert.strictEqual((yield* h.result).status, "waiting")
      yield* TestClock.adjust("2 minutes")
      yield* awaitStatus(h.runId, "timed_out")
      const events = yield* storedEvents(h.runId)
      assert.strictEqual(events[events.length - 1]!._tag, "RunTimedOut")
    })))

  it.effect("the deadline holds across a resume on a new runner", () =>
    Effect.gen(function*() {
      const store = yield* RunStoreMemory.make()
      const g = yield* Graph.make({ id: "deadline-resume", state: S })
        .node("slow", {}, () => Effect.as(Effect.sleep("10 seconds"), { value: "finished" }))
        .edge(Graph.START, "slow")
        .edge("slow", Graph.END)
        .compile
      const t0 = yield* Clock.currentTimeMillis
      const first = yield* openRunner(store)
      const h = yield* first.runner.start(g, {}, { timeout: "1 second" })
      yield* awaitSleeps(2)
      yield* TestClock.adjust("600 millis")
      yield* first.stop
      assert.include(["pending", "running"], (yield* store.get(h.runId)).status)

      const baseline = yield* pendingSleeps
      const second = yield* openRunner(store)
      const resumed = yield* second.runner.resume(g, h.runId)
      const result = yield* Effect.fork(resumed.result)
      yield* awaitSleeps(baseline + 2)
      yield* TestClock.adjust("400 millis")
      yield* eventually(isDone(result), "the run to time out at its original deadline")
      const r = yield* Fiber.join(result)
      assert.strictEqual(r.status, "timed_out")
      const events = yield* store.events(h.runId, 0)
      const timedOut = ofTag(events, "RunTimedOut")
      assert.strictEqual(timedOut.length, 1)
      assert.strictEqual(timedOut[0]!.deadline, t0 + 1000)
      yield* second.stop
    }))

  it.effect("run budget: BudgetThreshold events at 50/75/90/100 % and failure at 100 %", () =>
    withRunner(Effect.gen(function*() {
      const g = yield* Graph.make({ id: "budget", state: S })
        .node("spend", {}, (ctx) =>
          Effect.gen(function*() {
            yield* ctx.reserve({ tokens: 20 })
            yield* ctx.recordUsage({ model: "scripted", inputTokens: 15, outputTokens: 5, usd: 0.01 })
            return { count: 1 }
          }))
        .edge(Graph.START, "spend")
        .route("spend", (s) => s.count < 100 ? "spend" : Graph.END, ["spend", Graph.END])
        .compile
      const runner = yield* Runner
      const h = yield* runner.start(g, {}, { budget: { tokens: 100 } })
      const r = yield* h.result
      assert.strictEqual(r.status, "failed")
      assert.strictEqual(r.error?.tag, "BudgetExceededError")
      assert.strictEqual(r.usage.total.tokens, 100)
      const events = yield* storedEvents(h.runId)
      const thresholds = ofTag(events, "BudgetThreshold")
      assert.deepStrictEqual(thresholds.map((e) => e.percent), [50, 75, 90, 100])
      assert.isTrue(thresholds.every((e) => e.resource === "tokens" && e.limit === 100))
      assert.deepStrictEqual(thresholds.map((e) => e.used), [60, 80, 100, 100])
      assert.strictEqual(ofTag(events, "ModelCalled").length, 5)
      assert.strictEqual(ofTag(events, "NodeStarted").length, 5)
      assert.strictEqual(events[events.length - 1]!._tag, "RunFailed")
    })))

  it.effect("a USD budget emits its thresholds and fails the run at 100 %", () =>
    withRunner(Effect.gen(function*() {
      const g = yield* Graph.make({ id: "budget-usd", state: S })
        .node("spend", {}, (ctx) =>
          Effect.as(ctx.recordUsage({ model: "scripted", inputTokens: 1, outputTokens: 1, usd: 0.25 }), { count: 1 }))
        .edge(Graph.START, "spend")
        .route("spend", (s) => s.count < 100 ? "spend" : Graph.END, ["spend", Graph.END])
        .compile
      const runner = yield* Runner
      const h = yield* runner.start(g, {}, { budget: { usd: 1 } })
      const r = yield* h.result
      assert.strictEqual(r.status, "failed")
      assert.strictEqual(r.error?.tag, "BudgetExceededError")
      const thresholds = ofTag(yield* storedEvents(h.runId), "BudgetThreshold")
      assert.deepStrictEqual(thresholds.map((e) => [e.resource, e.percent]), [["usd", 50], ["usd", 75], ["usd", 90], ["usd", 100]])
      assert.strictEqual(r.usage.total.usd, 1)
    })))

  it.effect("a reservation the run budget cannot cover fails with BudgetExceededError before the call", () =>
    withRunner(Effect.gen(function*() {
      const calls = yield* counter()
      const g = yield* Graph.make({ id: "reserve", state: S })
        .node("spend", {}, (ctx) =>
          Effect.gen(function*() {
            yield* ctx.reserve({ tokens: 60 })
            yield* bump(calls)
            yield* ctx.recordUsage({ model: "scripted", inputTokens: 50, outputTokens: 10, usd: 0 })
            return { count: 1 }
          }))
        .edge(Graph.START, "spend")
        .route("spend", (s) => s.count < 100 ? "spend" : Graph.END, ["spend", Graph.END])
        .compile
      const runner = yield* Runner
      const h = yield* runner.start(g, {}, { budget: { tokens: 100 } })
      const r = yield* h.result
      assert.strictEqual(r.status, "failed")
      assert.strictEqual(r.error?.tag, "BudgetExceededError")
      assert.strictEqual(yield* Ref.get(calls), 1)
      assert.strictEqual(r.usage.total.tokens, 60)
      const events = yield* storedEvents(h.runId)
      assert.deepStrictEqual(ofTag(events, "BudgetThreshold").map((e) => e.percent), [50])
      assert.strictEqual(ofTag(events, "NodeFailed")[0]?.errorTag, "BudgetExceededError")
    })))

  it.effect("nodeBudgets refuses a node's reservation over its own budget with BudgetExceededError", () =>
    withRunner(Effect.gen(function*() {
      const g = yield* Graph.make({ id: "node-budget", state: S })
        .node("limited", {}, (ctx) =>
          Effect.map(Effect.flip(ctx.reserve({ tokens: 50 })), (e) => ({ log: [`${e._tag}|${e.resource}|${e.limit}|${e.scope}`] })))
        .node("free", {}, (ctx) => Effect.as(ctx.reserve({ tokens: 50 }), { value: "free reserved" }))
        .edge(Graph.START, "limited")
        .edge(Graph.START, "free")
        .edge("limited", Graph.END)
        .edge("free", Graph.END)
        .compile
      const runner = yield* Runner
      const h = yield* runner.start(g, {}, { nodeBudgets: { limited: { tokens: 40 } } })
      const r = yield* h.result
      assert.strictEqual(r.status, "completed")
      assert.strictEqual(r.state.value, "free reserved")
      const [tag, resource, limit, scope] = r.state.log[0]!.split("|")
      assert.strictEqual(tag, "BudgetExceededError")
      assert.strictEqual(resource, "tokens")
      assert.strictEqual(limit, "40")
      assert.include(scope, "limited")
    })))

  it.effect("a node spec budget refuses a reservation over it and fails the run with BudgetExceededError", () =>
    withRunner(Effect.gen(function*() {
      const g = yield* Graph.make({ id: "spec-budget", state: S })
        .node("limited", { budget: { usd: 0.5 } }, (ctx) => Effect.as(ctx.reserve({ usd: 0.75 }), { value: "called" }))
        .edge(Graph.START, "limited")
        .edge("limited", Graph.END)
        .compile
      const runner = yield* Runner
      const r = yield* Effect.flatMap(runner.start(g, {}), (h) => h.result)
      assert.strictEqual(r.status, "failed")
      assert.strictEqual(r.error?.tag, "BudgetExceededError")
      assert.include(r.error!.message, "limited")
      assert.isUndefined(r.state.value)
    })))
})

const askGraph = (id: string, executions: Ref.Ref<number>, options?: { readonly timeout?: Duration.DurationInput }) =>
  Graph.make({ id, state: S })
    .node("draft", {}, () => Effect.succeed({ log: ["draft"] }))
    .node("ask", {}, (ctx) =>
      Effect.gen(function*() {
        yield* bump(executions)
        const response = yield* ctx.interrupt({ question: "publish?" }, options)
        const detail = response._tag === "approve"
          ? String(response.value)
          : response._tag === "reject"
          ? String(response.reason)
          : ""
        return { value: `${response._tag}:${detail}`, log: [`ask saw ${ctx.state.log.join(",")}`] }
      }))
    .edge(Graph.START, "draft")
    .edge("draft", "ask")
    .edge("ask", Graph.END)
    .compile

describe("Human in the loop", () => {
  it.effect("interrupt parks the run as waiting with the payload; approve re-runs the node with the response", () =>
    withRunner(Effect.gen(function*() {
      const executions = yield* counter()
      const g = yield* askGraph("hitl", executions)
      const runner = yield* Runner
      const h = yield* runner.start(g, {})
      const waiting = yield* h.result
      assert.strictEqual(waiting.status, "waiting")
      assert.strictEqual(waiting.interrupts.length, 1)
      assert.strictEqual(waiting.interrupts[0]!.node, "ask")
      assert.strictEqual(waiting.interrupts[0]!.kind, "node")
      assert.deepStrictEqual(waiting.interrupts[0]!.payload, { question: "publish?" })
      const events = yield* storedEvents(h.runId)
      const last = events[events.length - 1]!
      assert.strictEqual(last._tag, "RunWaiting")
      assert.deepStrictEqual(
        (last as Extract<typeof last, { _tag: "RunWaiting" }>).interrupts.map((i) => i.payload),
        [{ question: "publish?" }]
      )
      assert.strictEqual(ofTag(events, "NodeInterrupted").length, 1)

      yield* runner.respond(g, h.runId, { _tag: "approve", value: "yes" })
      const done = yield* runner.result(g, h.runId)
      assert.strictEqual(done.status, "completed")
      assert.strictEqual(done.state.value, "approve:yes")
      assert.deepStrictEqual(done.state.log, ["draft", "ask saw draft"])
      assert.deepStrictEqual(done.interrupts, [])
      assert.strictEqual(yield* Ref.get(executions), 2)
      const all = yield* storedEvents(h.runId)
      assert.deepStrictEqual(ofTag(all, "RunResumed").map((e) => e.response), ["approve"])
      assert.deepStrictEqual(all.map((e) => e.seq), all.map((_, i) => i + 1))
    })))

  it.effect("reject is handed to the interrupting node", () =>
    withRunner(Effect.gen(function*() {
      const executions = yield* counter()
      const g = yield* askGraph("hitl-reject", executions)
      const runner = yield* Runner
      const h = yield* runner.start(g, {})
      assert.strictEqual((yield* h.result).status, "waiting")
      yield* runner.respond(g, h.runId, { _tag: "reject", reason: "not yet" })
      const done = yield* runner.result(g, h.runId)
      assert.strictEqual(done.status, "completed")
      assert.strictEqual(done.state.value, "reject:not yet")
    })))

  it.effect("edit applies its state update, decoded against the schema; a bad edit fails and the run stays waiting", () =>
    withRunner(Effect.gen(function*() {
      const E = State.define({
        amount: State.channel(Schema.NumberFromString),
        note: State.channel(Schema.String),
        seen: State.list(Schema.Number)
      })
      const g = yield* Graph.make({ id: "edit", state: E })
        .node("review", {}, (ctx) =>
          Effect.gen(function*() {
            const response = yield* ctx.interrupt({ amount: ctx.state.amount })
            return { note: response._tag, seen: [ctx.state.amount] }
          }))
        .edge(Graph.START, "review")
        .edge("review", Graph.END)
        .compile
      const runner = yield* Runner
      const store = yield* RunStore
      const h = yield* runner.start(g, { amount: 1 })
      assert.strictEqual((yield* h.result).status, "waiting")

      const bad = yield* Effect.flip(runner.respond(g, h.runId, { _tag: "edit", update: { amount: "not a number" } }))
      assert.instanceOf(bad, Errors.InputValidationError)
      const unknownKey = yield* Effect.flip(runner.respond(g, h.runId, { _tag: "edit", update: { nope: 1 } }))
      assert.instanceOf(unknownKey, Errors.InputValidationError)
      assert.strictEqual((yield* store.get(h.runId)).status, "waiting")
      const stillWaiting = yield* runner.result(g, h.runId)
      assert.strictEqual(stillWaiting.status, "waiting")
      assert.strictEqual(stillWaiting.state.amount, 1)

      yield* runner.respond(g, h.runId, { _tag: "edit", update: { amount: "42" } })
      const done = yield* runner.result(g, h.runId)
      assert.strictEqual(done.status, "completed")
      assert.strictEqual(done.state.amount, 42)
      assert.strictEqual(done.state.note, "edit")
      assert.deepStrictEqual(done.state.seen, [42])
    })))

  it.effect("an expired wait resumes the node with { _tag: \"timeout\" }", () =>
    withRunner(Effect.gen(function*() {
      const executions = yield* counter()
      const g = yield* askGraph("hitl-timeout", executions, { timeout: "1 minute" })
      const runner = yield* Runner
      const t0 = yield* Clock.currentTimeMillis
      const h = yield* runner.start(g, {})
      const waiting = yield* h.result
      assert.strictEqual(waiting.status, "waiting")
      const events = yield* storedEvents(h.runId)
      assert.strictEqual(ofTag(events, "RunWaiting")[0]?.until, t0 + 60_000)

      yield* awaitSleeps(1)
      yield* TestClock.adjust("59 seconds")
      yield* Effect.yieldNow()
      assert.strictEqual((yield* runner.result(g, h.runId)).status, "waiting")
      yield* TestClock.adjust("1 second")
      yield* awaitStatus(h.runId, "completed")
      const done = yield* runner.result(g, h.runId)
      assert.strictEqual(done.state.value, "timeout:")
      assert.strictEqual(yield* Ref.get(executions), 2)
      assert.deepStrictEqual(ofTag(yield* storedEvents(h.runId), "RunResumed").map((e) => e.response), ["timeout"])
    })))

  it.effect("a parallel node's update survives another node's interrupt, and it does not run again", () =>
    withRunner(Effect.gen(function*() {
      const aRuns = yield* counter()
      const bRuns = yield* counter()
      const g = yield* Graph.make({ id: "parallel-hitl", state: S })
        .node("a", {}, () => Effect.as(bump(aRuns), { log: ["a"], count: 1 }))
        .node("b", {}, (ctx) =>
          Effect.gen(function*() {
            yield* bump(bRuns)
            const r = yield* ctx.interrupt("b?")
            return { log: [`b:${r._tag}`] }
          }))
        .edge(Graph.START, "a")
        .edge(Graph.START, "b")
        .edge("a", Graph.END)
        .edge("b", Graph.END)
        .compile
      const runner = yield* Runner
      const h = yield* runner.start(g, {})
      const waiting = yield* h.result
      assert.strictEqual(waiting.status, "waiting")
      assert.deepStrictEqual(waiting.interrupts.map((i) => i.node), ["b"])
      yield* runner.respond(g, h.runId, { _tag: "approve" })
      const done = yield* runner.result(g, h.runId)
      assert.strictEqual(done.status, "completed")
      assert.deepStrictEqual(done.state.log, ["a", "b:approve"])
      assert.strictEqual(done.state.count, 1)
      assert.strictEqual(yield* Ref.get(aRuns), 1)
      assert.strictEqual(yield* Ref.get(bRuns), 2)
    })))

  it.effect("a parallel node's update survives an interrupt answered on a new runner after a restart", () =>
    Effect.gen(function*() {
      const store = yield* RunStoreMemory.make()
      const aRuns = yield* counter()
      const g = yield* Graph.make({ id: "parallel-hitl-restart", state: S })
        .node("a", {}, () => Effect.as(bump(aRuns), { log: ["a"], count: 1 }))
        .node("b", {}, (ctx) => Effect.map(ctx.interrupt("b?"), (r) => ({ log: [`b:${r._tag}`] })))
        .edge(Graph.START, "a")
        .edge(Graph.START, "b")
        .edge("a", Graph.END)
        .edge("b", Graph.END)
        .compile
      const first = yield* openRunner(store)
      const h = yield* first.runner.start(g, {})
      assert.strictEqual((yield* h.result).status, "waiting")
      yield* first.stop
      const second = yield* openRunner(store)
      yield* second.runner.respond(g, h.runId, { _tag: "approve" })
      const done = yield* second.runner.result(g, h.runId)
      assert.strictEqual(done.status, "completed")
      assert.deepStrictEqual(done.state.log, ["a", "b:approve"])
      assert.strictEqual(yield* Ref.get(aRuns), 1)
      yield* second.stop
    }))

  const breakpointGraph = (id: string, runs: Ref.Ref<ReadonlyArray<string>>) => {
    const mark = (name: string) => () => Effect.as(Ref.update(runs, (xs) => [...xs, name]), { log: [name] })
    return Graph.make({ id, state: S })
      .node("a", {}, mark("a"))
      .node("b", {}, mark("b"))
      .node("c", {}, mark("c"))
      .edge(Graph.START, "a")
      .edge("a", "b")
      .edge("b", "c")
      .edge("c", Graph.END)
      .compile
  }

  it.effect("interruptBefore parks the run before the node; approve runs it", () =>
    withRunner(Effect.gen(function*() {
      const runs = yield* Ref.make<ReadonlyArray<string>>([])
      const g = yield* breakpointGraph("before", runs)
      const runner = yield* Runner
      const h = yield* runner.start(g, {}, { interruptBefore: ["b"] })
      const waiting = yield* h.result
      assert.strictEqual(waiting.status, "waiting")
      assert.deepStrictEqual(waiting.interrupts.map((i) => [i.kind, i.node]), [["before", "b"]])
      assert.deepStrictEqual(yield* Ref.get(runs), ["a"])
      yield* runner.respond(g, h.runId, { _tag: "approve" })
      const done = yield* runner.result(g, h.runId)
      assert.strictEqual(done.status, "completed")
      assert.deepStrictEqual(yield* Ref.get(runs), ["a", "b", "c"])
      assert.deepStrictEqual(done.state.log, ["a", "b", "c"])
    })))

  it.effect("interruptAfter parks the run after the node; approve continues without re-running it", () =>
    withRunner(Effect.gen(function*() {
      const runs = yield* Ref.make<ReadonlyArray<string>>([])
      const g = yield* breakpointGraph("after", runs)
      const runner = yield* Runner
      const h = yield* runner.start(g, {}, { interruptAfter: ["a"] })
      const waiting = yield* h.result
      assert.strictEqual(waiting.status, "waiting")
      assert.deepStrictEqual(waiting.interrupts.map((i) => [i.kind, i.node]), [["after", "a"]])
      assert.deepStrictEqual(yield* Ref.get(runs), ["a"])
      assert.deepStrictEqual(waiting.state.log, ["a"])
      yield* runner.respond(g, h.runId, { _tag: "approve" })
      const done = yield* runner.result(g, h.runId)
      assert.strictEqual(done.status, "completed")
      assert.deepStrictEqual(yield* Ref.get(runs), ["a", "b", "c"])
      assert.deepStrictEqual(done.state.log, ["a", "b", "c"])
    })))

  it.effect("reject at a breakpoint cancels the run", () =>
    withRunner(Effect.gen(function*() {
      const runs = yield* Ref.make<ReadonlyArray<string>>([])
      const g = yield* breakpointGraph("reject-breakpoint", runs)
      const runner = yield* Runner
      const h = yield* runner.start(g, {}, { interruptBefore: ["b"] })
      assert.strictEqual((yield* h.result).status, "waiting")
      yield* runner.respond(g, h.runId, { _tag: "reject", reason: "stop here" })
      const done = yield* runner.result(g, h.runId)
      assert.strictEqual(done.status, "cancelled")
      assert.deepStrictEqual(yield* Ref.get(runs), ["a"])
      const events = yield* storedEvents(h.runId)
      assert.strictEqual(events[events.length - 1]!._tag, "RunCancelled")

      yield* Ref.set(runs, [])
      const after = yield* runner.start(g, {}, { interruptAfter: ["a"] })
      assert.strictEqual((yield* after.result).status, "waiting")
      yield* runner.respond(g, after.runId, { _tag: "reject" })
      assert.strictEqual((yield* runner.result(g, after.runId)).status, "cancelled")
      assert.deepStrictEqual(yield* Ref.get(runs), ["a"])
    })))

  it.effect("a node that interrupts twice gets each response in turn", () =>
    withRunner(Effect.gen(function*() {
      const g = yield* Graph.make({ id: "two-questions", state: S })
        .node("ask", {}, (ctx) =>
          Effect.gen(function*() {
            const first = yield* ctx.interrupt("first?")
            const second = yield* ctx.interrupt("second?")
            return { log: [`${first._tag}:${first._tag === "approve" ? String(first.value) : ""}`, `${second._tag}`] }
          }))
        .edge(Graph.START, "ask")
        .edge("ask", Graph.END)
        .compile
      const runner = yield* Runner
      const h = yield* runner.start(g, {})
      const one = yield* h.result
      assert.deepStrictEqual(one.interrupts.map((i) => i.payload), ["first?"])
      yield* runner.respond(g, h.runId, { _tag: "approve", value: 1 })
      const two = yield* runner.result(g, h.runId)
      assert.strictEqual(two.status, "waiting")
      assert.deepStrictEqual(two.interrupts.map((i) => i.payload), ["second?"])
      yield* runner.respond(g, h.runId, { _tag: "reject" })
      const done = yield* runner.result(g, h.runId)
      assert.strictEqual(done.status, "completed")
      assert.deepStrictEqual(done.state.log, ["approve:1", "reject"])
    })))

  it.effect("with two nodes waiting, a targeted response answers one and the run waits for the other", () =>
    withRunner(Effect.gen(function*() {
      const runs = yield* Ref.make<Record<string, number>>({})
      const asker = (name: string) => (ctx: { readonly interrupt: (p: unknown) => Effect.Effect<Node.HumanResponse, Node.NodeInterrupt> }) =>
        Effect.gen(function*() {
          yield* Ref.update(runs, (r) => ({ ...r, [name]: (r[name] ?? 0) + 1 }))
          const r = yield* ctx.interrupt(`${name}?`)
          return { log: [`${name}:${r._tag}`] }
        })
      const g = yield* Graph.make({ id: "two-waiting", state: S })
        .node("x", {}, asker("x"))
        .node("y", {}, asker("y"))
        .edge(Graph.START, "x")
        .edge(Graph.START, "y")
        .edge("x", Graph.END)
        .edge("y", Graph.END)
        .compile
      const runner = yield* Runner
      const h = yield* runner.start(g, {})
      const waiting = yield* h.result
      assert.deepStrictEqual(waiting.interrupts.map((i) => i.node), ["x", "y"])
      yield* runner.respond(g, h.runId, { _tag: "approve" }, { node: "y" })
      const half = yield* runner.result(g, h.runId)
      assert.strictEqual(half.status, "waiting")
      yield* runner.respond(g, h.runId, { _tag: "reject" }, { node: "x" })
      const done = yield* runner.result(g, h.runId)
      assert.strictEqual(done.status, "completed")
      assert.deepStrictEqual(done.state.log, ["x:reject", "y:approve"])
      assert.deepStrictEqual(yield* Ref.get(runs), { x: 2, y: 2 })
    })))

  it.effect("an interrupt that already has its response cannot be answered again", () =>
    withRunner(Effect.gen(function*() {
      const g = yield* Graph.make({ id: "answered-twice", state: S })
        .node("x", {}, (ctx) => Effect.map(ctx.interrupt("x?"), (r) => ({ log: [`x:${r._tag}`] })))
        .node("y", {}, (ctx) => Effect.map(ctx.interrupt("y?"), (r) => ({ log: [`y:${r._tag}`] })))
        .edge(Graph.START, "x")
        .edge(Graph.START, "y")
        .edge("x", Graph.END)
        .edge("y", Graph.END)
        .compile
      const runner = yield* Runner
      const h = yield* runner.start(g, {})
      assert.strictEqual((yield* h.result).status, "waiting")
      yield* runner.respond(g, h.runId, { _tag: "approve" }, { node: "y" })
      const again = yield* Effect.either(runner.respond(g, h.runId, { _tag: "reject" }, { node: "y" }))
      assert.isTrue(Either.isLeft(again), "a second answer to the already-answered interrupt of y was accepted")
      assert.instanceOf(Either.isLeft(again) ? again.left : undefined, Errors.RunStatusError)
    })))

  it.effect("an expired wait takes the timeout path when the run is resumed on a new runner", () =>
    Effect.gen(function*() {
      const store = yield* RunStoreMemory.make()
      const executions = yield* counter()
      const g = yield* askGraph("hitl-timeout-restart", executions, { timeout: "1 minute" })
      const first = yield* openRunner(store)
      const h = yield* first.runner.start(g, {})
      assert.strictEqual((yield* h.result).status, "waiting")
      yield* first.stop
      yield* TestClock.adjust("2 minutes")
      const second = yield* openRunner(store)
      yield* second.runner.resume(g, h.runId)
      yield* awaitStatus(h.runId, "completed").pipe(Effect.provideService(RunStore, store))
      const done = yield* second.runner.result(g, h.runId)
      assert.strictEqual(done.state.value, "timeout:")
      yield* second.stop
    }))

  it.effect("cancel of a waiting run ends it cancelled", () =>
    withRunner(Effect.gen(function*() {
      const executions = yield* counter()
      const g = yield* askGraph("cancel-waiting", executions)
      const runner = yield* Runner
      const h = yield* runner.start(g, {})
      assert.strictEqual((yield* h.result).status, "waiting")
      yield* runner.cancel(h.runId)
      assert.strictEqual((yield* runner.result(g, h.runId)).status, "cancelled")
      assert.instanceOf(yield* Effect.flip(runner.respond(g, h.runId, { _tag: "approve" })), Errors.RunStatusError)
    })))

  it.effect("cancel of a waiting run from a new runner after a restart ends it cancelled", () =>
    Effect.gen(function*() {
      const store = yield* RunStoreMemory.make()
      const executions = yield* counter()
      const g = yield* askGraph("cancel-waiting-restart", executions)
      const first = yield* openRunner(store)
      const h = yield* first.runner.start(g, {})
      assert.strictEqual((yield* h.result).status, "waiting")
      yield* first.stop
      const second = yield* openRunner(store)
      yield* second.runner.cancel(h.runId, "abandoned")
      assert.strictEqual((yield* store.get(h.runId)).status, "cancelled")
      const events = yield* store.events(h.runId, 0)
      assert.strictEqual(events[events.length - 1]!._tag, "RunCancelled")
      assert.deepStrictEqual(events.map((e) => e.seq), events.map((_, i) => i + 1))
      yield* second.stop
    }))

  it.effect("respond to a run that is not waiting fails with RunStatusError", () =>
    withRunner(Effect.gen(function*() {
      const runs = yield* Ref.make<ReadonlyArray<string>>([])
      const g = yield* breakpointGraph("not-waiting", runs)
      const runner = yield* Runner
      const h = yield* runner.start(g, {})
      assert.strictEqual((yield* h.result).status, "completed")
      const error = yield* Effect.flip(runner.respond(g, h.runId, { _tag: "approve" }))
      assert.instanceOf(error, Errors.RunStatusError)
      assert.strictEqual((error as Errors.RunStatusError).status, "completed")
    })))

  it.effect("respond to a running run fails with RunStatusError and does not disturb it", () =>
    withRunner(Effect.gen(function*() {
      const started = yield* Deferred.make<void>()
      const gate = yield* Deferred.make<void>()
      const g = yield* Graph.make({ id: "busy", state: S })
        .node("a", {}, () =>
          Effect.gen(function*() {
            yield* Deferred.succeed(started, undefined)
            yield* Deferred.await(gate)
            return { value: "a" }
          }))
        .node("b", {}, () => Effect.succeed({ log: ["b"] }))
        .edge(Graph.START, "a")
        .edge("a", "b")
        .edge("b", Graph.END)
        .compile
      const runner = yield* Runner
      const h = yield* runner.start(g, {})
      yield* Deferred.await(started)
      const error = yield* Effect.flip(runner.respond(g, h.runId, { _tag: "approve" }))
      assert.instanceOf(error, Errors.RunStatusError)
      yield* Deferred.succeed(gate, undefined)
      const done = yield* h.result
      assert.strictEqual(done.status, "completed")
      assert.deepStrictEqual(done.state.log, ["b"])
    })))
})

describe("Idempotency key", () => {
  it.effect("is the same on every attempt of a node instance", () =>
    withRunner(Effect.gen(function*() {
      const keys = yield* Ref.make<ReadonlyArray<string>>([])
      const g = yield* Graph.make({ id: "idem-retry", state: S })
        .node("flaky", { policy: { retry: { maxAttempts: 3, initialDelay: "10 millis", jitter: false } } }, (ctx) =>
          Effect.gen(function*() {
            yield* Ref.update(keys, (xs) => [...xs, ctx.idempotencyKey])
            if (ctx.attempt < 3) return yield* Effect.fail(new Transient({ attempt: ctx.attempt }))
            return {}
          }))
        .edge(Graph.START, "flaky")
        .edge("flaky", Graph.END)
        .compile
      const runner = yield* Runner
      const h = yield* runner.start(g, {})
      const r = yield* advanceUntilDone(yield* Effect.fork(h.result))
      assert.strictEqual(r.status, "completed")
      const seen = yield* Ref.get(keys)
      assert.strictEqual(seen.length, 3)
      assert.strictEqual(new Set(seen).size, 1)
    })))

  it.effect("is distinct across fan-out indices and steps", () =>
    withRunner(Effect.gen(function*() {
      const keys = yield* Ref.make<ReadonlyArray<string>>([])
      const record = (ctx: { readonly idempotencyKey: string }) => Ref.update(keys, (xs) => [...xs, ctx.idempotencyKey])
      const g = yield* Graph.make({ id: "idem-distinct", state: S })
        .node("tick", { writes: ["count"] }, (ctx) => Effect.as(record(ctx), { count: 1 }))
        .node("work", { input: Schema.Number }, (ctx) => Effect.as(record(ctx), { results: [ctx.input] }))
        .edge(Graph.START, "tick")
        .route("tick", (s) => s.count < 3 ? "tick" : Graph.END, ["tick", Graph.END])
        .fanOut(Graph.START, "work", (s) => s.items)
        .edge("work", Graph.END)
        .compile
      const runner = yield* Runner
      const r = yield* Effect.flatMap(runner.start(g, { items: [7, 7, 7] }), (h) => h.result)
      assert.strictEqual(r.status, "completed")
      const seen = yield* Ref.get(keys)
      assert.strictEqual(seen.length, 6)
      assert.strictEqual(new Set(seen).size, 6)
    })))

  it.effect("is the same after an interrupt, even when the response reaches a new runner", () =>
    Effect.gen(function*() {
      const store = yield* RunStoreMemory.make()
      const keys = yield* Ref.make<ReadonlyArray<string>>([])
      const g = yield* Graph.make({ id: "idem-hitl", state: S })
        .node("ask", {}, (ctx) =>
          Effect.gen(function*() {
            yield* Ref.update(keys, (xs) => [...xs, ctx.idempotencyKey])
            yield* ctx.interrupt("ok?")
            return { value: "done" }
          }))
        .edge(Graph.START, "ask")
        .edge("ask", Graph.END)
        .compile
      const first = yield* openRunner(store)
      const h = yield* first.runner.start(g, {})
      assert.strictEqual((yield* h.result).status, "waiting")
      yield* first.stop
      const second = yield* openRunner(store)
      yield* second.runner.respond(g, h.runId, { _tag: "approve" })
      const done = yield* second.runner.result(g, h.runId)
      assert.strictEqual(done.status, "completed")
      const seen = yield* Ref.get(keys)
      assert.strictEqual(seen.length, 2)
      assert.strictEqual(seen[0], seen[1])
      yield* second.stop
    }))
})

describe("Resume from the store", () => {
  const resumable = (id: string, blocked: Ref.Ref<boolean>, counts: Ref.Ref<Record<string, number>>, bStarted?: Deferred.Deferred<void>, bInterrupted?: Ref.Ref<boolean>, keys?: Ref.Ref<ReadonlyArray<string>>) => {
    const count = (name: string) => Ref.update(counts, (c) => ({ ...c, [name]: (c[name] ?? 0) + 1 }))
    return Graph.make({ id, state: S })
      .node("a", {}, () => Effect.as(count("a"), { log: ["a"], count: 1 }))
      .node("b", {}, (ctx) =>
        Effect.gen(function*() {
          yield* count("b")
          if (keys !== undefined) yield* Ref.update(keys, (xs) => [...xs, ctx.idempotencyKey])
          if (yield* Ref.get(blocked)) {
            if (bStarted !== undefined) yield* Deferred.succeed(bStarted, undefined)
            yield* Effect.never.pipe(Effect.onInterrupt(() => bInterrupted === undefined ? Effect.void : Ref.set(bInterrupted, true)))
          }
          return { log: ["b"], count: 10 }
        }))
      .node("c", {}, () => Effect.as(count("c"), { log: ["c"], value: "end" }))
      .edge(Graph.START, "a")
      .edge("a", "b")
      .edge("b", "c")
      .edge("c", Graph.END)
      .compile
  }

  it.effect("a run stopped mid-step resumes on a new runner over the same store and ends like an uninterrupted run", () =>
    Effect.gen(function*() {
      const reference = yield* withRunner(Effect.gen(function*() {
        const g = yield* resumable("resume", yield* Ref.make(false), yield* Ref.make({}))
        const runner = yield* Runner
        const h = yield* runner.start(g, {})
        const r = yield* h.result
        return { r, events: yield* storedEvents(h.runId) }
      }))
      assert.strictEqual(reference.r.status, "completed")

      const store = yield* RunStoreMemory.make()
      const blocked = yield* Ref.make(true)
      const counts = yield* Ref.make<Record<string, number>>({})
      const bStarted = yield* Deferred.make<void>()
      const bInterrupted = yield* Ref.make(false)
      const keys = yield* Ref.make<ReadonlyArray<string>>([])
      const g = yield* resumable("resume", blocked, counts, bStarted, bInterrupted, keys)

      const first = yield* openRunner(store)
      const h = yield* first.runner.start(g, {})
      yield* Deferred.await(bStarted)
      yield* first.stop
      assert.isTrue(yield* Ref.get(bInterrupted), "stopping the runner interrupts its in-flight nodes")
      const stopped = yield* store.get(h.runId)
      assert.strictEqual(stopped.status, "running")
      assert.strictEqual(stopped.step, 1)

      yield* Ref.set(blocked, false)
      const second = yield* openRunner(store)
      const resumed = yield* second.runner.resume(g, h.runId)
      const r = yield* resumed.result
      assert.strictEqual(r.status, "completed")
      assert.deepStrictEqual(r.state, reference.r.state)
      assert.deepStrictEqual(yield* Ref.get(counts), { a: 1, b: 2, c: 1 })
      const bKeys = yield* Ref.get(keys)
      assert.strictEqual(bKeys.length, 2)
      assert.strictEqual(bKeys[0], bKeys[1], "the re-executed node gets the same idempotency key")
      const events = yield* store.events(h.runId, 0)
      assert.deepStrictEqual(events.map((e) => e.seq), events.map((_, i) => i + 1))
      assert.deepStrictEqual(comparable(events), comparable(reference.events))
      yield* second.stop
    }))

  it.effect("resume with a graph whose definition changed fails with GraphMismatchError", () =>
    Effect.gen(function*() {
      const store = yield* RunStoreMemory.make()
      const g = yield* resumable("mismatch", yield* Ref.make(true), yield* Ref.make({}))
      const first = yield* openRunner(store)
      const h = yield* first.runner.start(g, {})
      yield* awaitStatus(h.runId, "running").pipe(Effect.provideService(RunStore, store))
      yield* first.stop

      const changed = yield* Graph.make({ id: "mismatch", state: S })
        .node("a", {}, () => Effect.succeed({ log: ["a"] }))
        .node("b", {}, () => Effect.succeed({ log: ["b"] }))
        .node("c", {}, () => Effect.succeed({ log: ["c"] }))
        .node("d", {}, () => Effect.succeed({ log: ["d"] }))
        .edge(Graph.START, "a")
        .edge("a", "b")
        .edge("b", "c")
        .edge("c", "d")
        .edge("d", Graph.END)
        .compile
      assert.notStrictEqual(changed.hash, g.hash)
      const second = yield* openRunner(store)
      const error = yield* Effect.flip(second.runner.resume(changed, h.runId))
      assert.instanceOf(error, Errors.GraphMismatchError)
      const mismatch = error as Errors.GraphMismatchError
      assert.strictEqual(mismatch.storedHash, g.hash)
      assert.strictEqual(mismatch.hash, changed.hash)
      assert.strictEqual(mismatch.runId, h.runId)
      yield* second.stop
    }))
})
