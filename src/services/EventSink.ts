/**
 * The `EventSink` port: where a runner sends every committed event, in order, besides its
 * subscribers (a test capture, a JSON Lines file, the console, or several at once).
 */
import { Context, Effect } from "effect"
import type { RunEvent } from "../Events.js"

/** The port. A sink's failure is logged by the runner and never fails a run. */
export class EventSink extends Context.Tag("fibergraph/EventSink")<EventSink, {
  /** Receives one commit's events, in sequence order. */
  readonly write: (events: ReadonlyArray<RunEvent>) => Effect.Effect<void, unknown>
}>() {}

/** A sink that forwards to each of `sinks` in turn. */
export const combine = (...sinks: ReadonlyArray<EventSink["Type"]>): EventSink["Type"] =>
  EventSink.of({
    write: (events) => Effect.forEach(sinks, (sink) => sink.write(events), { discard: true })
  })
