/**
 * What the crash-test child tells its parent: one JSON line per milestone on stdout, written
 * synchronously, so a line the parent has read is a point the child has really passed.
 */
import { Schema } from "effect"

/** The engines a child can run on. */
export const Engine = Schema.Literal("embedded", "server")
/** The engines a child can run on. */
export type Engine = typeof Engine.Type

/** Whether the child starts the run or resumes it after a crash. */
export const Mode = Schema.Literal("start", "resume")
/** Whether the child starts the run or resumes it after a crash. */
export type Mode = typeof Mode.Type

/** The child's command line: `<engine> <store-url-or-dir> <runId> <mode>`. */
export const Args = Schema.Tuple(Engine, Schema.NonEmptyString, Schema.NonEmptyString, Mode)

/** The environment variable that makes the child print a `commit` line before each step commit. */
export const markersVariable = "FIBERGRAPH_CRASH_MARKERS"

/** The run as stored when the child opened the store (before it took the run up). */
export const Stored = Schema.Struct({
  status: Schema.String,
  step: Schema.Number,
  lastSeq: Schema.Number,
  claimEpoch: Schema.Number
})

/** One line of the child's output. */
export const Line = Schema.Union(
  /** The store is open and migrated; `stored` is the run as the previous process left it. */
  Schema.TaggedStruct("ready", { pid: Schema.Number, mode: Mode, stored: Schema.NullOr(Stored) }),
  /** The run is accepted (start) or taken up (resume) and runs in this process. */
  Schema.TaggedStruct("started", { runId: Schema.String }),
  /** The `n`-th step commit of this process is about to be sent; it moves the run from `step`. */
  Schema.TaggedStruct("commit", { n: Schema.Number, step: Schema.Number, firstSeq: Schema.Number }),
  /** The `n`-th step commit of this process returned. */
  Schema.TaggedStruct("committed", { n: Schema.Number, step: Schema.Number }),
  /** The run settled; the one line a plain run of the child prints. */
  Schema.TaggedStruct("result", { status: Schema.String, step: Schema.Number, state: Schema.Unknown }),
  Schema.TaggedStruct("error", { message: Schema.String })
)
/** One line of the child's output. */
export type Line = typeof Line.Type
