/**
 * What a chaos worker process tells its parent: one JSON line per milestone on stdout, written
 * synchronously, so a line the parent has read is a point the worker has really passed.
 */
import { Schema } from "effect"

/** The worker's knobs, passed as one JSON argument. */
export const Options = Schema.Struct({
  concurrency: Schema.Number,
  leaseMillis: Schema.Number,
  heartbeatMillis: Schema.Number,
  pollMillis: Schema.Number
})
/** The worker's knobs. */
export type Options = typeof Options.Type

/** The worker's command line: `<postgres-url> <application-name> <options-json>`. */
export const Args = Schema.Tuple(Schema.NonEmptyString, Schema.NonEmptyString, Schema.parseJson(Options))

/** How one step commit of the worker ended. */
export const Outcome = Schema.Literal("ok", "stale", "conflict", "not-found", "defect")
/** How one step commit of the worker ended. */
export type Outcome = typeof Outcome.Type

/** One line of a worker's output. */
export const Line = Schema.Union(
  /** The worker is connected, the schema is migrated and it claims work. */
  Schema.TaggedStruct("ready", { pid: Schema.Number, app: Schema.String }),
  /** The worker was asked to pause at its next commit and stops itself (SIGSTOP) before sending it. */
  Schema.TaggedStruct("pausing", { runId: Schema.String, epoch: Schema.Number, expectedStep: Schema.Number }),
  /** A step commit returned (a stale one is counted in `chaos_stale` before this line). */
  Schema.TaggedStruct("commit", {
    runId: Schema.String,
    epoch: Schema.Number,
    expectedStep: Schema.Number,
    step: Schema.Number,
    outcome: Outcome,
    detail: Schema.String
  }),
  /**
   * The worker's own account, every second: claims taken, runs finished, leases lost, runs held,
   * and how often it asked the queue for a claim and how many of those asks died.
   */
  Schema.TaggedStruct("status", {
    claimCalls: Schema.Number,
    claimDefects: Schema.Number,
    claimed: Schema.Number,
    completed: Schema.Number,
    leasesLost: Schema.Number,
    active: Schema.Number
  }),
  /** The worker failed to start or stopped with an error. */
  Schema.TaggedStruct("error", { message: Schema.String })
)
/** One line of a worker's output. */
export type Line = typeof Line.Type

/** The signal that asks a worker to stop itself at its next step commit. */
export const pauseSignal = "SIGUSR2"
