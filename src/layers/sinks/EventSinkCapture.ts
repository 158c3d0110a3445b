/**
 * An in-memory `EventSink` for tests: it keeps every event it receives, in arrival order, and
 * exposes them through the `EventCapture` service.
 */
import { Context, Effect, Layer, Option, Stream, SubscriptionRef } from "effect"
import { isTerminal, type RunEvent } from "../../Events.js"
import { EventSink } from "../../services/EventSink.js"

/** Reads what a capture sink has received. */
export class EventCapture extends Context.Tag("fibergraph/EventCapture")<EventCapture, {
  /** Every captured event, in the order the sink received them. */
  readonly events: Effect.Effect<ReadonlyArray<RunEvent>>
  /** The captured events of one run, in the order received. */
  readonly byRun: (runId: string) => Effect.Effect<ReadonlyArray<RunEvent>>
  /** Waits until a terminal event of `runId` has been captured and returns that run's events. */
  readonly awaitEnd: (runId: string) => Effect.Effect<ReadonlyArray<RunEvent>>
  /** Forgets everything captured so far. */
  readonly clear: Effect.Effect<void>
}>() {}

/** A capture sink and the service that reads it, sharing one buffer. */
export interface Capture {
  readonly sink: EventSink["Type"]
  readonly capture: EventCapture["Type"]
}

const ofRun = (events: ReadonlyArray<RunEvent>, runId: string) => events.filter((e) => e.runId === runId)

/** Builds a fresh, empty capture. */
export const make: Effect.Effect<Capture> = Effect.gen(function*() {
  const ref = yield* SubscriptionRef.make<ReadonlyArray<RunEvent>>([])
  const sink = EventSink.of({
    write: (events) => SubscriptionRef.update(ref, (all) => [...all, ...events])
  })
  const capture = EventCapture.of({
    events: SubscriptionRef.get(ref),
    byRun: (runId) => Effect.map(SubscriptionRef.get(ref), (all) => ofRun(all, runId)),
    awaitEnd: (runId) =>
      ref.changes.pipe(
        Stream.map((all) => ofRun(all, runId)),
        Stream.filter((events) => events.some(isTerminal)),
        Stream.runHead,
        Effect.map(Option.getOrElse((): ReadonlyArray<RunEvent> => []))
      ),
    clear: SubscriptionRef.set(ref, [])
  })
  return { sink, capture }
})

/** Provides a capture as both the `EventSink` and the `EventCapture` that reads it. */
export const layer: Layer.Layer<EventSink | EventCapture> = Layer.effectContext(
  Effect.map(make, ({ capture, sink }) => Context.make(EventSink, sink).pipe(Context.add(EventCapture, capture)))
)
