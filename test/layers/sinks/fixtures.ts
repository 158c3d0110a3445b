/**
 * Shared fixtures of the sink tests: a small graph that retries, emits a custom event and joins,
 * and a runner layer over a fresh in-memory store with a given sink.
 */
import { Chunk, Context, Data, Effect, Layer, Schema, type Scope, Stream } from "effect"
import * as CircuitBreaker from "../../../src/CircuitBreaker.js"
import type { RunEvent } from "../../../src/Events.js"
import * as Graph from "../../../src/Graph.js"
import * as Runner from "../../../src/Runner.js"
import * as State from "../../../src/State.js"
import * as RunStoreMemory from "../../../src/layers/memory/RunStoreMemory.js"
import { combine, EventSink } from "../../../src/services/EventSink.js"
import * as EventSinkCapture from "../../../src/layers/sinks/EventSinkCapture.js"
import { EventCapture } from "../../../src/layers/sinks/EventSinkCapture.js"

/** A retryable failure on a node's first attempt. */
export class Flaky extends Data.TaggedError("Flaky")<{ readonly attempt: number }> {
  override get message() {
    return `flaky on attempt ${this.attempt}`
  }
}

/** A failure that ends the run. */
export class Broken extends Data.TaggedError("Broken")<{}> {
  override get message() {
    return "broken\non two lines"
  }
}

const S = State.define({
  topic: State.channel(Schema.String),
  notes: State.list(Schema.String),
  count: State.counter()
})

/** search (fails once, then emits `found`) and tally run in parallel; summary joins them; done ends. */
export const graph = Graph.make({ id: "sinks", state: S })
  .node(
    "search",
    { reads: ["topic"], writes: ["notes"], policy: { retry: { maxAttempts: 3, initialDelay: "0 millis", jitter: false } } },
    (ctx) =>
      ctx.attempt === 1
        ? Effect.fail(new Flaky({ attempt: ctx.attempt }))
        : Effect.as(ctx.emit("found", { hits: 2, topic: ctx.state.topic }), { notes: [`about ${ctx.state.topic}`] })
  )
  .node("tally", { writes: ["count"] }, () => Effect.succeed({ count: 1 }))
  .node("summary", { reads: ["notes"], writes: ["notes", "count"] }, (ctx) =>
    Effect.succeed({ notes: [`${ctx.state.notes.length} notes`], count: 1 }))
  .edge(Graph.START, "search")
  .edge(Graph.START, "tally")
  .edge(["search", "tally"], "summary")
  .edge("summary", Graph.END)
  .compile

/** A graph whose only node fails for good. */
export const failing = Graph.make({ id: "sinks-failing", state: S })
  .node("explode", { writes: ["notes"] }, () => Effect.fail(new Broken()))
  .edge(Graph.START, "explode")
  .edge("explode", Graph.END)
  .compile

/** The in-memory store and breakers every test runner uses. */
export const base = Layer.merge(RunStoreMemory.layer(), CircuitBreaker.layer)

/** A runner over a fresh in-memory store that sends its events to `sink`. */
export const runnerWith = <E, R>(sink: Layer.Layer<EventSink, E, R>): Layer.Layer<Runner.Runner, E, R> =>
  Runner.layer().pipe(Layer.provide(Layer.merge(base, sink)))

/**
 * The sink `make` builds, followed by a capture: once the capture holds a run's terminal event
 * (`EventCapture.awaitEnd`), the sink has finished writing that run.
 */
export const thenCapture = <E, R>(
  make: Effect.Effect<EventSink["Type"], E, R>
): Layer.Layer<EventSink | EventCapture, E, Exclude<R, Scope.Scope>> =>
  Layer.scopedContext(Effect.gen(function*() {
    const sink = yield* make
    const captured = yield* EventSinkCapture.make
    return Context.make(EventSink, combine(sink, captured.sink)).pipe(Context.add(EventCapture, captured.capture))
  }))

/** A runner over a fresh in-memory store whose sink is `sinks`, which also stay available to the test. */
export const runnerWithMerged = <ROut, E, R>(sinks: Layer.Layer<ROut, E, R>): Layer.Layer<Runner.Runner | ROut, E, R> =>
  Runner.layer().pipe(Layer.provide(base), Layer.provideMerge(sinks))

/** Starts `graph` on topic `topic` and collects the runner's events of the run, up to its terminal event. */
export const runToEnd = (topic: string) =>
  Effect.gen(function*() {
    const runner = yield* Runner.Runner
    const g = yield* graph
    const handle = yield* runner.start(g, { topic })
    const events = yield* Stream.runCollect(runner.events(handle.runId))
    const result = yield* handle.result
    return { runId: handle.runId, events: Chunk.toReadonlyArray(events) as ReadonlyArray<RunEvent>, result }
  })
