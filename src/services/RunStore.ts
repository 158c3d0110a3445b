/**
 * The `RunStore` port: runs, their event logs and their checkpoints behind one interface,
 * because a step commit writes all three atomically and fenced by the claim epoch.
 */
import { Context, Effect, Option } from "effect"
import {
  EventLogCorruptionError,
  EventSequenceConflictError,
  RunNotFoundError,
  StaleClaimError
} from "../Errors.js"
import type { RunEvent } from "../Events.js"
import { annotate, spanned, traced } from "../internal/Tracing.js"
import type { Checkpoint, RunRecord, RunStatus, Usage } from "../Run.js"

export {
  Budget,
  Checkpoint,
  FrontierEntry,
  Interrupt,
  RunConfig,
  RunRecord,
  RunStatus,
  Spend,
  terminalStatuses,
  Usage
} from "../Run.js"

/** One atomic, fenced step commit. */
export interface StepCommit {
  readonly runId: string
  /** The claim epoch of the writer: the commit fails with `StaleClaimError` unless it is current. */
  readonly epoch: number
  /** The step the writer believes the run is at. */
  readonly expectedStep: number
  readonly step: number
  readonly status: RunStatus
  /** The events of this commit, with contiguous sequence numbers following the run's last one. */
  readonly events: ReadonlyArray<RunEvent>
  /** The new checkpoint, if the commit moves the resumable position. */
  readonly checkpoint: Checkpoint | undefined
  readonly usage: Usage
  readonly waitUntil: number | null
  readonly error: { readonly tag: string; readonly message: string } | null
  readonly at: number
  /** Rebinds the run to another version of its graph (after a checkpoint migration). */
  readonly graph?: { readonly version: string; readonly hash: string }
}

/** Filters for listing runs. */
export interface RunFilter {
  readonly status?: RunStatus | ReadonlyArray<RunStatus>
  readonly graphId?: string
  readonly tenant?: string
  readonly limit?: number
  /** Lists runs created strictly before this run id's creation (paging, newest first). */
  readonly before?: { readonly createdAt: number; readonly runId: string }
}

/** The port. */
export class RunStore extends Context.Tag("fibergraph/RunStore")<RunStore, {
  /** Creates a run with its first events and checkpoint; a second create of the same id returns the existing run. */
  readonly create: (
    run: RunRecord,
    events: ReadonlyArray<RunEvent>,
    checkpoint: Checkpoint
  ) => Effect.Effect<{ readonly run: RunRecord; readonly created: boolean }>
  readonly get: (runId: string) => Effect.Effect<RunRecord, RunNotFoundError>
  /** Takes ownership of a run in this process: bumps its claim epoch and returns the run with it. */
  readonly acquire: (runId: string) => Effect.Effect<RunRecord, RunNotFoundError>
  /** Commits one step atomically: run row (fenced), events, checkpoint, checkpoint pruning. */
  readonly commit: (
    commit: StepCommit
  ) => Effect.Effect<RunRecord, StaleClaimError | EventSequenceConflictError | RunNotFoundError>
  /** The run's events with a sequence greater than `afterSeq`, in order. */
  readonly events: (
    runId: string,
    afterSeq: number
  ) => Effect.Effect<ReadonlyArray<RunEvent>, RunNotFoundError | EventLogCorruptionError>
  readonly latestCheckpoint: (
    runId: string
  ) => Effect.Effect<Option.Option<Checkpoint>, RunNotFoundError | EventLogCorruptionError>
  /** The checkpoints still retained for a run, oldest first. */
  readonly checkpoints: (runId: string) => Effect.Effect<ReadonlyArray<Checkpoint>, RunNotFoundError>
  /** Runs matching the filter, newest first. */
  readonly list: (filter: RunFilter) => Effect.Effect<ReadonlyArray<RunRecord>>
  /**
   * Copies a run's history up to one of its retained checkpoints (`atSeq`, default the latest)
   * into a new run, which starts `pending` (or `waiting`, if that checkpoint waits) with lineage.
   */
  readonly fork: (
    runId: string,
    options: { readonly newRunId: string; readonly atSeq?: number; readonly at: number }
  ) => Effect.Effect<RunRecord, RunNotFoundError | EventLogCorruptionError>
  /** Drops events older than `beforeSeq` that a retained checkpoint already covers; returns how many. */
  readonly compact: (runId: string, beforeSeq: number) => Effect.Effect<number, RunNotFoundError>
}>() {}

/** A run's retained event log: its bounds, and the events after the sequence asked for. */
export interface EventLog {
  /** The sequence of the oldest retained event (earlier ones were compacted). */
  readonly firstSeq: number
  /** The run's last committed sequence. */
  readonly lastSeq: number
  readonly events: ReadonlyArray<RunEvent>
}

/**
 * What a backend implements: reads and writes of rows, nothing more. `undefined` means "no such
 * run"; `EventLogCorruptionError` means a stored row does not decode. `make` turns a driver into
 * the port, with the port's rules (validation, fencing diagnosis, fork construction, compaction
 * bounds, errors, spans) the same for every backend.
 */
export interface Driver {
  /** Inserts the run with its first events and checkpoint unless its id exists; the inserted row. */
  readonly insert: (
    run: RunRecord,
    events: ReadonlyArray<RunEvent>,
    checkpoint: Checkpoint
  ) => Effect.Effect<RunRecord | undefined, EventLogCorruptionError>
  readonly get: (runId: string) => Effect.Effect<RunRecord | undefined, EventLogCorruptionError>
  /** Bumps the claim epoch by one. */
  readonly acquire: (runId: string) => Effect.Effect<RunRecord | undefined, EventLogCorruptionError>
  /**
   * Writes the commit only if the run is at `epoch` and `expectedStep` and its log ends right
   * before the commit's first event; keeps the newest `retainCheckpoints`. The new row, or
   * `undefined` when the fence refused it.
   */
  readonly commit: (commit: StepCommit) => Effect.Effect<RunRecord | undefined>
  readonly events: (runId: string, afterSeq: number) => Effect.Effect<EventLog | undefined, EventLogCorruptionError>
  readonly latestCheckpoint: (
    runId: string
  ) => Effect.Effect<Option.Option<Checkpoint> | undefined, EventLogCorruptionError>
  /** Retained checkpoints, oldest first. */
  readonly checkpoints: (runId: string) => Effect.Effect<ReadonlyArray<Checkpoint> | undefined, EventLogCorruptionError>
  readonly list: (filter: ListFilter) => Effect.Effect<ReadonlyArray<RunRecord>, EventLogCorruptionError>
  /** Writes a fork: the new run, the source's events up to `upToSeq` (re-addressed), its checkpoint. */
  readonly insertFork: (fork: {
    readonly sourceRunId: string
    readonly run: RunRecord
    readonly firstSeq: number
    readonly checkpoint: Checkpoint
  }) => Effect.Effect<RunRecord | undefined, EventLogCorruptionError>
  /** Deletes the events up to `upToSeq` and moves the log's start after them; how many went. */
  readonly dropEvents: (runId: string, upToSeq: number) => Effect.Effect<number>
  /** Runs `effect` as one transaction (reads inside it see its writes). */
  readonly atomically: <A, E, R>(effect: Effect.Effect<A, E, R>) => Effect.Effect<A, E, R>
}

/** A `RunFilter` with its status list normalised. */
export interface ListFilter extends Omit<RunFilter, "status"> {
  readonly status?: ReadonlyArray<RunStatus>
}

const dieCorrupt = <A, R>(effect: Effect.Effect<A, EventLogCorruptionError, R>) => Effect.orDie(effect)

/**
 * Builds the port from a driver. Every call is uninterruptible: an interrupt waits for the
 * backend's statement rather than cancelling it (a SQL cancel can land on another fiber's
 * statement, Effect-TS/effect#8068).
 */
export const make = (driver: Driver): RunStore["Type"] => {
  const found = <A, E>(runId: string, effect: Effect.Effect<A | undefined, E>) =>
    Effect.flatMap(effect, (a) => a === undefined ? Effect.fail(new RunNotFoundError({ runId })) : Effect.succeed(a))

  const annotateRun = (runId: string) => annotate("fibergraph.run_id", runId)

  const create = Effect.fnUntraced(
    function*(run: RunRecord, events: ReadonlyArray<RunEvent>, checkpoint: Checkpoint) {
      yield* annotateRun(run.runId)
      const inserted = yield* dieCorrupt(driver.insert(run, events, checkpoint))
      if (inserted !== undefined) return { run: inserted, created: true }
      const existing = yield* Effect.orDie(found(run.runId, driver.get(run.runId)))
      return { run: existing, created: false }
    },
    Effect.uninterruptible,
    spanned("RunStore.create")
  )

  const get = Effect.fnUntraced(
    function*(runId: string) {
      yield* annotateRun(runId)
      return yield* found(runId, dieCorrupt(driver.get(runId)))
    },
    Effect.uninterruptible,
    spanned("RunStore.get")
  )

  const acquire = Effect.fnUntraced(
    function*(runId: string) {
      yield* annotateRun(runId)
      const run = yield* found(runId, dieCorrupt(driver.acquire(runId)))
      yield* annotate("fibergraph.epoch", run.claimEpoch)
      return run
    },
    Effect.uninterruptible,
    spanned("RunStore.acquire")
  )

  /** Why the fence refused a commit, from the run as it is now. */
  const refused = (c: StepCommit, first: number | undefined) =>
    Effect.flatMap(
      found(c.runId, dieCorrupt(driver.get(c.runId))),
      (run): Effect.Effect<never, StaleClaimError | EventSequenceConflictError> =>
        run.claimEpoch !== c.epoch || run.step !== c.expectedStep
          ? Effect.fail(
            new StaleClaimError({
              runId: c.runId,
              epoch: c.epoch,
              currentEpoch: run.claimEpoch,
              expectedStep: c.expectedStep,
              currentStep: run.step
            })
          )
          : Effect.fail(new EventSequenceConflictError({ runId: c.runId, seq: first ?? 0, lastSeq: run.lastSeq }))
    )

  /** The hot path of every step: no generator, and the span and its attributes only under a recording tracer. */
  const commit = (c: StepCommit): Effect.Effect<RunRecord, StaleClaimError | EventSequenceConflictError | RunNotFoundError> => {
    const first = c.events[0]?.seq
    for (let i = 1; i < c.events.length; i++) {
      if (c.events[i]!.seq !== first! + i) {
        return Effect.fail(new EventSequenceConflictError({ runId: c.runId, seq: c.events[i]!.seq, lastSeq: first! + i - 1 }))
      }
    }
    const write = Effect.uninterruptible(
      Effect.flatMap(driver.commit(c), (written) => written === undefined ? refused(c, first) : Effect.succeed(written))
    )
    return traced(write, "RunStore.commit", () => ({
      "fibergraph.run_id": c.runId,
      "fibergraph.step": c.step,
      "fibergraph.epoch": c.epoch,
      "fibergraph.status": c.status
    }))
  }

  const events = Effect.fnUntraced(
    function*(runId: string, afterSeq: number) {
      yield* annotateRun(runId)
      const log = yield* found(runId, driver.events(runId, afterSeq))
      const corrupt = (detail: string) => new EventLogCorruptionError({ runId, detail })
      if (afterSeq + 1 < log.firstSeq) {
        return yield* corrupt(`events before sequence ${log.firstSeq} were compacted; read from a checkpoint instead`)
      }
      let expected = afterSeq + 1
      for (const event of log.events) {
        if (event.seq !== expected) {
          return yield* corrupt(`the event log has a gap: sequence ${expected} is missing (next is ${event.seq})`)
        }
        if (event.runId !== runId) return yield* corrupt(`event ${event.seq} claims to be ${event.runId}#${event.seq}`)
        expected++
      }
      if (expected - 1 < log.lastSeq) {
        return yield* corrupt(
          `the event log ends at sequence ${expected - 1} but the run has committed up to ${log.lastSeq} (truncated)`
        )
      }
      return log.events
    },
    Effect.uninterruptible,
    spanned("RunStore.events")
  )

  const latestCheckpoint = Effect.fnUntraced(
    function*(runId: string) {
      yield* annotateRun(runId)
      return yield* found(runId, driver.latestCheckpoint(runId))
    },
    Effect.uninterruptible,
    spanned("RunStore.latestCheckpoint")
  )

  const checkpoints = Effect.fnUntraced(
    function*(runId: string) {
      yield* annotateRun(runId)
      return yield* found(runId, dieCorrupt(driver.checkpoints(runId)))
    },
    Effect.uninterruptible,
    spanned("RunStore.checkpoints")
  )

  const list = Effect.fnUntraced(
    function*(filter: RunFilter) {
      const status = filter.status === undefined
        ? undefined
        : typeof filter.status === "string"
        ? [filter.status as RunStatus]
        : filter.status
      const { status: _, ...rest } = filter
      return yield* dieCorrupt(driver.list(status === undefined ? rest : { ...rest, status }))
    },
    Effect.uninterruptible,
    spanned("RunStore.list")
  )

  const fork = Effect.fnUntraced(
    function*(runId: string, options: { readonly newRunId: string; readonly atSeq?: number; readonly at: number }) {
      yield* annotate({ "fibergraph.run_id": runId, "fibergraph.fork_run_id": options.newRunId })
      const { at, atSeq, newRunId } = options
      const corrupt = (detail: string) => new EventLogCorruptionError({ runId, detail })
      return yield* driver.atomically(Effect.gen(function*() {
        const source = yield* found(runId, dieCorrupt(driver.get(runId)))
        const retained = yield* found(runId, dieCorrupt(driver.checkpoints(runId)))
        const checkpoint = atSeq === undefined ? retained[retained.length - 1] : retained.find((c) => c.seq === atSeq)
        if (checkpoint === undefined) {
          return yield* corrupt(
            `no retained checkpoint at sequence ${atSeq}; retained: ${retained.map((c) => c.seq).join(", ")}`
          )
        }
        const existing = yield* dieCorrupt(driver.get(newRunId))
        if (existing !== undefined) return existing
        const log = yield* found(runId, driver.events(runId, source.lastSeq))
        if (checkpoint.seq < log.firstSeq - 1) return yield* corrupt("history before the checkpoint was compacted")
        const run: RunRecord = {
          ...source,
          runId: newRunId,
          status: checkpoint.interrupts.length > 0 ? "waiting" : "pending",
          step: checkpoint.step,
          claimEpoch: 0,
          lastSeq: checkpoint.seq,
          waitUntil: null,
          error: null,
          forkedFrom: { runId, seq: checkpoint.seq },
          createdAt: at,
          updatedAt: at
        }
        const inserted = yield* dieCorrupt(
          driver.insertFork({ sourceRunId: runId, run, firstSeq: log.firstSeq, checkpoint: { ...checkpoint, runId: newRunId } })
        )
        return inserted ?? (yield* Effect.orDie(found(newRunId, driver.get(newRunId))))
      }))
    },
    Effect.uninterruptible,
    spanned("RunStore.fork")
  )

  const compact = Effect.fnUntraced(
    function*(runId: string, beforeSeq: number) {
      yield* annotateRun(runId)
      return yield* driver.atomically(Effect.gen(function*() {
        const retained = yield* found(runId, dieCorrupt(driver.checkpoints(runId)))
        const log = yield* found(runId, dieCorrupt(driver.events(runId, Number.MAX_SAFE_INTEGER)))
        const upTo = Math.min(beforeSeq - 1, retained[0]?.seq ?? 0)
        return upTo < log.firstSeq ? 0 : yield* driver.dropEvents(runId, upTo)
      }))
    },
    Effect.uninterruptible,
    spanned("RunStore.compact")
  )

  return RunStore.of({ create, get, acquire, commit, events, latestCheckpoint, checkpoints, list, fork, compact })
}
