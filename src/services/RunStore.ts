/**
 * The `RunStore` port: runs, their event logs and their checkpoints behind one interface,
 * because a step commit writes all three atomically and fenced by the claim epoch.
 */
import { Context, Schema } from "effect"
import type { Effect, Option } from "effect"
import type {
  EventLogCorruptionError,
  EventSequenceConflictError,
  RunNotFoundError,
  StaleClaimError
} from "../Errors.js"
import type { RunEvent } from "../Events.js"
import { HumanResponse } from "../Node.js"

/** The lifecycle status of a run. */
export const RunStatus = Schema.Literal("pending", "running", "waiting", "completed", "failed", "cancelled", "timed_out")
/** The lifecycle status of a run. */
export type RunStatus = typeof RunStatus.Type

/** Statuses a run never leaves. */
export const terminalStatuses: ReadonlySet<RunStatus> = new Set(["completed", "failed", "cancelled", "timed_out"])

/** Spending limits of one scope (a run or a node). */
export const Budget = Schema.Struct({
  tokens: Schema.NullOr(Schema.Number),
  usd: Schema.NullOr(Schema.Number)
})
/** Spending limits of one scope (a run or a node). */
export type Budget = typeof Budget.Type

/** A run's limits and options, stored with it so they hold across a resume on any worker. */
export const RunConfig = Schema.Struct({
  maxSteps: Schema.Number,
  /** Wall-clock deadline, an instant in epoch ms. */
  deadline: Schema.NullOr(Schema.Number),
  budget: Budget,
  nodeBudgets: Schema.Record({ key: Schema.String, value: Budget }),
  /** Static breakpoints: park the run before or after these nodes. */
  interruptBefore: Schema.Array(Schema.String),
  interruptAfter: Schema.Array(Schema.String),
  /** Node instances that may run at once within a step. */
  concurrency: Schema.Number
})
/** A run's limits and options. */
export type RunConfig = typeof RunConfig.Type

/** What a scope has spent. */
export const Spend = Schema.Struct({ tokens: Schema.Number, usd: Schema.Number })
/** What a scope has spent. */
export type Spend = typeof Spend.Type

/** A run's spending, in total and per node. */
export const Usage = Schema.Struct({
  total: Spend,
  byNode: Schema.Record({ key: Schema.String, value: Spend })
})
/** A run's spending, in total and per node. */
export type Usage = typeof Usage.Type

/** The stored row of a run. */
export const RunRecord = Schema.Struct({
  runId: Schema.String,
  tenant: Schema.String,
  graphId: Schema.String,
  graphVersion: Schema.String,
  graphHash: Schema.String,
  status: RunStatus,
  step: Schema.Number,
  claimEpoch: Schema.Number,
  lastSeq: Schema.Number,
  config: RunConfig,
  usage: Usage,
  waitUntil: Schema.NullOr(Schema.Number),
  parentRunId: Schema.NullOr(Schema.String),
  forkedFrom: Schema.NullOr(Schema.Struct({ runId: Schema.String, seq: Schema.Number })),
  error: Schema.NullOr(Schema.Struct({ tag: Schema.String, message: Schema.String })),
  createdAt: Schema.Number,
  updatedAt: Schema.Number
})
/** The stored row of a run. */
export type RunRecord = typeof RunRecord.Type

/** One node instance to run in a step: a fan-out instance has an index and an input. */
export const FrontierEntry = Schema.Struct({
  node: Schema.String,
  index: Schema.Number,
  input: Schema.Unknown
})
/** One node instance to run in a step. */
export type FrontierEntry = typeof FrontierEntry.Type

/** One thing a step waits on: a node's `interrupt`, or a breakpoint before or after a node. */
export const Interrupt = Schema.Struct({
  kind: Schema.Literal("node", "before", "after"),
  node: Schema.String,
  index: Schema.Number,
  payload: Schema.Unknown,
  /** Responses received so far, in order: the i-th `interrupt` call of the node returns the i-th. */
  resumes: Schema.Array(HumanResponse),
  /** Whether the latest wait has its response (an answered breakpoint stays until its step runs). */
  answered: Schema.Boolean
})
/** One thing a step waits on. */
export type Interrupt = typeof Interrupt.Type

/** A run's resumable position: encoded state, the frontier, and what a waiting step already has. */
export const Checkpoint = Schema.Struct({
  runId: Schema.String,
  /** The last event sequence this checkpoint includes. */
  seq: Schema.Number,
  step: Schema.Number,
  state: Schema.Unknown,
  frontier: Schema.Array(FrontierEntry),
  /** Updates of nodes that completed in a step that is waiting on others (encoded). */
  pending: Schema.Array(Schema.Struct({ node: Schema.String, index: Schema.Number, update: Schema.Unknown })),
  /** What this step waits on (node interrupts or breakpoints), with the responses received so far. */
  interrupts: Schema.Array(Interrupt),
  /** For each join, the predecessors that have completed since the join last fired. */
  barriers: Schema.Record({ key: Schema.String, value: Schema.Array(Schema.String) }),
  createdAt: Schema.Number
})
/** A run's resumable position. */
export type Checkpoint = typeof Checkpoint.Type

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
