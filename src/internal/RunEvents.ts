/**
 * Run events, published once committed: live subscribers of a run whose actor lives in this
 * process get them through a per-run hub (made only when someone subscribes), and an `EventSink`,
 * if one is provided, gets every batch in order from a background fiber, so a slow or hanging
 * sink never stalls a run.
 */
import { Deferred, Effect, Option, PubSub, Queue, Stream } from "effect"
import type { EventLogCorruptionError, RunNotFoundError } from "../Errors.js"
import { isTerminal, type LiveEvent, type ModelDelta, type RunEvent } from "../Events.js"
import type { EventSink } from "../services/EventSink.js"
import type { RunStore } from "../services/RunStore.js"

const Gone = { _tag: "ActorGone" } as const
type Signal = LiveEvent | typeof Gone

/** The event fan-out of one runner. */
export interface RunEvents {
  /** Hands committed events to the run's live subscribers and to the sink. */
  readonly publish: (runId: string) => (events: ReadonlyArray<RunEvent>) => Effect.Effect<void>
  /** Hands a live-only event to the run's live subscribers, if any (never stored, never given to the sink). */
  readonly live: (runId: string) => (event: ModelDelta) => Effect.Effect<void>
  /** Ends the live streams of a run whose actor stopped. */
  readonly close: (runId: string) => Effect.Effect<void>
  /**
   * A run's committed events after `afterSeq`, then (if its actor lives here when the stream starts) its live ones,
   * up to its terminal event or the actor's end.
   */
  readonly stream: (
    runId: string,
    afterSeq: number,
    local: () => boolean
  ) => Stream.Stream<RunEvent, RunNotFoundError | EventLogCorruptionError>
  /** Like `stream`, with the live-only deltas interleaved with the committed events. */
  readonly watch: (
    runId: string,
    afterSeq: number,
    local: () => boolean
  ) => Stream.Stream<LiveEvent, RunNotFoundError | EventLogCorruptionError>
}

/** Builds the fan-out; the sink's writer lives (and drains for up to 10 s) as long as the scope. */
export const make = (store: RunStore["Type"], sink: Option.Option<EventSink["Type"]>) =>
  Effect.gen(function*() {
    const hubs = new Map<string, PubSub.PubSub<Signal>>()
    const sinkQueue = Option.isNone(sink) ? undefined : yield* Queue.unbounded<ReadonlyArray<RunEvent>>()
    const sinkState = { pending: 0, idle: undefined as Deferred.Deferred<void> | undefined }
    if (sinkQueue !== undefined && Option.isSome(sink)) {
      yield* Queue.take(sinkQueue).pipe(
        Effect.flatMap((events) => sink.value.write(events)),
        Effect.catchAllCause((cause) => Effect.logWarning("event sink failed", cause)),
        Effect.ensuring(Effect.suspend(() => {
          sinkState.pending--
          const idle = sinkState.idle
          return sinkState.pending === 0 && idle !== undefined ? Deferred.succeed(idle, undefined) : Effect.void
        })),
        Effect.forever,
        Effect.forkScoped
      )
      yield* Effect.addFinalizer(() =>
        Effect.gen(function*() {
          if (sinkState.pending === 0) return
          const idle = yield* Deferred.make<void>()
          sinkState.idle = idle
          yield* Effect.interruptible(Deferred.await(idle)).pipe(Effect.timeout("10 seconds"), Effect.ignore)
        })
      )
    }

    const publish = (runId: string) => (events: ReadonlyArray<RunEvent>): Effect.Effect<void> =>
      Effect.suspend(() => {
        const hub = hubs.get(runId)
        const live = hub === undefined ? Effect.void : PubSub.publishAll(hub, events)
        if (sinkQueue === undefined) return live
        sinkState.pending++
        return Effect.zipRight(live, Queue.offer(sinkQueue, events))
      })

    const live = (runId: string) => (event: ModelDelta): Effect.Effect<void> =>
      Effect.suspend(() => {
        const hub = hubs.get(runId)
        return hub === undefined ? Effect.void : Effect.asVoid(PubSub.publish(hub, event))
      })

    const close = (runId: string): Effect.Effect<void> =>
      Effect.suspend(() => {
        const hub = hubs.get(runId)
        hubs.delete(runId)
        return hub === undefined ? Effect.void : Effect.asVoid(PubSub.publish(hub, Gone))
      })

    const hubFor = (runId: string) =>
      Effect.suspend(() => {
        const hub = hubs.get(runId)
        return hub !== undefined
          ? Effect.succeed(hub)
          : Effect.tap(PubSub.unbounded<Signal>(), (created) => Effect.sync(() => hubs.set(runId, created)))
      })

    const isDurable = (e: LiveEvent): e is RunEvent => e._tag !== "ModelDelta"

    const watch = (runId: string, afterSeq: number, local: () => boolean) =>
      Stream.unwrapScoped(Effect.gen(function*() {
        const subscription = local() ? yield* PubSub.subscribe(yield* hubFor(runId)) : undefined
        const history = yield* store.events(runId, afterSeq)
        const last = history.length === 0 ? afterSeq : history[history.length - 1]!.seq
        const past = Stream.fromIterable<LiveEvent>(history)
        if (subscription === undefined || history.some(isTerminal)) return past
        const future = Stream.fromQueue(subscription).pipe(
          Stream.takeWhile((s): s is LiveEvent => s._tag !== "ActorGone"),
          Stream.filter((e) => !isDurable(e) || e.seq > last)
        )
        return Stream.concat(past, future)
      })).pipe(Stream.takeUntil((e) => isDurable(e) && isTerminal(e)))

    const stream = (runId: string, afterSeq: number, local: () => boolean) =>
      Stream.filter(watch(runId, afterSeq, local), isDurable)

    return { publish, live, close, stream, watch } satisfies RunEvents
  })
