/**
 * The `WorkQueue` port: durable jobs with leases. Accepting a run writes the run and its job
 * together; claiming a job leases it and bumps its run's claim epoch in the same transaction, so
 * the claim's epoch fences every write the claimant makes.
 */
import { Context, Effect, Option, Schema } from "effect"
import type { Stream } from "effect"
import type { RunEvent } from "../Events.js"
import type { Checkpoint, RunRecord } from "../Run.js"
import type { RunStore } from "./RunStore.js"

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

/** Attempts a job gets when its submit does not say (as the SQL schema's default). */
export const defaultMaxAttempts = 10

/** The fields of a claimed job that ending or extending its claim changes. */
export type JobPatch = Partial<
  Pick<Job, "status" | "availableAt" | "attempts" | "leaseUntil" | "claimedBy" | "lastError">
> & { readonly updatedAt: number }

/** A job to insert, with the port's defaults applied. */
export interface NewJob {
  readonly runId: string
  readonly tenant: string
  readonly priority: number
  readonly availableAt: number
  readonly maxAttempts: number
  readonly now: number
}

/**
 * What a queue backend implements: reads and writes of jobs, nothing more (`undefined` means
 * "not there"). `make` turns it into the port, with the rules (idempotent submit, defaults, claim
 * ends and their attempt counting, lease-lost diagnosis, wake-ups, spans) the same everywhere.
 */
export interface Driver {
  /** The run store on the same backend: submit creates its run there, in the same transaction. */
  readonly runs: RunStore["Type"]
  /** Runs `effect` as one transaction. */
  readonly atomically: <A, E, R>(effect: Effect.Effect<A, E, R>) => Effect.Effect<A, E, R>
  /** The run submitted with this tenant and idempotency key. */
  readonly runByKey: (tenant: string, key: string) => Effect.Effect<string | undefined>
  readonly setKey: (runId: string, tenant: string, key: string) => Effect.Effect<void>
  readonly insertJob: (job: NewJob) => Effect.Effect<Job>
  /** The oldest job of a run. */
  readonly firstJob: (runId: string) => Effect.Effect<Job | undefined>
  /**
   * Leases the next claimable job (see `WorkQueue.claim`) and bumps its run's epoch, atomically:
   * a claim of a queued job counts an attempt; a takeover of a lapsed lease does not.
   */
  readonly claim: (
    workerId: string,
    options: { readonly now: number; readonly leaseMillis: number }
  ) => Effect.Effect<{ readonly job: Job; readonly run: RunRecord } | undefined>
  /**
   * Applies `patch` to the claimed job if `claim` is still current (the job claimed under its
   * epoch, the run's epoch unchanged, and the lease live at `now` when `live`); the new job.
   */
  readonly update: (
    claim: Claim,
    patch: JobPatch,
    options: { readonly now: number; readonly live: boolean }
  ) => Effect.Effect<Job | undefined>
  readonly get: (jobId: string) => Effect.Effect<Job | undefined>
  readonly jobsOf: (runId: string) => Effect.Effect<ReadonlyArray<Job>>
  readonly depth: (now: number) => Effect.Effect<Depth>
  /** Announces claimable work to every listener (a hint). */
  readonly notify: Effect.Effect<void>
  readonly wakeups: Stream.Stream<void>
}

/**
 * Builds the port from a driver. Every call is uninterruptible: an interrupt waits for the
 * backend's statement rather than cancelling it (a SQL cancel can land on another fiber's
 * statement, Effect-TS/effect#8068).
 */
export const make = (driver: Driver): WorkQueue["Type"] => {
  const { runs } = driver

  const annotateClaim = (claim: Claim) =>
    Effect.annotateCurrentSpan({
      "fibergraph.job_id": claim.job.jobId,
      "fibergraph.run_id": claim.job.runId,
      "fibergraph.epoch": claim.epoch
    })

  const runOf = (runId: string, what: string) =>
    Effect.orDieWith(runs.get(runId), (e) => new Error(`WorkQueue.${what}: ${e.message}`, { cause: e }))

  const accepted = (runId: string) =>
    Effect.gen(function*() {
      const run = yield* runOf(runId, "submit")
      const job = yield* driver.firstJob(runId)
      if (job === undefined) {
        return yield* Effect.dieMessage(
          `WorkQueue.submit: run ${runId} exists but was not accepted through the queue (it has no job); ` +
            "queue work on it with enqueue"
        )
      }
      return { run, job, created: false }
    })

  const submit = Effect.fn("WorkQueue.submit")(
    function*(run: RunRecord, events: ReadonlyArray<RunEvent>, checkpoint: Checkpoint, options: SubmitOptions = {}) {
      yield* Effect.annotateCurrentSpan({ "fibergraph.run_id": run.runId, "fibergraph.tenant": run.tenant })
      const key = options.idempotencyKey
      const result = yield* driver.atomically(Effect.gen(function*() {
        const keyed = key === undefined ? undefined : yield* driver.runByKey(run.tenant, key)
        if (keyed !== undefined) return yield* accepted(keyed)
        const created = yield* runs.create(run, events, checkpoint)
        if (!created.created) return yield* accepted(run.runId)
        if (key !== undefined) yield* driver.setKey(run.runId, run.tenant, key)
        const job = yield* driver.insertJob({
          runId: run.runId,
          tenant: run.tenant,
          priority: options.priority ?? 0,
          availableAt: options.availableAt ?? run.createdAt,
          maxAttempts: options.maxAttempts ?? defaultMaxAttempts,
          now: run.createdAt
        })
        return { run: created.run, job, created: true }
      }))
      if (result.created) yield* driver.notify
      return result
    },
    Effect.uninterruptible
  )

  const enqueue = Effect.fn("WorkQueue.enqueue")(
    function*(runId: string, options: { readonly now: number; readonly availableAt?: number; readonly priority?: number }) {
      yield* Effect.annotateCurrentSpan("fibergraph.run_id", runId)
      const run = yield* runOf(runId, "enqueue")
      const job = yield* driver.insertJob({
        runId,
        tenant: run.tenant,
        priority: options.priority ?? 0,
        availableAt: options.availableAt ?? options.now,
        maxAttempts: defaultMaxAttempts,
        now: options.now
      })
      yield* driver.notify
      return job
    },
    Effect.uninterruptible
  )

  const claim = Effect.fn("WorkQueue.claim")(
    function*(workerId: string, options: { readonly now: number; readonly leaseMillis: number }) {
      yield* Effect.annotateCurrentSpan("fibergraph.worker_id", workerId)
      const claimed = yield* driver.claim(workerId, options)
      if (claimed === undefined) return Option.none<Claim>()
      const { job, run } = claimed
      const result: Claim = { job, run, epoch: run.claimEpoch, leaseUntil: job.leaseUntil ?? options.now + options.leaseMillis }
      yield* annotateClaim(result)
      return Option.some(result)
    },
    Effect.uninterruptible
  )

  /** Why `claim` is no longer current. */
  const lost = (c: Claim, now: number, live: boolean) =>
    Effect.gen(function*() {
      const fail = (detail: string) =>
        new LeaseLostError({ jobId: c.job.jobId, runId: c.job.runId, epoch: c.epoch, detail })
      const job = yield* driver.get(c.job.jobId)
      const run = yield* Effect.option(runs.get(c.job.runId))
      if (job === undefined || Option.isNone(run)) return yield* fail("the job no longer exists")
      if (job.claimEpoch !== c.epoch) {
        return yield* fail(`the job was claimed again (epoch ${job.claimEpoch}, by ${job.claimedBy})`)
      }
      if (job.status !== "claimed") return yield* fail(`the job is ${job.status}`)
      if (live && job.leaseUntil !== null && job.leaseUntil < now) {
        return yield* fail(`the lease expired at ${new Date(job.leaseUntil).toISOString()}`)
      }
      return yield* fail(`the run was claimed by another owner (epoch ${run.value.claimEpoch})`)
    })

  /** Applies `patch` if `c` is current, else fails with why it is not. */
  const transition = (c: Claim, patch: JobPatch, now: number, live = false) =>
    Effect.flatMap(
      driver.update(c, patch, { now, live }),
      (job) => job === undefined ? lost(c, now, live) : Effect.succeed(job)
    )

  const heartbeat = Effect.fn("WorkQueue.heartbeat")(
    function*(c: Claim, options: { readonly now: number; readonly leaseMillis: number }) {
      yield* annotateClaim(c)
      const job = yield* transition(c, { leaseUntil: options.now + options.leaseMillis, updatedAt: options.now }, options.now, true)
      return job.leaseUntil ?? options.now + options.leaseMillis
    },
    Effect.uninterruptible
  )

  const complete = Effect.fn("WorkQueue.complete")(
    function*(c: Claim, options: { readonly now: number }) {
      yield* annotateClaim(c)
      yield* transition(c, { status: "done", leaseUntil: null, updatedAt: options.now }, options.now)
    },
    Effect.uninterruptible
  )

  const release = Effect.fn("WorkQueue.release")(
    function*(c: Claim, options: { readonly now: number }) {
      yield* annotateClaim(c)
      yield* transition(c, {
        status: "queued",
        leaseUntil: null,
        claimedBy: null,
        availableAt: options.now,
        attempts: Math.max(0, c.job.attempts - 1),
        updatedAt: options.now
      }, options.now)
      yield* driver.notify
    },
    Effect.uninterruptible
  )

  const retryLater = Effect.fn("WorkQueue.retryLater")(
    function*(c: Claim, options: { readonly now: number; readonly error: string; readonly delayMillis: number }) {
      yield* annotateClaim(c)
      const job = yield* transition(c, {
        status: c.job.attempts >= c.job.maxAttempts ? "dead" : "queued",
        availableAt: options.now + options.delayMillis,
        leaseUntil: null,
        claimedBy: null,
        lastError: options.error,
        updatedAt: options.now
      }, options.now)
      if (job.status === "queued") yield* driver.notify
      return job
    },
    Effect.uninterruptible
  )

  const deadLetter = Effect.fn("WorkQueue.deadLetter")(
    function*(c: Claim, options: { readonly now: number; readonly error: string }) {
      yield* annotateClaim(c)
      yield* transition(c, { status: "dead", leaseUntil: null, lastError: options.error, updatedAt: options.now }, options.now)
    },
    Effect.uninterruptible
  )

  return WorkQueue.of({
    submit,
    enqueue,
    claim,
    heartbeat,
    complete,
    release,
    retryLater,
    deadLetter,
    get: (jobId) => Effect.uninterruptible(Effect.map(driver.get(jobId), Option.fromNullable)),
    jobsOf: (runId) => Effect.uninterruptible(driver.jobsOf(runId)),
    depth: (now) => Effect.uninterruptible(driver.depth(now)),
    wakeups: driver.wakeups
  })
}
