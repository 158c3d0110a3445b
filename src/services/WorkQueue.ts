/**
 * The `WorkQueue` port: durable jobs with leases. Accepting a run writes the run and its job
 * together; claiming a job leases it and bumps its run's claim epoch in the same transaction, so
 * the claim's epoch fences every write the claimant makes.
 */
import { Context, Schema } from "effect"
import type { Effect, Option, Stream } from "effect"
import type { RunEvent } from "../Events.js"
import type { Checkpoint, RunRecord } from "./RunStore.js"

/** The lifecycle of a job. */
export const JobStatus = Schema.Literal("queued", "claimed", "done", "dead")
/** The lifecycle of a job. */
export type JobStatus = typeof JobStatus.Type

/** A stored job: one unit of work on a run (start it, continue it, fire its wait timeout). */
export const Job = Schema.Struct({
  jobId: Schema.String,
  runId: Schema.String,
  tenant: Schema.String,
  priority: Schema.Number,
  status: JobStatus,
  /** Not claimable before this instant (epoch ms): delayed jobs and durable timers. */
  availableAt: Schema.Number,
  /** Claims of the queued job so far; a takeover of a lapsed lease continues an attempt, it uses none. */
  attempts: Schema.Number,
  maxAttempts: Schema.Number,
  leaseUntil: Schema.NullOr(Schema.Number),
  claimedBy: Schema.NullOr(Schema.String),
  claimEpoch: Schema.NullOr(Schema.Number),
  lastError: Schema.NullOr(Schema.String),
  createdAt: Schema.Number,
  updatedAt: Schema.Number
})
/** A stored job. */
export type Job = typeof Job.Type

/** A leased job, and its run as of the claim (its `claimEpoch` is the claim's fencing token). */
export interface Claim {
  readonly job: Job
  readonly run: RunRecord
  readonly epoch: number
  readonly leaseUntil: number
}

/** Options of a submitted run's job. */
export interface SubmitOptions {
  readonly priority?: number
  /** Not claimable before this instant (epoch ms). */
  readonly availableAt?: number
  readonly maxAttempts?: number
  /** A caller's key: a second submit with the same tenant and key returns the first run. */
  readonly idempotencyKey?: string
}

/** The lease of a claimed job is gone (expired and taken, or the job moved on): the claimant must stop. */
export class LeaseLostError extends Schema.TaggedError<LeaseLostError>()("LeaseLostError", {
  jobId: Schema.String,
  runId: Schema.String,
  epoch: Schema.Number,
  detail: Schema.String
}) {
  override get message() {
    return `job ${this.jobId} (run ${this.runId}, epoch ${this.epoch}): lease lost: ${this.detail}; stop working on it`
  }
}

/** Queue depth, for metrics and readiness. */
export interface Depth {
  readonly queued: number
  readonly ready: number
  readonly claimed: number
  readonly dead: number
}

/** The port. `now` arguments are epoch ms from the caller's `Clock`, so tests drive time. */
export class WorkQueue extends Context.Tag("fibergraph/WorkQueue")<WorkQueue, {
  /**
   * Accepts a run: writes the run, its first events and checkpoint, and its job in one transaction.
   * Idempotent by run id, and by `(tenant, idempotencyKey)`: a second submit returns the existing run.
   */
  readonly submit: (
    run: RunRecord,
    events: ReadonlyArray<RunEvent>,
    checkpoint: Checkpoint,
    options?: SubmitOptions
  ) => Effect.Effect<{ readonly run: RunRecord; readonly job: Job; readonly created: boolean }>
  /** Queues more work on an existing run (after a human response, or a wait timeout due at `availableAt`). */
  readonly enqueue: (
    runId: string,
    options: { readonly now: number; readonly availableAt?: number; readonly priority?: number }
  ) => Effect.Effect<Job>
  /**
   * Leases the next claimable job (queued and available, or claimed with an expired lease), fairly
   * across tenants, a lapsed lease before the tenant's other work, then by priority, and bumps its
   * run's claim epoch, in one transaction. Only a claim of a queued job counts an attempt.
   */
  readonly claim: (
    workerId: string,
    options: { readonly now: number; readonly leaseMillis: number }
  ) => Effect.Effect<Option.Option<Claim>>
  /** Extends a lease; fails with `LeaseLostError` when the claim is no longer the current one. */
  readonly heartbeat: (
    claim: Claim,
    options: { readonly now: number; readonly leaseMillis: number }
  ) => Effect.Effect<number, LeaseLostError>
  /** Marks the job done. */
  readonly complete: (claim: Claim, options: { readonly now: number }) => Effect.Effect<void, LeaseLostError>
  /** Gives the job back to be claimed again at once (graceful shutdown). */
  readonly release: (claim: Claim, options: { readonly now: number }) => Effect.Effect<void, LeaseLostError>
  /**
   * Records a failed attempt: the job is claimable again after `delayMillis`, or dead-lettered
   * with the error once it has used its attempts.
   */
  readonly retryLater: (
    claim: Claim,
    options: { readonly now: number; readonly error: string; readonly delayMillis: number }
  ) => Effect.Effect<Job, LeaseLostError>
  /** Dead-letters the job with its last error. */
  readonly deadLetter: (
    claim: Claim,
    options: { readonly now: number; readonly error: string }
  ) => Effect.Effect<void, LeaseLostError>
  readonly get: (jobId: string) => Effect.Effect<Option.Option<Job>>
  /** The jobs of a run, oldest first. */
  readonly jobsOf: (runId: string) => Effect.Effect<ReadonlyArray<Job>>
  readonly depth: (now: number) => Effect.Effect<Depth>
  /** Signals that work may be claimable (new jobs); a hint, not a guarantee: poll as well. */
  readonly wakeups: Stream.Stream<void>
}>() {}
