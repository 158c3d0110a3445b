/**
 * The events of a run's lifecycle: one `Schema` union, each event carrying the run id, its
 * per-run sequence number, the step it belongs to and the instant (epoch ms) it was recorded.
 */
import { Schema } from "effect"

const base = {
  runId: Schema.String,
  seq: Schema.Number,
  step: Schema.Number,
  at: Schema.Number
}

const nodeRef = {
  node: Schema.String,
  index: Schema.Number
}

/** A run was accepted. */
export const RunStarted = Schema.TaggedStruct("RunStarted", {
  ...base,
  graphId: Schema.String,
  graphVersion: Schema.String,
  graphHash: Schema.String
})
/** A superstep began with the listed frontier. */
export const StepStarted = Schema.TaggedStruct("StepStarted", { ...base, nodes: Schema.Array(Schema.String) })
/** A node instance began (once per step, not per attempt). */
export const NodeStarted = Schema.TaggedStruct("NodeStarted", { ...base, ...nodeRef })
/** A node attempt failed with a retryable error and will be tried again. */
export const NodeRetrying = Schema.TaggedStruct("NodeRetrying", {
  ...base,
  ...nodeRef,
  attempt: Schema.Number,
  error: Schema.String
})
/** A node instance returned its update. */
export const NodeCompleted = Schema.TaggedStruct("NodeCompleted", {
  ...base,
  ...nodeRef,
  attempts: Schema.Number,
  keys: Schema.Array(Schema.String)
})
/** A node instance failed for good. */
export const NodeFailed = Schema.TaggedStruct("NodeFailed", {
  ...base,
  ...nodeRef,
  attempts: Schema.Number,
  error: Schema.String,
  errorTag: Schema.String
})
/** A node asked for a human (or a breakpoint fired). */
export const NodeInterrupted = Schema.TaggedStruct("NodeInterrupted", {
  ...base,
  ...nodeRef,
  kind: Schema.Literal("node", "before", "after"),
  payload: Schema.Unknown
})
/** A superstep's updates were merged and durably committed; `next` is the new frontier. */
export const StepCommitted = Schema.TaggedStruct("StepCommitted", { ...base, next: Schema.Array(Schema.String) })
/** The run is waiting for a human response, until `until` (epoch ms) if set. */
export const RunWaiting = Schema.TaggedStruct("RunWaiting", {
  ...base,
  interrupts: Schema.Array(
    Schema.Struct({ kind: Schema.String, node: Schema.String, index: Schema.Number, payload: Schema.Unknown })
  ),
  until: Schema.NullOr(Schema.Number)
})
/** A waiting run was resumed, by a response or its wait timing out. */
export const RunResumed = Schema.TaggedStruct("RunResumed", {
  ...base,
  response: Schema.Literal("approve", "reject", "edit", "timeout", "resume")
})
/** The run was carried to another version of its graph by a checkpoint migration. */
export const RunMigrated = Schema.TaggedStruct("RunMigrated", {
  ...base,
  fromVersion: Schema.String,
  toVersion: Schema.String,
  graphHash: Schema.String
})
/** The run reached the end. */
export const RunCompleted = Schema.TaggedStruct("RunCompleted", { ...base })
/** The run failed; `errorTag` is the failing error's tag. */
export const RunFailed = Schema.TaggedStruct("RunFailed", { ...base, error: Schema.String, errorTag: Schema.String })
/** The run was cancelled. */
export const RunCancelled = Schema.TaggedStruct("RunCancelled", { ...base, reason: Schema.String })
/** The run passed its deadline. */
export const RunTimedOut = Schema.TaggedStruct("RunTimedOut", { ...base, deadline: Schema.Number })
/** A budget crossed 50, 75, 90 or 100 percent. */
export const BudgetThreshold = Schema.TaggedStruct("BudgetThreshold", {
  ...base,
  scope: Schema.String,
  resource: Schema.Literal("tokens", "usd"),
  percent: Schema.Number,
  used: Schema.Number,
  limit: Schema.Number
})
/** A language model call finished (`replayed`: answered from the call journal, not sent again). */
export const ModelCalled = Schema.TaggedStruct("ModelCalled", {
  ...base,
  ...nodeRef,
  model: Schema.String,
  inputTokens: Schema.Number,
  outputTokens: Schema.Number,
  usd: Schema.Number,
  /** The call's index among the node instance's calls. */
  call: Schema.optional(Schema.Number),
  latencyMs: Schema.optional(Schema.Number),
  finishReason: Schema.optional(Schema.String),
  replayed: Schema.optional(Schema.Boolean)
})
/** A tool call began. */
export const ToolCalled = Schema.TaggedStruct("ToolCalled", {
  ...base,
  ...nodeRef,
  tool: Schema.String,
  input: Schema.Unknown,
  call: Schema.optional(Schema.Number),
  /** The model's id of the tool call. */
  callId: Schema.optional(Schema.String)
})
/** A tool call returned (or failed, with `error`). */
export const ToolReturned = Schema.TaggedStruct("ToolReturned", {
  ...base,
  ...nodeRef,
  tool: Schema.String,
  output: Schema.Unknown,
  error: Schema.NullOr(Schema.String),
  call: Schema.optional(Schema.Number),
  callId: Schema.optional(Schema.String),
  durationMs: Schema.optional(Schema.Number),
  replayed: Schema.optional(Schema.Boolean)
})
/** An event a node emitted through its context. */
export const Custom = Schema.TaggedStruct("Custom", { ...base, ...nodeRef, name: Schema.String, data: Schema.Unknown })

/** Any event of a run. */
export const RunEvent = Schema.Union(
  RunStarted,
  StepStarted,
  NodeStarted,
  NodeRetrying,
  NodeCompleted,
  NodeFailed,
  NodeInterrupted,
  StepCommitted,
  RunWaiting,
  RunResumed,
  RunMigrated,
  RunCompleted,
  RunFailed,
  RunCancelled,
  RunTimedOut,
  BudgetThreshold,
  ModelCalled,
  ToolCalled,
  ToolReturned,
  Custom
)
/** Any event of a run. */
export type RunEvent = typeof RunEvent.Type

/** The tag of any event. */
export type RunEventTag = RunEvent["_tag"]

/** An event before the runtime stamps it with run id, sequence, step and time. */
export type EventBody = RunEvent extends infer E ? E extends RunEvent ? Omit<E, "runId" | "seq" | "step" | "at"> : never : never

/**
 * Model output as it is generated: a text, reasoning or tool-parameter delta of one call. Live
 * only: it carries the run, step, node and call but no sequence number, is never stored, and
 * reaches only subscribers of the process running the node (`Runner.watch`).
 */
export interface ModelDelta {
  readonly _tag: "ModelDelta"
  readonly runId: string
  readonly step: number
  readonly node: string
  readonly index: number
  readonly call: number
  readonly kind: "text" | "reasoning" | "tool-params"
  readonly delta: string
  /** The tool whose parameters stream (for `tool-params`). */
  readonly tool?: string
  readonly at: number
}

/** What a live subscriber sees: the durable events and, interleaved, the live-only deltas. */
export type LiveEvent = RunEvent | ModelDelta

/** The tags after which a run emits nothing more. */
export const terminalTags: ReadonlySet<RunEventTag> = new Set(["RunCompleted", "RunFailed", "RunCancelled", "RunTimedOut"])

/** Whether the event ends its run. */
export const isTerminal = (event: RunEvent): boolean => terminalTags.has(event._tag)

/** Encodes and decodes events to and from JSON-compatible values. */
export const encode = Schema.encodeSync(RunEvent)
/** Decodes an event from its JSON form, failing with a `ParseError`. */
export const decode = Schema.decodeUnknown(RunEvent)
