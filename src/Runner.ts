/**
 * The runner: every run is an actor, a fiber supervised in a `FiberMap` keyed by run id, with a
 * mailbox (cancel, human response, wait timeout) and a stream of committed events.
 */
import {
  Cause,
  Clock,
  Context,
  Deferred,
  Duration,
  Effect,
  Exit,
  Fiber,
  FiberId,
  FiberMap,
  Layer,
  Option,
  ParseResult,
  PubSub,
  Queue,
  Random,
  Stream
} from "effect"
import { CircuitBreakers } from "./CircuitBreaker.js"
import {
  CheckpointMigrationError,
  DeadlineExceededError,
  EventLogCorruptionError,
  formatParseError,
  GraphMismatchError,
  InputValidationError,
  type RoutingError,
  RunNotFoundError,
  RunStatusError,
  StaleClaimError,
  type StateValidationError
} from "./Errors.js"
import { isTerminal, type RunEvent } from "./Events.js"
import type { CompiledGraph } from "./Graph.js"
import { commit, type Deps, drive, type Settled, stampFor } from "./internal/Drive.js"
import { decodeUpdate, encodeState, fromCheckpoint, toCheckpoint } from "./internal/Codec.js"
import { type Env, type Position, SpendTracker, startFrontier } from "./internal/Step.js"
import type { HumanResponse } from "./Node.js"
import { EventSink } from "./services/EventSink.js"
import {
  type Checkpoint,
  type Interrupt,
  type RunConfig,
  type RunRecord,
  type RunStatus,
  RunStore,
  terminalStatuses,
  type Usage
} from "./services/RunStore.js"
import * as State from "./State.js"

/** Options of a new run. */
export interface StartOptions {
  /** A caller-chosen id: starting the same id twice returns the existing run. */
  readonly runId?: string
  readonly tenant?: string
  readonly maxSteps?: number
  /** Fail the run as `timed_out` this long after it starts (stored as an instant). */
  readonly timeout?: Duration.DurationInput
  /** Fail the run as `timed_out` at this instant (epoch ms or a Date). */
  readonly deadline?: number | Date
  readonly budget?: { readonly tokens?: number; readonly usd?: number }
  readonly nodeBudgets?: Readonly<Record<string, { readonly tokens?: number; readonly usd?: number }>>
  readonly interruptBefore?: ReadonlyArray<string>
  readonly interruptAfter?: ReadonlyArray<string>
  /** Node instances that may run at once within a step (default 16). */
  readonly concurrency?: number
  readonly parentRunId?: string
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
  /** Why this process's actor for the run stopped before the run settled (a store failure), if it did. */
  readonly stopped?: string
}

/** A started run. */
export interface RunHandle<S> {
  readonly runId: string
  /** The run's committed events from the start, then live, ending with its terminal event. */
  readonly events: Stream.Stream<RunEvent, RunNotFoundError | EventLogCorruptionError>
  /** Waits until the run waits for a human or ends, and returns where it stands. */
  readonly result: Effect.Effect<RunResult<S>, RunNotFoundError | EventLogCorruptionError>
}

/** Errors of accepting a run's input. */
export type StartError = InputValidationError | StateValidationError | RoutingError

/** Errors of taking up a stored run with a graph. */
export type LoadError = RunNotFoundError | GraphMismatchError | EventLogCorruptionError | CheckpointMigrationError

/** Which open interrupt a response answers (default: all of them). */
export interface ResponseTarget {
  readonly node?: string
  readonly index?: number
}

/** The runner service. */
export class Runner extends Context.Tag("fibergraph/Runner")<Runner, {
  /** Accepts a run (idempotent by `runId`) and starts it in this process. */
  readonly start: <S, E, R>(
    graph: CompiledGraph<any, E, R> & { readonly state: { readonly schema: { readonly Type: S } } },
    input: Partial<S>,
    options?: StartOptions
  ) => Effect.Effect<RunHandle<S>, StartError, R>
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
    run: RunRecord
  ) => Effect.Effect<RunHandle<S>, LoadError, R>
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
export interface Options {
  readonly maxSteps?: number
  readonly concurrency?: number
}

type Message =
  | { readonly _tag: "Done"; readonly exit: Exit.Exit<Settled, unknown> }
  | {
    readonly _tag: "Respond"
    readonly response: HumanResponse
    readonly target: ResponseTarget | undefined
    readonly reply: Deferred.Deferred<void, RunStatusError | InputValidationError | StaleClaimError>
  }
  | { readonly _tag: "Cancel"; readonly reason: string; readonly reply: Deferred.Deferred<void, RunStatusError | StaleClaimError> }
  | { readonly _tag: "WaitTimeout" }

interface Snapshot {
  readonly run: RunRecord
  readonly pos: Position
}

interface Actor {
  readonly mailbox: Queue.Queue<Message>
  /** The run and its position as of the actor's latest commit. */
  readonly latest: Snapshot
  /** Callers of `result` waiting for the run to settle (wait or end) or the actor to stop. */
  readonly waiters: Array<Deferred.Deferred<Snapshot>>
}

const Gone = { _tag: "ActorGone" } as const
type Signal = RunEvent | typeof Gone

const emptyUsage: Usage = { total: { tokens: 0, usd: 0 }, byNode: {} }

const budgetOf = (b: { readonly tokens?: number; readonly usd?: number } | undefined) => ({
  tokens: b?.tokens ?? null,
  usd: b?.usd ?? null
})

/** A commit whose only failure a caller can act on is a lost claim; anything else is a defect. */
const fenced = (...args: Parameters<typeof commit>) =>
  commit(...args).pipe(
    Effect.catchIf((e): e is Exclude<typeof e, StaleClaimError> => !(e instanceof StaleClaimError), Effect.die)
  )

/**
 * Applies a human response to a waiting run and commits it: the targeted open interrupts (all, by
 * default) receive it, an edit's updates are decoded and merged first, and a rejected breakpoint
 * cancels the run. Returns the run's status after the commit.
 */
const answerRun = (
  deps: Deps,
  graph: CompiledGraph,
  run: RunRecord,
  pos: Position,
  response: HumanResponse,
  target: ResponseTarget | undefined
): Effect.Effect<"running" | "waiting" | "cancelled", RunStatusError | InputValidationError | StaleClaimError> =>
  Effect.gen(function*() {
    const runId = run.runId
    if (run.status !== "waiting") {
      return yield* Effect.fail(new RunStatusError({ runId, status: run.status, expected: "waiting" }))
    }
    const awaiting = (i: Interrupt) => !i.answered
    const targeted = (i: Interrupt) =>
      awaiting(i) &&
      (target?.node === undefined || target.node === i.node) &&
      (target?.index === undefined || target.index === i.index)
    const interrupts = pos.interrupts
    if (!interrupts.some(targeted)) {
      return yield* Effect.fail(
        new RunStatusError({ runId, status: run.status, expected: `waiting on ${target?.node ?? "a node"}` })
      )
    }
    const stamp = stampFor(deps.env, pos.step)
    if (response._tag === "reject" && interrupts.some((i) => targeted(i) && i.kind !== "node")) {
      yield* fenced(deps, run, {
        status: "cancelled",
        events: [stamp({ _tag: "RunCancelled", reason: "rejected at breakpoint" })],
        pos: undefined
      })
      return "cancelled" as const
    }
    let state = pos.state
    if (response._tag === "edit") {
      const update = yield* decodeUpdate(graph, response.update)
      state = State.reduce(graph.state, state, update)
    }
    const answered: Position = {
      ...pos,
      state,
      interrupts: interrupts.flatMap((i) =>
        !targeted(i) ? [i] : i.kind === "after" ? [] : [{ ...i, resumes: [...i.resumes, response], answered: true }]
      )
    }
    const stillWaiting = interrupts.some((i) => awaiting(i) && !targeted(i))
    yield* fenced(deps, run, {
      status: stillWaiting ? "waiting" : "running",
      events: [stamp({ _tag: "RunResumed", response: response._tag })],
      pos: answered,
      waitUntil: stillWaiting ? run.waitUntil : null
    })
    return stillWaiting ? "waiting" as const : "running" as const
  })

/** Builds a runner whose actors live as long as the surrounding scope. */
export const make = (options: Options = {}) =>
  Effect.gen(function*() {
    const store = yield* RunStore
    const breakers = yield* CircuitBreakers
    const sink = yield* Effect.serviceOption(EventSink)
    const fibers = yield* FiberMap.make<string>()
    const actors = new Map<string, Actor>()
    const hubs = new Map<string, PubSub.PubSub<Signal>>()
    /** Why an actor stopped abnormally, for `result` (kept until the run is spawned again). */
    const stopped = new Map<string, string>()

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

    /** Hands committed events to live subscribers and, in order, to the sink (written by a background fiber). */
    const publish = (runId: string) => (events: ReadonlyArray<RunEvent>): Effect.Effect<void> =>
      Effect.suspend(() => {
        const hub = hubs.get(runId)
        const live = hub === undefined ? Effect.void : PubSub.publishAll(hub, events)
        if (sinkQueue === undefined) return live
        sinkState.pending++
        return Effect.zipRight(live, Queue.offer(sinkQueue, events))
      })

    const hubFor = (runId: string) =>
      Effect.suspend(() => {
        const hub = hubs.get(runId)
        return hub !== undefined
          ? Effect.succeed(hub)
          : Effect.tap(PubSub.unbounded<Signal>(), (created) => Effect.sync(() => hubs.set(runId, created)))
      })

    const checkGraph = (graph: CompiledGraph, run: RunRecord) =>
      run.graphId === graph.id && run.graphHash === graph.hash
        ? Effect.void
        : Effect.fail(
          new GraphMismatchError({
            runId: run.runId,
            graphId: run.graphId,
            storedVersion: run.graphVersion,
            storedHash: run.graphHash,
            version: graph.version,
            hash: graph.hash
          })
        )

    const envOf = (graph: CompiledGraph, run: RunRecord, clock: Clock.Clock): Env => ({
      graph,
      runId: run.runId,
      config: run.config,
      clock,
      breakers,
      spend: new SpendTracker(run.runId, run.usage, run.config, (node) => {
        const fromRun = run.config.nodeBudgets[node]
        if (fromRun !== undefined) return fromRun
        const spec = graph.nodes.get(node)?.budget
        return spec === undefined ? undefined : budgetOf(spec)
      }),
      prefix: "",
      scope: "",
      resumeSource: undefined
    })

    /** Spawns the actor of an owned run (`run.claimEpoch` is ours). */
    const spawn = <R>(graph: CompiledGraph, owned: RunRecord, startPos: Position) =>
      Effect.gen(function*() {
        const context = yield* Effect.context<R>()
        const clock = yield* Effect.clock
        const mailbox = yield* Queue.unbounded<Message>()
        const runId = owned.runId
        const env = envOf(graph, owned, clock)
        const latest = { run: owned, pos: startPos }
        const deps: Deps = {
          env,
          store,
          epoch: owned.claimEpoch,
          publish: publish(runId),
          onCommit: (run, pos) => {
            latest.run = run
            if (pos !== undefined) latest.pos = pos
          }
        }
        const actor: Actor = { mailbox, latest, waiters: [] }
        const wake = Effect.suspend(() => {
          const waiters = actor.waiters.splice(0)
          const snapshot = { run: latest.run, pos: latest.pos }
          return Effect.forEach(waiters, (w) => Deferred.succeed(w, snapshot), { discard: true })
        })
        actors.set(runId, actor)
        stopped.delete(runId)

        const body = Effect.gen(function*() {
          let loop: Fiber.RuntimeFiber<void> | undefined
          let timer: Fiber.RuntimeFiber<void> | undefined
          const startLoop = () =>
            Effect.gen(function*() {
              loop = yield* Effect.fork(
                drive(deps, latest.run, latest.pos).pipe(
                  Effect.exit,
                  Effect.flatMap((exit) => Queue.offer(mailbox, { _tag: "Done", exit })),
                  Effect.asVoid
                )
              )
            })
          const armTimer = Effect.gen(function*() {
            const { waitUntil } = latest.run
            const { deadline } = latest.run.config
            const until = waitUntil === null ? deadline : deadline === null ? waitUntil : Math.min(waitUntil, deadline)
            if (until === null) return
            if (timer !== undefined) yield* Fiber.interrupt(timer)
            timer = yield* Effect.fork(
              Effect.flatMap(Clock.currentTimeMillis, (now) =>
                Effect.zipRight(Effect.sleep(Math.max(0, until - now)), Queue.offer(mailbox, { _tag: "WaitTimeout" }))).pipe(
                Effect.asVoid
              )
            )
          })
          const accept = (response: HumanResponse, target: ResponseTarget | undefined) =>
            Effect.gen(function*() {
              const outcome = yield* answerRun(deps, graph, latest.run, latest.pos, response, target)
              if (outcome === "running") {
                if (timer !== undefined) yield* Fiber.interrupt(timer)
                timer = undefined
                yield* startLoop()
              }
              return outcome === "cancelled" ? "ended" as const : "continued" as const
            })

          if (latest.run.status === "pending" || latest.run.status === "running") yield* startLoop()
          else if (latest.run.status === "waiting") yield* armTimer
          else return

          while (true) {
            const message = yield* Queue.take(mailbox)
            switch (message._tag) {
              case "Done": {
                loop = undefined
                if (Exit.isFailure(message.exit)) {
                  const error = Cause.failureOption(message.exit.cause)
                  if (Option.isSome(error) && error.value instanceof StaleClaimError) {
                    yield* Effect.logWarning(`run ${runId}: claim lost, stopping`, error.value.message)
                    return
                  }
                  return yield* Effect.failCause(message.exit.cause)
                }
                if (terminalStatuses.has(latest.run.status)) return
                yield* wake
                yield* armTimer
                break
              }
              case "WaitTimeout": {
                const now = yield* Clock.currentTimeMillis
                if (latest.run.status !== "waiting") break
                const deadline = latest.run.config.deadline
                if (deadline !== null && deadline <= now) {
                  const error = new DeadlineExceededError({ runId, deadline })
                  const stamp = stampFor(env, latest.pos.step)
                  yield* Effect.ignore(fenced(deps, latest.run, {
                    status: "timed_out",
                    events: [stamp({ _tag: "RunTimedOut", deadline })],
                    pos: undefined,
                    error: { tag: error._tag, message: error.message, error }
                  }))
                  return
                }
                const until = latest.run.waitUntil
                if (until === null || until > now) break
                const outcome = yield* Effect.either(accept({ _tag: "timeout" }, undefined))
                if (outcome._tag === "Left") {
                  if (outcome.left instanceof StaleClaimError) return
                  yield* Effect.logWarning(`run ${runId}: wait timeout not applied`, outcome.left.message)
                } else if (outcome.right === "ended") return
                break
              }
              case "Respond": {
                const outcome = yield* Effect.either(accept(message.response, message.target))
                if (outcome._tag === "Left") {
                  yield* Deferred.fail(message.reply, outcome.left)
                  if (outcome.left instanceof StaleClaimError) return
                  break
                }
                yield* Deferred.succeed(message.reply, undefined)
                if (outcome.right === "ended") return
                break
              }
              case "Cancel": {
                if (loop !== undefined) yield* Fiber.interrupt(loop)
                loop = undefined
                if (terminalStatuses.has(latest.run.status)) {
                  yield* Deferred.fail(
                    message.reply,
                    new RunStatusError({ runId, status: latest.run.status, expected: "not yet ended" })
                  )
                  return
                }
                const stamp = stampFor(env, latest.pos.step)
                const result = yield* Effect.either(fenced(deps, latest.run, {
                  status: "cancelled",
                  events: [stamp({ _tag: "RunCancelled", reason: message.reason })],
                  pos: undefined
                }))
                if (result._tag === "Left") {
                  yield* Deferred.fail(message.reply, result.left)
                } else {
                  yield* Deferred.succeed(message.reply, undefined)
                }
                return
              }
            }
          }
        }).pipe(
          Effect.ensuring(Effect.suspend(() => {
            actors.delete(runId)
            const hub = hubs.get(runId)
            hubs.delete(runId)
            return Effect.all([
              hub === undefined ? Effect.void : PubSub.publish(hub, Gone),
              Queue.shutdown(mailbox),
              wake
            ], { discard: true })
          })),
          Effect.catchAllCause((cause) => {
            if (Cause.isInterruptedOnly(cause)) return Effect.void
            const squashed = Cause.squash(cause)
            stopped.set(runId, squashed instanceof Error ? squashed.message : String(squashed))
            return Effect.logError(`run ${runId}: actor failed`, cause)
          }),
          Effect.provide(context)
        ) as Effect.Effect<void>
        yield* FiberMap.run(fibers, runId, body)
      })

    const events = (runId: string, afterSeq = 0): Stream.Stream<RunEvent, RunNotFoundError | EventLogCorruptionError> =>
      Stream.unwrapScoped(Effect.gen(function*() {
        const local = actors.has(runId)
        const hub = local ? yield* hubFor(runId) : undefined
        const live = hub === undefined ? undefined : yield* PubSub.subscribe(hub)
        const history = yield* store.events(runId, afterSeq)
        const last = history.length === 0 ? afterSeq : history[history.length - 1]!.seq
        const past = Stream.fromIterable(history)
        if (live === undefined || history.some(isTerminal)) return past
        const future = Stream.fromQueue(live).pipe(
          Stream.takeWhile((s): s is RunEvent => s._tag !== "ActorGone"),
          Stream.filter((e) => e.seq > last)
        )
        return Stream.concat(past, future)
      })).pipe(Stream.takeUntil(isTerminal))

    const resultFrom = <S>({ pos, run }: { readonly run: RunRecord; readonly pos: Position | undefined }): RunResult<S> => ({
      runId: run.runId,
      status: run.status,
      state: (pos?.state ?? {}) as S,
      step: run.step,
      usage: run.usage,
      error: run.error,
      interrupts: run.status === "waiting" ? (pos?.interrupts ?? []) : []
    })

    const resultOf = <S>(graph: CompiledGraph, runId: string) =>
      Effect.gen(function*() {
        const run = yield* store.get(runId)
        const checkpoint = yield* store.latestCheckpoint(runId)
        const pos = Option.isNone(checkpoint) ? undefined : yield* fromCheckpoint(graph, checkpoint.value)
        return resultFrom<S>({ run, pos })
      })

    const settled = (status: RunStatus) => status === "waiting" || terminalStatuses.has(status)

    const result = <S>(graph: CompiledGraph, runId: string, options: { readonly afterSeq?: number } = {}) =>
      Effect.gen(function*() {
        const afterSeq = options.afterSeq ?? -1
        const actor = actors.get(runId)
        const done = (s: Snapshot) => settled(s.run.status) && s.run.lastSeq > afterSeq
        if (actor === undefined) return { ...(yield* resultOf<S>(graph, runId)), ...stoppedOf(runId) }
        if (done(actor.latest)) return resultFrom<S>(actor.latest)
        const waiter = Deferred.unsafeMake<Snapshot>(FiberId.none)
        actor.waiters.push(waiter)
        const snapshot = yield* Deferred.await(waiter)
        return done(snapshot) ? resultFrom<S>(snapshot) : { ...(yield* resultOf<S>(graph, runId)), ...stoppedOf(runId) }
      })

    const stoppedOf = (runId: string): { readonly stopped?: string } => {
      const reason = stopped.get(runId)
      return reason === undefined ? {} : { stopped: reason }
    }

    const handle = <S>(graph: CompiledGraph, runId: string): RunHandle<S> => ({
      runId,
      get events() {
        return events(runId)
      },
      result: result<S>(graph, runId)
    })

    const newRunId = Effect.gen(function*() {
      const now = yield* Clock.currentTimeMillis
      const a = yield* Random.nextIntBetween(0, 0x7fffffff)
      const b = yield* Random.nextIntBetween(0, 0x7fffffff)
      return `run_${now.toString(36).padStart(9, "0")}${a.toString(36).padStart(6, "0")}${b.toString(36).padStart(6, "0")}`
    })

    /** Validates a new run's input and builds its first row, event and checkpoint, without storing them. */
    const prepare = (graph: CompiledGraph, input: Record<string, unknown>, opts: StartOptions = {}) =>
      Effect.gen(function*() {
        const now = yield* Clock.currentTimeMillis
        const runId = opts.runId ?? (yield* newRunId)
        for (const key of Object.keys(input)) {
          const validate = graph.state.validators[key]
          if (validate === undefined) {
            return yield* Effect.fail(
              new InputValidationError({ graphId: graph.id, detail: `unknown state key "${key}"; the state has [${graph.state.keys.join(", ")}]` })
            )
          }
          const problem = input[key] === undefined ? undefined : validate(input[key])
          if (problem !== undefined) {
            return yield* Effect.fail(new InputValidationError({ graphId: graph.id, detail: `key "${key}": ${problem}` }))
          }
        }
        const state = State.initial(graph.state, input)
        const frontier = startFrontier({ graph, prefix: "" }, state)
        if (!Array.isArray(frontier)) return yield* Effect.fail(frontier as StateValidationError | RoutingError)
        const deadline = opts.deadline !== undefined
          ? (typeof opts.deadline === "number" ? opts.deadline : opts.deadline.getTime())
          : opts.timeout !== undefined
          ? now + Duration.toMillis(opts.timeout)
          : null
        const config: RunConfig = {
          maxSteps: opts.maxSteps ?? options.maxSteps ?? 1000,
          deadline,
          budget: budgetOf(opts.budget),
          nodeBudgets: Object.fromEntries(Object.entries(opts.nodeBudgets ?? {}).map(([k, v]) => [k, budgetOf(v)])),
          interruptBefore: opts.interruptBefore ?? [],
          interruptAfter: opts.interruptAfter ?? [],
          concurrency: opts.concurrency ?? options.concurrency ?? 16
        }
        const run: RunRecord = {
          runId,
          tenant: opts.tenant ?? "default",
          graphId: graph.id,
          graphVersion: graph.version,
          graphHash: graph.hash,
          status: "pending",
          step: 0,
          claimEpoch: 0,
          lastSeq: 1,
          config,
          usage: emptyUsage,
          waitUntil: null,
          parentRunId: opts.parentRunId ?? null,
          forkedFrom: null,
          error: null,
          createdAt: now,
          updatedAt: now
        }
        const pos: Position = { step: 0, state, frontier, pending: new Map(), interrupts: [], barriers: {} }
        const started: RunEvent = {
          _tag: "RunStarted",
          runId,
          seq: 1,
          step: 0,
          at: now,
          graphId: graph.id,
          graphVersion: graph.version,
          graphHash: graph.hash
        }
        return { run, events: [started], checkpoint: toCheckpoint(graph, runId, pos, 1, now), pos }
      })

    const start = <S, E, R>(graph: CompiledGraph<any, E, R>, input: Partial<S>, opts: StartOptions = {}) =>
      Effect.gen(function*() {
        const { checkpoint, events, pos, run } = yield* prepare(graph, input as Record<string, unknown>, opts)
        const created = yield* store.create({ ...run, claimEpoch: 1 }, events, checkpoint)
        if (created.created) {
          yield* publish(run.runId)(events)
          yield* spawn<R>(graph, created.run, pos)
        }
        return handle<S>(graph, run.runId)
      })

    /**
     * Loads a stored run's position for `graph`: checks the log after the checkpoint is complete,
     * and carries the checkpoint through the graph's migration when the run was stored by an
     * older version that the graph declares a migration from.
     */
    const load = (graph: CompiledGraph, run: RunRecord) =>
      Effect.gen(function*() {
        const runId = run.runId
        const sameGraph = run.graphId === graph.id && run.graphHash === graph.hash
        const migration = sameGraph || run.graphId !== graph.id
          ? undefined
          : graph.migrations.find((m) => m.fromVersion === run.graphVersion)
        if (!sameGraph && migration === undefined) yield* checkGraph(graph, run)
        const stored = yield* store.latestCheckpoint(runId)
        if (Option.isNone(stored)) {
          return yield* Effect.fail(new EventLogCorruptionError({ runId, detail: "the run has no checkpoint" }))
        }
        const tail = yield* store.events(runId, stored.value.seq)
        const last = tail.length === 0 ? stored.value.seq : tail[tail.length - 1]!.seq
        if (last !== run.lastSeq) {
          return yield* Effect.fail(
            new EventLogCorruptionError({
              runId,
              detail: `the event log ends at sequence ${last} but the run has committed up to ${run.lastSeq}`
            })
          )
        }
        if (migration === undefined) return { pos: yield* fromCheckpoint(graph, stored.value), migrated: false }
        const migrated = yield* migration.migrate(stored.value.state).pipe(
          Effect.mapError((cause) =>
            new CheckpointMigrationError({
              runId,
              graphId: graph.id,
              fromVersion: run.graphVersion,
              toVersion: graph.version,
              detail: ParseResult.isParseError(cause) ? formatParseError(cause) : String(cause)
            })
          )
        )
        const state = { ...State.initial(graph.state, {}), ...(migrated as Record<string, unknown>) }
        const pos = yield* fromCheckpoint(graph, { ...stored.value, state: encodeState(graph, state) })
        return { pos, migrated: true }
      })

    /** Loads a run we own (its epoch is ours) for `graph`, committing a checkpoint migration if one applies. */
    const own = (graph: CompiledGraph, run: RunRecord) =>
      Effect.gen(function*() {
        const runId = run.runId
        const { migrated, pos } = yield* load(graph, run)
        if (!migrated) return { owned: run, pos }
        const now = yield* Clock.currentTimeMillis
        const event: RunEvent = {
          _tag: "RunMigrated",
          runId,
          seq: run.lastSeq + 1,
          step: run.step,
          at: now,
          fromVersion: run.graphVersion,
          toVersion: graph.version,
          graphHash: graph.hash
        }
        const owned = yield* store.commit({
          runId,
          epoch: run.claimEpoch,
          expectedStep: run.step,
          step: run.step,
          status: run.status,
          events: [event],
          checkpoint: toCheckpoint(graph, runId, pos, event.seq, now),
          usage: run.usage,
          waitUntil: run.waitUntil,
          error: run.error,
          at: now,
          graph: { version: graph.version, hash: graph.hash }
        }).pipe(Effect.orDie)
        yield* publish(runId)([event])
        return { owned, pos }
      })

    const resume = <S, E, R>(graph: CompiledGraph<any, E, R>, runId: string) =>
      Effect.gen(function*() {
        const run = yield* store.get(runId)
        if (actors.has(runId) || terminalStatuses.has(run.status)) {
          yield* checkGraph(graph, run)
          return handle<S>(graph, runId)
        }
        yield* load(graph, run)
        const { owned, pos } = yield* own(graph, yield* store.acquire(runId))
        yield* spawn<R>(graph, owned, pos)
        return handle<S>(graph, runId)
      })

    const adopt = <S, E, R>(graph: CompiledGraph<any, E, R>, run: RunRecord) =>
      Effect.gen(function*() {
        if (actors.has(run.runId)) yield* FiberMap.remove(fibers, run.runId)
        const { owned, pos } = yield* own(graph, run)
        if (!terminalStatuses.has(owned.status)) yield* spawn<R>(graph, owned, pos)
        return handle<S>(graph, run.runId)
      })

    const answer = <E, R>(graph: CompiledGraph<any, E, R>, runId: string, response: HumanResponse, target?: ResponseTarget) =>
      Effect.gen(function*() {
        if (actors.has(runId)) {
          yield* respond(graph, runId, response, target)
          return (yield* store.get(runId)).status
        }
        const run = yield* store.get(runId)
        if (run.status !== "waiting") {
          return yield* Effect.fail(new RunStatusError({ runId, status: run.status, expected: "waiting" }))
        }
        yield* load(graph, run)
        const { owned, pos } = yield* own(graph, yield* store.acquire(runId))
        const clock = yield* Effect.clock
        const deps: Deps = {
          env: envOf(graph, owned, clock),
          store,
          epoch: owned.claimEpoch,
          publish: publish(runId),
          onCommit: () => undefined
        }
        return yield* answerRun(deps, graph, owned, pos, response, target)
      })

    const ask = <A extends Message>(runId: string, message: A) =>
      Effect.gen(function*() {
        const actor = actors.get(runId)
        if (actor === undefined) return false
        return yield* Queue.offer(actor.mailbox, message)
      })

    const respond = <E, R>(graph: CompiledGraph<any, E, R>, runId: string, response: HumanResponse, target?: ResponseTarget) =>
      Effect.gen(function*() {
        if (!actors.has(runId)) {
          const run = yield* store.get(runId)
          if (run.status !== "waiting") {
            return yield* Effect.fail(new RunStatusError({ runId, status: run.status, expected: "waiting" }))
          }
          yield* resume(graph, runId)
        }
        const reply = yield* Deferred.make<void, RunStatusError | InputValidationError | StaleClaimError>()
        const sent = yield* ask(runId, { _tag: "Respond", response, target, reply })
        if (!sent) {
          const run = yield* store.get(runId)
          return yield* Effect.fail(new RunStatusError({ runId, status: run.status, expected: "waiting" }))
        }
        yield* Deferred.await(reply)
      })

    const cancel = (runId: string, reason = "cancelled") =>
      Effect.gen(function*() {
        const reply = yield* Deferred.make<void, RunStatusError | StaleClaimError>()
        const sent = yield* ask(runId, { _tag: "Cancel", reason, reply })
        if (sent) return yield* Deferred.await(reply)
        const run = yield* store.get(runId)
        if (terminalStatuses.has(run.status)) {
          return yield* Effect.fail(new RunStatusError({ runId, status: run.status, expected: "not yet ended" }))
        }
        const owned = yield* store.acquire(runId)
        const clock = yield* Effect.clock
        const now = clock.unsafeCurrentTimeMillis()
        const cancelled: RunEvent = { _tag: "RunCancelled", runId, seq: owned.lastSeq + 1, step: owned.step, at: now, reason }
        yield* store.commit({
          runId,
          epoch: owned.claimEpoch,
          expectedStep: owned.step,
          step: owned.step,
          status: "cancelled",
          events: [cancelled],
          checkpoint: undefined,
          usage: owned.usage,
          waitUntil: null,
          error: null,
          at: now
        }).pipe(
          Effect.catchTag("EventSequenceConflictError", (e) =>
            Effect.fail(new RunStatusError({ runId, status: "changing", expected: `quiescent (${e.message})` })))
        )
        yield* publish(runId)([cancelled])
      })

    return Runner.of({
      start: start as Runner["Type"]["start"],
      resume: resume as Runner["Type"]["resume"],
      adopt: adopt as Runner["Type"]["adopt"],
      prepare: (graph, input, opts) =>
        Effect.map(prepare(graph, input as Record<string, unknown>, opts), ({ checkpoint, events, run }) => ({
          run,
          events,
          checkpoint
        })),
      answer,
      stop: (runId) => FiberMap.remove(fibers, runId),
      respond,
      cancel,
      events,
      result: result as Runner["Type"]["result"],
      active: Effect.sync(() => [...actors.keys()])
    })
  })

/** The runner as a layer; needs a `RunStore` and the process's `CircuitBreakers` (and uses an `EventSink` if present). */
export const layer = (options: Options = {}): Layer.Layer<Runner, never, RunStore | CircuitBreakers> =>
  Layer.scoped(Runner, make(options))
