/**
 * The run model: a run's stored record, its limits and spending, and its resumable position
 * (checkpoint, frontier, interrupts). Stores persist these; the engine reads and writes them.
 */
import { Schema } from "effect"
import { HumanResponse } from "./Node.js"

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
