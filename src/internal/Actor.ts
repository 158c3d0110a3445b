/**
 * The per-run actor: one fiber per owned run, supervised in the runner's `FiberMap`, with a
 * mailbox (human responses, cancels, due timers, the end of a drive). It drives the run, arms a
 * timer for its wait's timeout or deadline, answers `result` waiters whenever the run settles, and
 * refuses (never drops) a message that arrives while it is stopping.
 */
import type { CallJournal } from "../services/CallJournal.js"
import { Cause, Clock, Data, Deferred, Effect, Exit, Fiber, FiberMap, Option, Queue } from "effect"
import type { CircuitBreakers } from "../CircuitBreaker.js"
import { type InputValidationError, RunStatusError, StaleClaimError } from "../Errors.js"
import type { CompiledGraph } from "../Graph.js"
import type { HumanResponse } from "../Node.js"
import { type RunRecord, type RunStore, terminalStatuses } from "../services/RunStore.js"
import { makeSpendTracker } from "./Budget.js"
import { type Cursor, unguarded, type Writer } from "./Commit.js"
import * as Control from "./Control.js"
import { drive, type DriveError, type Settled } from "./Drive.js"
import type { RunEvents } from "./RunEvents.js"
import { spanned } from "./Tracing.js"
import type { Env, Position } from "./Position.js"

/** A message that reached an actor as it stopped: the sender tries again without it. */
export class ActorGone extends Data.TaggedError("ActorGone")<{}> {}

type Message =
  | { readonly _tag: "Done"; readonly exit: Exit.Exit<Settled, DriveError> }
  | {
    readonly _tag: "Respond"
    readonly response: HumanResponse
    readonly target: Control.ResponseTarget | undefined
    readonly reply: Deferred.Deferred<Control.Answered, RunStatusError | InputValidationError | StaleClaimError | ActorGone>
  }
  | {
    readonly _tag: "Cancel"
    readonly reason: string
    readonly reply: Deferred.Deferred<void, RunStatusError | StaleClaimError | ActorGone>
  }
  | { readonly _tag: "WaitTimeout" }

/** Why an actor stopped before its run settled. */
export interface Stopped {
  readonly message: string
  /** The run's claim moved to another owner (a takeover, a cancel elsewhere, a lost lease). */
  readonly claimLost: boolean
}

/** A live actor. */
export interface Actor {
  readonly mailbox: Queue.Queue<Message>
  /** The run's writer; its cursor is the run and position as of the actor's latest commit. */
  readonly writer: Writer
  /** Callers of `result` waiting for the run to settle (wait or end) or the actor to stop. */
  readonly waiters: Array<Deferred.Deferred<Cursor>>
  closed: boolean
}

/** The actors of one runner. */
export interface Actors {
  readonly live: Map<string, Actor>
  /** Why an actor stopped abnormally, for `result` (kept until the run is spawned again). */
  readonly stopped: Map<string, Stopped>
  readonly fibers: FiberMap.FiberMap<string>
}

/** What a writer of a run is built from. */
export interface WriterDeps {
  readonly store: RunStore["Type"]
  readonly breakers: CircuitBreakers["Type"]
  readonly events: RunEvents
  /** The call journal of the store the runner writes to, if it has one. */
  readonly journal: CallJournal["Type"] | undefined
}

/** An owned run's step environment and writer (its `claimEpoch` is ours), starting at `pos`. */
export interface Owned {
  readonly env: Env
  readonly writer: Writer
}

/** Builds the environment and writer of an owned run. */
export const ownedOf = (
  deps: WriterDeps,
  graph: CompiledGraph,
  run: RunRecord,
  pos: Position,
  clock: Clock.Clock,
  guard: Effect.Effect<void, StaleClaimError> = unguarded
): Owned => {
  const spend = makeSpendTracker(graph, run)
  return {
    env: {
      graph,
      runId: run.runId,
      config: run.config,
      clock,
      breakers: deps.breakers,
      spend,
      prefix: "",
      scope: "",
      resumeSource: undefined,
      epoch: run.claimEpoch,
      guard,
      live: deps.events.live(run.runId),
      journal: deps.journal
    },
    writer: {
      runId: run.runId,
      store: deps.store,
      clock,
      graph,
      usage: () => spend.snapshot(),
      epoch: run.claimEpoch,
      cursor: { run, pos },
      publish: deps.events.publish(run.runId),
      guard
    }
  }
}

/** Sends a message to a run's live actor; `false` when there is none or it is stopping. */
export const send = (actors: Actors, runId: string, message: Message): boolean => {
  const actor = actors.live.get(runId)
  if (actor === undefined || actor.closed) return false
  return actor.mailbox.unsafeOffer(message)
}

const awaitReply = <A, E>(sent: boolean, reply: Deferred.Deferred<A, E | ActorGone>): Effect.Effect<Option.Option<A>, E> =>
  sent
    ? Deferred.await(reply).pipe(
      Effect.map(Option.some),
      Effect.catchIf((e): e is ActorGone => e instanceof ActorGone, () => Effect.succeed(Option.none<A>()))
    )
    : Effect.succeed(Option.none())

/** Hands a response to a run's actor and awaits the outcome; `None` when no actor took it (go through the store). */
export const askRespond = (
  actors: Actors,
  runId: string,
  response: HumanResponse,
  target: Control.ResponseTarget | undefined
): Effect.Effect<Option.Option<Control.Answered>, RunStatusError | InputValidationError | StaleClaimError> =>
  Effect.flatMap(
    Deferred.make<Control.Answered, RunStatusError | InputValidationError | StaleClaimError | ActorGone>(),
    (reply) => awaitReply(send(actors, runId, { _tag: "Respond", response, target, reply }), reply)
  )

/** Asks a run's actor to cancel it; `None` when no actor took the request (go through the store). */
export const askCancel = (
  actors: Actors,
  runId: string,
  reason: string
): Effect.Effect<Option.Option<void>, RunStatusError | StaleClaimError> =>
  Effect.flatMap(
    Deferred.make<void, RunStatusError | StaleClaimError | ActorGone>(),
    (reply) => awaitReply(send(actors, runId, { _tag: "Cancel", reason, reply }), reply)
  )

const refuse = (message: Message): Effect.Effect<void> => {
  switch (message._tag) {
    case "Respond":
      return Effect.asVoid(Deferred.fail(message.reply, new ActorGone()))
    case "Cancel":
      return Effect.asVoid(Deferred.fail(message.reply, new ActorGone()))
    default:
      return Effect.void
  }
}

/** Spawns the actor of an owned run in the runner's `FiberMap`; it lives until the run settles for good or is stopped. */
export const spawn = <R>(actors: Actors, events: RunEvents, graph: CompiledGraph, { env, writer }: Owned) =>
  Effect.gen(function*() {
    const context = yield* Effect.context<R>()
    const mailbox = yield* Queue.unbounded<Message>()
    const cursor = writer.cursor
    const runId = cursor.run.runId
    const actor: Actor = { mailbox, writer, waiters: [], closed: false }
    const wake = Effect.suspend(() => {
      const waiters = actor.waiters.splice(0)
      const snapshot = { run: cursor.run, pos: cursor.pos }
      return Effect.forEach(waiters, (w) => Deferred.succeed(w, snapshot), { discard: true })
    })
    actors.live.set(runId, actor)
    actors.stopped.delete(runId)

    const body = Effect.gen(function*() {
      let loop: Fiber.RuntimeFiber<void> | undefined
      let timer: Fiber.RuntimeFiber<void> | undefined
      const startLoop = Effect.gen(function*() {
        loop = yield* Effect.fork(
          drive(env, writer).pipe(
            Effect.exit,
            Effect.flatMap((exit) => Queue.offer(mailbox, { _tag: "Done", exit })),
            Effect.asVoid
          )
        )
      })
      const disarm = Effect.suspend(() => {
        const armed = timer
        timer = undefined
        return armed === undefined ? Effect.void : Fiber.interrupt(armed)
      })
      const arm = Effect.gen(function*() {
        yield* disarm
        const until = Control.nextDue(cursor.run)
        if (until === null) return
        timer = yield* Effect.fork(
          Effect.flatMap(Clock.currentTimeMillis, (now) =>
            Effect.zipRight(Effect.sleep(Math.max(0, until - now)), Queue.offer(mailbox, { _tag: "WaitTimeout" }))).pipe(
            Effect.asVoid
          )
        )
      })
      /** Applies an answer; `true` when the run ended with it. */
      const accept = (response: HumanResponse, target: Control.ResponseTarget | undefined) =>
        Effect.gen(function*() {
          const outcome = yield* Control.answer(writer, graph, response, target)
          if (outcome === "running") {
            yield* disarm
            yield* startLoop
          }
          return outcome
        })

      if (cursor.run.status === "pending" || cursor.run.status === "running") yield* startLoop
      else if (cursor.run.status === "waiting") yield* arm
      else return

      while (true) {
        const message = yield* Queue.take(mailbox)
        switch (message._tag) {
          case "Done": {
            loop = undefined
            if (Exit.isFailure(message.exit)) {
              const error = Cause.failureOption(message.exit.cause)
              if (Option.isSome(error) && error.value instanceof StaleClaimError) {
                actors.stopped.set(runId, { message: error.value.message, claimLost: true })
                return
              }
              return yield* Effect.failCause(message.exit.cause)
            }
            if (terminalStatuses.has(cursor.run.status)) return
            yield* wake
            yield* arm
            break
          }
          case "WaitTimeout": {
            const due = Control.due(cursor.run, yield* Clock.currentTimeMillis)
            if (due === "deadline") {
              yield* Effect.ignore(Control.timeOut(writer))
              return
            }
            if (due === undefined) break
            const outcome = yield* Effect.either(accept({ _tag: "timeout" }, undefined))
            if (outcome._tag === "Left") {
              if (outcome.left instanceof StaleClaimError) {
                actors.stopped.set(runId, { message: outcome.left.message, claimLost: true })
                return
              }
              yield* Effect.logWarning(`run ${runId}: wait timeout not applied`, outcome.left.message)
            } else if (outcome.right === "cancelled") return
            break
          }
          case "Respond": {
            const outcome = yield* Effect.either(accept(message.response, message.target))
            if (outcome._tag === "Left") {
              yield* Deferred.fail(message.reply, outcome.left)
              if (outcome.left instanceof StaleClaimError) {
                actors.stopped.set(runId, { message: outcome.left.message, claimLost: true })
                return
              }
              break
            }
            yield* Deferred.succeed(message.reply, outcome.right)
            if (outcome.right === "cancelled") return
            break
          }
          case "Cancel": {
            if (loop !== undefined) yield* Fiber.interrupt(loop)
            loop = undefined
            yield* Deferred.complete(message.reply, Control.cancel(writer, message.reason))
            return
          }
        }
      }
    }).pipe(
      Effect.ensuring(Effect.suspend(() => {
        actor.closed = true
        actors.live.delete(runId)
        return Effect.all([
          events.close(runId),
          Effect.flatMap(Queue.takeAll(mailbox), Effect.forEach(refuse, { discard: true })),
          Queue.shutdown(mailbox),
          wake
        ], { discard: true })
      })),
      Effect.catchAllCause((cause) => {
        if (Cause.isInterruptedOnly(cause)) return Effect.void
        const squashed = Cause.squash(cause)
        actors.stopped.set(runId, { message: squashed instanceof Error ? squashed.message : String(squashed), claimLost: false })
        return Effect.logError(`run ${runId}: actor failed`, cause)
      }),
      spanned("fibergraph.run", {
        "fibergraph.run_id": runId,
        "fibergraph.graph_id": graph.id,
        "fibergraph.graph_version": graph.version,
        "fibergraph.epoch": writer.epoch
      }),
      Effect.provide(context)
    ) as Effect.Effect<void>
    yield* FiberMap.run(actors.fibers, runId, body)
  })

/** The empty actor registry of a runner, whose fibers live as long as the scope. */
export const makeActors = Effect.map(FiberMap.make<string>(), (fibers): Actors => ({
  live: new Map(),
  stopped: new Map(),
  fibers
}))

