/**
 * The runner: accepts runs, takes up stored ones, and hosts every run it owns as an actor (a fiber
 * in a `FiberMap`, see `internal/Actor`). The concepts live in their own modules — admission,
 * loading, the actor, control writes, the one commit path and the event fan-out — and this module
 * wires them into the `Runner` service.
 */
import { Context, Deferred, Effect, FiberId, FiberMap, Layer, Option, type Stream } from "effect"
import { CircuitBreakers } from "./CircuitBreaker.js"
import {
  type EventLogCorruptionError,
  GraphMismatchError,
  InputValidationError,
  type RunNotFoundError,
  RunStatusError,
  StaleClaimError
} from "./Errors.js"
import type { LiveEvent, RunEvent } from "./Events.js"
import type { CompiledGraph } from "./Graph.js"
import * as Actor from "./internal/Actor.js"
import * as Admission from "./internal/Admission.js"
import { fromCheckpoint } from "./internal/Codec.js"
import { commit, controlWriter, type Cursor, stampFor } from "./internal/Commit.js"
import * as Control from "./internal/Control.js"
import * as Load from "./internal/Load.js"
import * as RunEvents from "./internal/RunEvents.js"
import type { Position } from "./internal/Position.js"
import type { HumanResponse } from "./Node.js"
import * as State from "./State.js"
import { CallJournal } from "./services/CallJournal.js"
import { EventSink } from "./services/EventSink.js"
import {
  type Checkpoint,
  type Interrupt,
  type RunRecord,
  type RunStatus,
  RunStore,
  terminalStatuses,
  type Usage
} from "./services/RunStore.js"

/** Options of a new run. */
export type StartOptions = Admission.StartOptions
/** Errors of accepting a run's input. */
export type StartError = Admission.StartError
/** Errors of taking up a stored run with a graph. */
export type LoadError = Load.LoadError
/** Which open interrupt a response answers (default: all of them). */
export type ResponseTarget = Control.ResponseTarget

/** How a worker hands a claimed run to the runner. */
export interface AdoptOptions {
  /** Checked before every step: fails once the claim's lease has run out, so no node starts after it. */
  readonly guard?: Effect.Effect<void, StaleClaimError>
}

/** Where a run stands: its status, its latest committed state and what it waits on. */
export interface RunResult<S> {
  readonly runId: string
  readonly status: RunStatus
  readonly state: S
  readonly step: number
  readonly usage: Usage
  readonly error: { readonly tag: string; readonly message: string } | null
  readonly interrupts: ReadonlyArray<Interrupt>
  /** Why this process's actor for the run stopped before the run settled (a lost claim, a store failure), if it did. */
  readonly stopped?: string
  /** Set when the actor stopped because the run's claim moved to another owner. */
  readonly claimLost?: true
}

/** A started run. */
export interface RunHandle<S> {
  readonly runId: string
  /** The run's committed events from the start, then live, ending with its terminal event. */
  readonly events: Stream.Stream<RunEvent, RunNotFoundError | EventLogCorruptionError>
  /** Waits until the run waits for a human or ends, and returns where it stands. */
  readonly result: Effect.Effect<RunResult<S>, RunNotFoundError | EventLogCorruptionError>
}

/** The runner service. */
export class Runner extends Context.Tag("fibergraph/Runner")<Runner, {
  /** Accepts a run (idempotent by `runId`) and starts it in this process. */
  readonly start: <S, E, R>(
    graph: CompiledGraph<any, E, R> & { readonly state: { readonly schema: { readonly Type: S } } },
    input: Partial<S>,
    options?: StartOptions
  ) => Effect.Effect<RunHandle<S>, StartError, R>
  /**
   * Continues a thread: starts a new run of `graph` from a completed run's final state with `input`
   * merged in through the state's reducers (a new user message appended to a conversation), linked
   * to the run it continues (`parentRunId`). The tenant is kept unless `options` names another.
   */
  readonly continue: <S, E, R>(
    graph: CompiledGraph<any, E, R> & { readonly state: { readonly schema: { readonly Type: S } } },
    runId: string,
    input: Partial<S>,
    options?: StartOptions
  ) => Effect.Effect<RunHandle<S>, StartError | LoadError | RunStatusError, R>
  /** A thread's runs, oldest first, ending with `runId`: each run and the runs it continued. */
  readonly thread: (runId: string) => Effect.Effect<ReadonlyArray<RunRecord>, RunNotFoundError>
  /** Takes up a stored run that is not running here (after a crash or restart) and continues it. */
  readonly resume: <S, E, R>(
    graph: CompiledGraph<any, E, R> & { readonly state: { readonly schema: { readonly Type: S } } },
    runId: string
  ) => Effect.Effect<RunHandle<S>, LoadError, R>
  /** Validates a new run's input and builds its first row, event and checkpoint, without storing them (for a queue's submit). */
  readonly prepare: <S>(
    graph: CompiledGraph & { readonly state: { readonly schema: { readonly Type: S } } },
    input: Partial<S>,
    options?: StartOptions
  ) => Effect.Effect<
    { readonly run: RunRecord; readonly events: ReadonlyArray<RunEvent>; readonly checkpoint: Checkpoint },
    StartError
  >
  /**
   * Continues a run whose claim this process already holds (a worker's claim bumped its epoch):
   * loads it (migrating its checkpoint if the graph declares how) and starts its actor.
   */
  readonly adopt: <S, E, R>(
    graph: CompiledGraph<any, E, R> & { readonly state: { readonly schema: { readonly Type: S } } },
    run: RunRecord,
    options?: AdoptOptions
  ) => Effect.Effect<RunHandle<S>, LoadError | StaleClaimError, R>
  /**
   * Answers a waiting run and commits the answer without running it here (a worker continues it);
   * returns the run's status after the answer: `running`, still `waiting` on others, or `cancelled`.
   */
  readonly answer: <E, R>(
    graph: CompiledGraph<any, E, R>,
    runId: string,
    response: HumanResponse,
    target?: ResponseTarget
  ) => Effect.Effect<RunStatus, LoadError | RunStatusError | InputValidationError | StaleClaimError, R>
  /** Stops a run's actor in this process without writing anything (a lost lease, a shutdown). */
  readonly stop: (runId: string) => Effect.Effect<void>
  /** Answers a waiting run (approve, reject, edit or timeout) and continues it. */
  readonly respond: <E, R>(
    graph: CompiledGraph<any, E, R>,
    runId: string,
    response: HumanResponse,
    target?: ResponseTarget
  ) => Effect.Effect<void, LoadError | RunStatusError | InputValidationError | StaleClaimError, R>
  /** Cancels a run: in-flight nodes are interrupted and the run ends `cancelled`. */
  readonly cancel: (
    runId: string,
    reason?: string
  ) => Effect.Effect<void, RunNotFoundError | RunStatusError | StaleClaimError>
  /** A run's committed events after `afterSeq` (default: all), then its live ones, up to its terminal event. */
  readonly events: (runId: string, afterSeq?: number) => Stream.Stream<RunEvent, RunNotFoundError | EventLogCorruptionError>
  /**
   * Like `events`, with model output interleaved as it is generated (`ModelDelta`s of the run's
   * agents and its subgraphs' agents): live only, never stored, from the process running the run.
   */
  readonly watch: (runId: string, afterSeq?: number) => Stream.Stream<LiveEvent, RunNotFoundError | EventLogCorruptionError>
  /**
   * Waits until the run waits or ends, and returns where it stands; with `afterSeq`, a run that is
   * already waiting counts only once it has committed past that sequence (a due wait being fired).
   */
  readonly result: <S>(
    graph: CompiledGraph & { readonly state: { readonly schema: { readonly Type: S } } },
    runId: string,
    options?: { readonly afterSeq?: number }
  ) => Effect.Effect<RunResult<S>, RunNotFoundError | EventLogCorruptionError>
  /** The ids of the runs whose actors live in this process. */
  readonly active: Effect.Effect<ReadonlyArray<string>>
}>() {}

/** Defaults of the runner. */
export type Options = Admission.Defaults

/** Attempts of a control command that lost a race against another writer before it gives up. */
const controlAttempts = 4

/** Runs a control command again when another writer's commit won the race (the retry sees the new state). */
const retryingRaces = <A, E, R>(self: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> =>
  Effect.retry(self, { times: controlAttempts - 1, while: (e) => e instanceof StaleClaimError })

/** Builds a runner whose actors live as long as the surrounding scope. */
export const make = (options: Options = {}) =>
  Effect.gen(function*() {
    const store = yield* RunStore
    const breakers = yield* CircuitBreakers
    const events = yield* RunEvents.make(store, yield* Effect.serviceOption(EventSink))
    const actors = yield* Actor.makeActors
    const journal = Option.getOrUndefined(yield* Effect.serviceOption(CallJournal))
    const deps: Actor.WriterDeps = { store, breakers, events, journal }

    // --- Results ---

    const stream = (runId: string, afterSeq = 0) => events.stream(runId, afterSeq, () => actors.live.has(runId))

    const stoppedOf = (runId: string): { readonly stopped?: string; readonly claimLost?: true } => {
      const reason = actors.stopped.get(runId)
      if (reason === undefined) return {}
      return reason.claimLost ? { stopped: reason.message, claimLost: true } : { stopped: reason.message }
    }

    const resultFrom = <S>({ pos, run }: { readonly run: RunRecord; readonly pos: Position | undefined }): RunResult<S> => ({
      runId: run.runId,
      status: run.status,
      state: (pos?.state ?? {}) as S,
      step: run.step,
      usage: run.usage,
      error: run.error,
      interrupts: run.status === "waiting" ? (pos?.interrupts ?? []) : []
    })

    const stored = <S>(graph: CompiledGraph, runId: string) =>
      Effect.gen(function*() {
        const run = yield* store.get(runId)
        const checkpoint = yield* store.latestCheckpoint(runId)
        const pos = Option.isNone(checkpoint) ? undefined : yield* fromCheckpoint(graph, checkpoint.value)
        return { ...resultFrom<S>({ run, pos }), ...stoppedOf(runId) }
      })

    const settled = (status: RunStatus) => status === "waiting" || terminalStatuses.has(status)

    const result = <S>(graph: CompiledGraph, runId: string, opts: { readonly afterSeq?: number } = {}) =>
      Effect.gen(function*() {
        const afterSeq = opts.afterSeq ?? -1
        const actor = actors.live.get(runId)
        const done = (c: Cursor) => settled(c.run.status) && c.run.lastSeq > afterSeq
        if (actor === undefined) return yield* stored<S>(graph, runId)
        if (done(actor.writer.cursor)) return resultFrom<S>(actor.writer.cursor)
        const waiter = Deferred.unsafeMake<Cursor>(FiberId.none)
        actor.waiters.push(waiter)
        const cursor = yield* Deferred.await(waiter)
        return done(cursor) ? resultFrom<S>(cursor) : yield* stored<S>(graph, runId)
      })

    const handle = <S>(graph: CompiledGraph, runId: string): RunHandle<S> => ({
      runId,
      get events() {
        return stream(runId)
      },
      result: result<S>(graph, runId)
    })

    // --- Taking up runs ---

    /** Loads a run we own (its epoch is ours), committing a checkpoint migration if one applies. */
    const takeUp = (graph: CompiledGraph, run: RunRecord, guard?: Effect.Effect<void, StaleClaimError>) =>
      Effect.gen(function*() {
        const loaded = yield* Load.load(store, graph, run, true)
        const owned = Actor.ownedOf(deps, graph, loaded.run, loaded.pos, yield* Effect.clock, guard)
        if (loaded.migratedFrom !== undefined) {
          const stamp = stampFor(owned.writer, loaded.run.step)
          yield* commit(owned.writer, {
            status: loaded.run.status,
            events: [stamp({
              _tag: "RunMigrated",
              fromVersion: loaded.migratedFrom,
              toVersion: graph.version,
              graphHash: graph.hash
            })],
            pos: loaded.pos,
            waitUntil: loaded.run.waitUntil,
            graph: { version: graph.version, hash: graph.hash }
          })
        }
        return owned
      })

    const start = <S, E, R>(graph: CompiledGraph<any, E, R>, input: Partial<S>, opts: StartOptions = {}) =>
      Effect.gen(function*() {
        const admitted = yield* Admission.prepare(graph, input as Record<string, unknown>, opts, options)
        const created = yield* store.create({ ...admitted.run, claimEpoch: 1 }, admitted.events, admitted.checkpoint)
        if (created.created) {
          yield* events.publish(admitted.run.runId)(admitted.events)
          const owned = Actor.ownedOf(deps, graph, created.run, admitted.pos, yield* Effect.clock)
          yield* Actor.spawn<R>(actors, events, graph, owned)
        }
        return handle<S>(graph, admitted.run.runId)
      })

    // --- Threads ---

    const continueRun = <S, E, R>(graph: CompiledGraph<any, E, R>, runId: string, input: Partial<S>, opts: StartOptions = {}) =>
      Effect.gen(function*() {
        const run = yield* store.get(runId)
        if (run.status !== "completed") {
          return yield* new RunStatusError({ runId, status: run.status, expected: "completed (to continue its thread)" })
        }
        if (run.graphId !== graph.id) {
          return yield* new GraphMismatchError({
            runId,
            graphId: run.graphId,
            storedVersion: run.graphVersion,
            storedHash: run.graphHash,
            version: graph.version,
            hash: graph.hash
          })
        }
        const previous = yield* stored<S>(graph, runId)
        const state = yield* Effect.try({
          try: () => State.reduce(graph.state, previous.state as Record<string, unknown>, input as Record<string, unknown>),
          catch: (error) =>
            new InputValidationError({
              graphId: graph.id,
              detail: `the input does not merge into run ${runId}'s final state: ${error instanceof Error ? error.message : String(error)}`
            })
        })
        return yield* start<S, E, R>(graph, state as Partial<S>, { tenant: run.tenant, ...opts, parentRunId: runId })
      })

    const thread = (runId: string) =>
      Effect.gen(function*() {
        const runs: Array<RunRecord> = []
        const seen = new Set<string>()
        let next: string | null = runId
        while (next !== null && !seen.has(next)) {
          seen.add(next)
          const run: RunRecord = runs.length === 0 ? yield* store.get(next) : yield* Effect.orDie(store.get(next))
          runs.push(run)
          next = run.parentRunId
        }
        return runs.reverse()
      })

    const resume = <S, E, R>(graph: CompiledGraph<any, E, R>, runId: string) =>
      Effect.gen(function*() {
        const run = yield* store.get(runId)
        if (actors.live.has(runId) || terminalStatuses.has(run.status)) {
          yield* Load.checkGraph(graph, run)
          return handle<S>(graph, runId)
        }
        yield* Load.load(store, graph, run, false)
        const owned = yield* takeUp(graph, yield* store.acquire(runId)).pipe(
          Effect.map(Option.some),
          Effect.catchIf(
            (e): e is StaleClaimError | RunStatusError => e instanceof StaleClaimError || e instanceof RunStatusError,
            () => Effect.succeed(Option.none())
          )
        )
        if (Option.isSome(owned)) yield* Actor.spawn<R>(actors, events, graph, owned.value)
        return handle<S>(graph, runId)
      })

    const adopt = <S, E, R>(graph: CompiledGraph<any, E, R>, run: RunRecord, opts: AdoptOptions = {}) =>
      Effect.gen(function*() {
        if (actors.live.has(run.runId)) yield* FiberMap.remove(actors.fibers, run.runId)
        const owned = yield* takeUp(graph, run, opts.guard).pipe(
          Effect.catchIf((e): e is RunStatusError => e instanceof RunStatusError, Effect.die)
        )
        if (!terminalStatuses.has(owned.writer.cursor.run.status)) yield* Actor.spawn<R>(actors, events, graph, owned)
        return handle<S>(graph, run.runId)
      })

    // --- Control ---

    const notWaiting = (run: RunRecord) => new RunStatusError({ runId: run.runId, status: run.status, expected: "waiting" })

    const askRespond = (runId: string, response: HumanResponse, target: ResponseTarget | undefined) =>
      Actor.askRespond(actors, runId, response, target)

    const answer = <E, R>(graph: CompiledGraph<any, E, R>, runId: string, response: HumanResponse, target?: ResponseTarget) =>
      retryingRaces(Effect.gen(function*() {
        const local = yield* askRespond(runId, response, target)
        if (Option.isSome(local)) return local.value as RunStatus
        const run = yield* store.get(runId)
        if (run.status !== "waiting") return yield* Effect.fail(notWaiting(run))
        yield* Load.load(store, graph, run, false)
        const acquired = yield* store.acquire(runId)
        if (acquired.status !== "waiting") return yield* Effect.fail(notWaiting(acquired))
        const owned = yield* takeUp(graph, acquired)
        return (yield* Control.answer(owned.writer, graph, response, target)) as RunStatus
      }))

    const respond = <E, R>(graph: CompiledGraph<any, E, R>, runId: string, response: HumanResponse, target?: ResponseTarget) =>
      retryingRaces(Effect.gen(function*() {
        const local = yield* askRespond(runId, response, target)
        if (Option.isSome(local)) return
        const run = yield* store.get(runId)
        if (run.status !== "waiting") return yield* Effect.fail(notWaiting(run))
        yield* resume(graph, runId)
        const resumed = yield* askRespond(runId, response, target)
        if (Option.isSome(resumed)) return
        return yield* Effect.fail(notWaiting(yield* store.get(runId)))
      }))

    const cancel = (runId: string, reason = "cancelled") =>
      retryingRaces(Effect.gen(function*() {
        const local = yield* Actor.askCancel(actors, runId, reason)
        if (Option.isSome(local)) return
        const ended = (run: RunRecord) => new RunStatusError({ runId, status: run.status, expected: "not yet ended" })
        const run = yield* store.get(runId)
        if (terminalStatuses.has(run.status)) return yield* Effect.fail(ended(run))
        const acquired = yield* store.acquire(runId)
        if (terminalStatuses.has(acquired.status)) return yield* Effect.fail(ended(acquired))
        yield* Control.cancel(controlWriter(store, acquired, yield* Effect.clock, events.publish(runId)), reason)
      }))

    return Runner.of({
      start: start as Runner["Type"]["start"],
      resume: resume as Runner["Type"]["resume"],
      continue: continueRun as Runner["Type"]["continue"],
      thread,
      adopt: adopt as Runner["Type"]["adopt"],
      prepare: (graph, input, opts) =>
        Effect.map(
          Admission.prepare(graph, input as Record<string, unknown>, opts, options),
          ({ checkpoint, events, run }) => ({ run, events, checkpoint })
        ),
      answer,
      stop: (runId) => FiberMap.remove(actors.fibers, runId),
      respond,
      cancel,
      events: stream,
      watch: (runId, afterSeq = 0) => events.watch(runId, afterSeq, () => actors.live.has(runId)),
      result: result as Runner["Type"]["result"],
      active: Effect.sync(() => [...actors.live.keys()])
    })
  })

/** The runner as a layer; needs a `RunStore` and the process's `CircuitBreakers` (and uses an `EventSink` if present). */
export const layer = (options: Options = {}): Layer.Layer<Runner, never, RunStore | CircuitBreakers> =>
  Layer.scoped(Runner, make(options))
