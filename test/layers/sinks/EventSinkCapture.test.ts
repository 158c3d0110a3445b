import { assert, it } from "@effect/vitest"
import { Chunk, Effect, Layer, Logger, Stream } from "effect"
import type { RunEvent } from "../../../src/Events.js"
import * as Runner from "../../../src/Runner.js"
import { EventSink } from "../../../src/services/EventSink.js"
import * as EventSinkCapture from "../../../src/layers/sinks/EventSinkCapture.js"
import { EventCapture } from "../../../src/layers/sinks/EventSinkCapture.js"
import { failing, runnerWith, runnerWithMerged, runToEnd } from "./fixtures.js"

const WithCapture = runnerWithMerged(EventSinkCapture.layer)

it.effect("captures exactly the runner's events of a run, in order", () =>
  Effect.gen(function*() {
    const capture = yield* EventCapture
    const { events, result, runId } = yield* runToEnd("otters")
    const captured = yield* capture.awaitEnd(runId)
    assert.strictEqual(result.status, "completed")
    assert.deepStrictEqual(captured, events)
    assert.deepStrictEqual(captured.map((e) => e.seq), events.map((_, i) => i + 1))
    const tags = new Set(captured.map((e) => e._tag))
    for (const tag of ["RunStarted", "NodeRetrying", "Custom", "StepCommitted", "RunCompleted"] as const) {
      assert.isTrue(tags.has(tag), `missing ${tag}`)
    }
  }).pipe(Effect.provide(WithCapture)))

it.effect("keeps concurrent runs apart by run id, and clear forgets them", () =>
  Effect.gen(function*() {
    const capture = yield* EventCapture
    const [a, b] = yield* Effect.all([runToEnd("a"), runToEnd("b")], { concurrency: 2 })
    assert.deepStrictEqual(yield* capture.awaitEnd(a.runId), a.events)
    assert.deepStrictEqual(yield* capture.awaitEnd(b.runId), b.events)
    assert.strictEqual((yield* capture.events).length, a.events.length + b.events.length)
    yield* capture.clear
    assert.deepStrictEqual(yield* capture.events, [])
    assert.deepStrictEqual(yield* capture.byRun(a.runId), [])
  }).pipe(Effect.provide(WithCapture)))

it.effect("captures a failed run's NodeFailed and RunFailed", () =>
  Effect.gen(function*() {
    const capture = yield* EventCapture
    const runner = yield* Runner.Runner
    const handle = yield* runner.start(yield* failing, {})
    const events = Chunk.toReadonlyArray(yield* Stream.runCollect(handle.events))
    const captured = yield* capture.awaitEnd(handle.runId)
    assert.deepStrictEqual(captured, events)
    const failed = captured.find((e): e is Extract<RunEvent, { _tag: "NodeFailed" }> => e._tag === "NodeFailed")
    assert.strictEqual(failed?.errorTag, "Broken")
    assert.strictEqual(captured[captured.length - 1]!._tag, "RunFailed")
  }).pipe(Effect.provide(WithCapture)))

const recordingLogger = (messages: Array<string>) =>
  Logger.make(({ logLevel, message }) => {
    const text = (Array.isArray(message) ? message : [message]).map(String).join(" ")
    messages.push(`${logLevel.label} ${text}`)
  })

const brokenSinks = {
  fails: Layer.succeed(EventSink, EventSink.of({ write: () => Effect.fail("disk on fire") })),
  dies: Layer.succeed(EventSink, EventSink.of({ write: () => Effect.die(new Error("sink bug")) }))
}

for (const [how, sink] of Object.entries(brokenSinks)) {
  it.effect(`a sink that ${how} does not fail the run; the runner logs a warning`, () =>
    Effect.gen(function*() {
      const messages: Array<string> = []
      const logger = Logger.replace(Logger.defaultLogger, recordingLogger(messages))
      const { events, result } = yield* runToEnd("resilience").pipe(
        Effect.provide(runnerWith(sink).pipe(Layer.provide(logger)))
      )
      assert.strictEqual(result.status, "completed")
      assert.strictEqual(events[events.length - 1]!._tag, "RunCompleted")
      const warnings = messages.filter((m) => m.startsWith("WARN") && m.includes("event sink failed"))
      assert.isAtLeast(warnings.length, 1)
    }))
}
