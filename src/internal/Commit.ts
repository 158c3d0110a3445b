/**
 * The one commit path of a run: every write (a step, a human answer, a cancel, a wait timeout, a
 * deadline, a checkpoint migration) goes through `commit`, fenced by the writer's claim epoch and
 * the step it last saw, and nothing is ever appended after a terminal event.
 */
import type { Clock } from "effect"
import { Effect } from "effect"
import { RunStatusError, type StaleClaimError } from "../Errors.js"
import type { RunEvent } from "../Events.js"
import type { CompiledGraph } from "../Graph.js"
import { type RunRecord, type RunStatus, type RunStore, terminalStatuses, type Usage } from "../services/RunStore.js"
import { toCheckpoint } from "./Codec.js"
import type { Draft, FailureInfo, Position, Stamp } from "./Position.js"

/** Where a run stands as of its writer's latest commit. */
export interface Cursor {
  run: RunRecord
  pos: Position
}

/** What writes a run: the holder of one claim epoch, with its own view of the run. */
export interface Writer {
  readonly runId: string
  readonly store: RunStore["Type"]
  readonly clock: Clock.Clock
  /** Encodes positions as checkpoints; a writer without the graph (a cancel) commits no position. */
  readonly graph: CompiledGraph | undefined
  /** The run's spending as of now (the drive's tracker, or the stored usage). */
  readonly usage: () => Usage
  /** The claim epoch every commit is fenced by. */
  readonly epoch: number
  /** Advanced by every successful commit. */
  readonly cursor: Cursor
  readonly publish: (events: ReadonlyArray<RunEvent>) => Effect.Effect<void>
  /** Fails when the writer may no longer start work (its lease ran out); checked before every step. */
  readonly guard: Effect.Effect<void, StaleClaimError>
}

/** One write of a run. */
export interface Change {
  readonly status: RunStatus
  readonly events: ReadonlyArray<Draft>
  /** The new resumable position; without it the stored checkpoint stays. */
  readonly pos?: Position | undefined
  readonly error?: FailureInfo | undefined
  readonly waitUntil?: number | null
  /** Rebinds the run to another version of its graph (after a checkpoint migration). */
  readonly graph?: { readonly version: string; readonly hash: string }
}

/** Builds the stamp of a step: drafts carry run id, step and time; sequences come at commit. */
export const stampFor = (writer: { readonly runId: string; readonly clock: Clock.Clock }, step: number): Stamp => (body) => {
  const draft = body as unknown as Draft & { runId: string; step: number; at: number }
  draft.runId = writer.runId
  draft.seq = 0
  draft.step = step
  draft.at = writer.clock.unsafeCurrentTimeMillis()
  return draft
}

/** A writer's guard that never fails (a writer in a process that holds no lease). */
export const unguarded: Effect.Effect<void, StaleClaimError> = Effect.void

/**
 * A writer of control changes that write no position (a cancel) for a run taken without its
 * graph; its cursor's position is an empty one at the run's step.
 */
export const controlWriter = (
  store: RunStore["Type"],
  run: RunRecord,
  clock: Clock.Clock,
  publish: (events: ReadonlyArray<RunEvent>) => Effect.Effect<void>
): Writer => ({
  runId: run.runId,
  store,
  clock,
  graph: undefined,
  usage: () => run.usage,
  epoch: run.claimEpoch,
  cursor: { run, pos: { step: run.step, state: {}, frontier: [], pending: new Map(), interrupts: [], barriers: {} } },
  publish,
  guard: unguarded
})

/**
 * Commits a change of the writer's run: stamps the events' sequences after the run's last one,
 * writes run row, events and checkpoint in one fenced store commit, then advances the cursor and
 * publishes the events, even when the writer is interrupted as the store call returns (the store
 * itself never lets an interrupt cut a statement short).
 */
export const commit = (writer: Writer, change: Change): Effect.Effect<RunRecord, StaleClaimError | RunStatusError> =>
  Effect.suspend((): Effect.Effect<RunRecord, StaleClaimError | RunStatusError> => {
    const run = writer.cursor.run
    if (terminalStatuses.has(run.status)) {
      return Effect.fail(new RunStatusError({ runId: run.runId, status: run.status, expected: "not yet ended" }))
    }
    const pos = change.pos
    const graph = writer.graph
    if (pos !== undefined && graph === undefined) {
      return Effect.dieMessage(`run ${run.runId}: a writer without its graph cannot commit a position`)
    }
    const at = writer.clock.unsafeCurrentTimeMillis()
    let seq = run.lastSeq
    for (const e of change.events) e.seq = ++seq
    const events = change.events as unknown as ReadonlyArray<RunEvent>
    return writer.store.commit({
      runId: run.runId,
      epoch: writer.epoch,
      expectedStep: run.step,
      step: pos?.step ?? run.step,
      status: change.status,
      events,
      checkpoint: pos === undefined || graph === undefined ? undefined : toCheckpoint(graph, run.runId, pos, seq, at),
      usage: writer.usage(),
      waitUntil: change.waitUntil ?? null,
      error: change.error === undefined ? null : { tag: change.error.tag, message: change.error.message },
      at,
      ...(change.graph === undefined ? {} : { graph: change.graph })
    }).pipe(
      Effect.catchTags({
        EventSequenceConflictError: (e) => Effect.die(e),
        RunNotFoundError: (e) => Effect.die(e)
      }),
      Effect.onExit((exit) => {
        if (exit._tag === "Failure") return Effect.void
        writer.cursor.run = exit.value
        if (pos !== undefined) writer.cursor.pos = pos
        return writer.publish(events)
      })
    )
  })

/** A failure as stored on a run, from a typed error. */
export const failureOf = (error: { readonly _tag: string; readonly message: string }): FailureInfo => ({
  tag: error._tag,
  message: error.message,
  error
})
