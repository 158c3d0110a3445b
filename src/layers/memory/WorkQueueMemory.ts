/**
 * An in-memory `WorkQueue` over the `RunStore` in context, with the semantics of the SQL queue:
 * each operation runs under one lock and uninterruptibly, so it is as atomic as a transaction.
 *
 * The choices the port leaves open, shared with the SQL queue:
 * - A claim picks, among jobs that are queued and available (`availableAt <= now`) or claimed
 *   with a lapsed lease (`leaseUntil < now`), and whose run has no other job under a live lease:
 *   the tenant with the fewest live leases, then the tenant whose latest claim is oldest in claim
 *   order (never claimed first), then a lapsed lease before queued work, then higher priority,
 *   earlier `availableAt`, earlier `createdAt`, and creation order.
 * - A lease is live while `leaseUntil >= now`. `heartbeat` needs a live lease; `complete`,
 *   `release`, `retryLater` and `deadLetter` need only the current claim (the job still claimed
 *   under the claim's epoch and the run's epoch unchanged), so a lapsed lease nobody took yet
 *   can still be ended by its holder.
 * - A claim of a queued job counts an attempt; taking over a lapsed lease does not (the attempt
 *   goes on under a new owner), and never dead-letters, so a crashed worker's run is always
 *   resumed. `release` does not count the released claim as an attempt; `retryLater`
 *   dead-letters once `attempts >= maxAttempts`.
 * - A submitted job is created at the run's `createdAt` (available then unless told otherwise);
 *   an idempotency key is recorded only by the submit that creates the run.
 */
import { Effect, Layer, Option, PubSub, Stream } from "effect"
import type { RunEvent } from "../../Events.js"
import { type Checkpoint, type RunRecord, RunStore } from "../../services/RunStore.js"
import { type Claim, type Depth, type Job, LeaseLostError, type SubmitOptions, WorkQueue } from "../../services/WorkQueue.js"

/** Attempts a job gets when its submit does not say (as the SQL schema's default). */
export const defaultMaxAttempts = 10

interface Entry {
  job: Job
  /** Creation order across the whole queue. */
  readonly seq: number
}

const isLive = (job: Job, now: number) => job.status === "claimed" && job.leaseUntil !== null && job.leaseUntil >= now

const isClaimable = (job: Job, now: number) =>
  (job.status === "queued" && job.availableAt <= now) ||
  (job.status === "claimed" && (job.leaseUntil === null || job.leaseUntil < now))

/** Builds the queue over the `RunStore` in context; its wake-up hub closes with the scope. */
export const make = Effect.gen(function*() {
  const store = yield* RunStore
  const lock = yield* Effect.makeSemaphore(1)
  const hub = yield* Effect.acquireRelease(PubSub.sliding<void>(1), PubSub.shutdown)

  const jobs = new Map<string, Entry>()
  const byRun = new Map<string, Array<Entry>>()
  const keys = new Map<string, string>()
  const lastClaimOf = new Map<string, number>()
  let created = 0
  let claims = 0

  const atomically = <A, E, R>(self: Effect.Effect<A, E, R>) => lock.withPermits(1)(Effect.uninterruptible(self))
  const wake = PubSub.publish(hub, undefined)
  const keyOf = (tenant: string, key: string) => `${tenant}\u0000${key}`

  const byAge = (a: Entry, b: Entry) => a.job.createdAt - b.job.createdAt || a.seq - b.seq
  const jobsOfRun = (runId: string) => [...(byRun.get(runId) ?? [])].sort(byAge)

  const insert = (
    runId: string,
    tenant: string,
    now: number,
    options: { readonly availableAt?: number | undefined; readonly priority?: number | undefined; readonly maxAttempts?: number | undefined }
  ): Job => {
    const ofRun = byRun.get(runId) ?? []
    const job: Job = {
      jobId: `job_${runId}_${ofRun.length + 1}`,
      runId,
      tenant,
      priority: options.priority ?? 0,
      status: "queued",
      availableAt: options.availableAt ?? now,
      attempts: 0,
      maxAttempts: options.maxAttempts ?? defaultMaxAttempts,
      leaseUntil: null,
      claimedBy: null,
      claimEpoch: null,
      lastError: null,
      createdAt: now,
      updatedAt: now
    }
    const entry: Entry = { job, seq: created++ }
    jobs.set(job.jobId, entry)
    ofRun.push(entry)
    byRun.set(runId, ofRun)
    return job
  }

  const runOf = (runId: string, what: string) =>
    Effect.orDieWith(store.get(runId), (e) => new Error(`WorkQueue.${what}: ${e.message}`, { cause: e }))

  const firstJob = (runId: string, what: string) =>
    Effect.suspend(() => {
      const first = jobsOfRun(runId)[0]
      return first === undefined
        ? Effect.dieMessage(
          `WorkQueue.${what}: run ${runId} exists but was not accepted through the queue (it has no job); ` +
            "queue work on it with enqueue"
        )
        : Effect.succeed(first.job)
    })

  const accepted = (runId: string, what: string) =>
    Effect.map(Effect.all({ run: runOf(runId, what), job: firstJob(runId, what) }), (r) => ({ ...r, created: false }))

  const pick = (now: number): Entry | undefined => {
    const liveByTenant = new Map<string, number>()
    const busyRuns = new Set<string>()
    for (const { job } of jobs.values()) {
      if (isLive(job, now)) {
        liveByTenant.set(job.tenant, (liveByTenant.get(job.tenant) ?? 0) + 1)
        busyRuns.add(job.runId)
      }
    }
    let best: Entry | undefined
    let bestKey: ReadonlyArray<number> = []
    for (const entry of jobs.values()) {
      const job = entry.job
      if (!isClaimable(job, now) || busyRuns.has(job.runId)) continue
      const key = [
        liveByTenant.get(job.tenant) ?? 0,
        lastClaimOf.get(job.tenant) ?? -1,
        job.status === "claimed" ? 0 : 1,
        -job.priority,
        job.availableAt,
        job.createdAt,
        entry.seq
      ]
      if (best === undefined || before(key, bestKey)) {
        best = entry
        bestKey = key
      }
    }
    return best
  }

  const lost = (claim: Claim, detail: string) =>
    new LeaseLostError({ jobId: claim.job.jobId, runId: claim.job.runId, epoch: claim.epoch, detail })

  /** The claimed job, if `claim` is still current (and its lease live, when `live`). */
  const current = (claim: Claim, now: number, live: boolean) =>
    Effect.flatMap(Effect.either(store.get(claim.job.runId)), (run) => {
      const entry = jobs.get(claim.job.jobId)
      if (entry === undefined || run._tag === "Left") return Effect.fail(lost(claim, "the job no longer exists"))
      const job = entry.job
      if (job.claimEpoch !== claim.epoch) {
        return Effect.fail(lost(claim, `the job was claimed again (epoch ${job.claimEpoch}, by ${job.claimedBy})`))
      }
      if (job.status !== "claimed") return Effect.fail(lost(claim, `the job is ${job.status}`))
      if (live && job.leaseUntil !== null && job.leaseUntil < now) {
        return Effect.fail(lost(claim, `the lease expired at ${new Date(job.leaseUntil).toISOString()}`))
      }
      if (run.right.claimEpoch !== claim.epoch) {
        return Effect.fail(lost(claim, `the run was claimed by another owner (epoch ${run.right.claimEpoch})`))
      }
      return Effect.succeed(entry)
    })

  const update = (entry: Entry, fields: Partial<Job>): Job => {
    entry.job = { ...entry.job, ...fields }
    return entry.job
  }

  const submit = Effect.fn("WorkQueue.submit")(
    function*(run: RunRecord, events: ReadonlyArray<RunEvent>, checkpoint: Checkpoint, options: SubmitOptions = {}) {
      const key = options.idempotencyKey === undefined ? undefined : keyOf(run.tenant, options.idempotencyKey)
      const keyed = key === undefined ? undefined : keys.get(key)
      if (keyed !== undefined) return yield* accepted(keyed, "submit")
      const result = yield* store.create(run, events, checkpoint)
      if (!result.created) return yield* accepted(run.runId, "submit")
      if (key !== undefined) keys.set(key, run.runId)
      const job = insert(run.runId, run.tenant, run.createdAt, options)
      yield* wake
      return { run: result.run, job, created: true }
    },
    atomically
  )

  const enqueue = Effect.fn("WorkQueue.enqueue")(
    function*(
      runId: string,
      options: { readonly now: number; readonly availableAt?: number; readonly priority?: number }
    ) {
      const run = yield* runOf(runId, "enqueue")
      const job = insert(runId, run.tenant, options.now, options)
      yield* wake
      return job
    },
    atomically
  )

  const claim = Effect.fn("WorkQueue.claim")(
    function*(workerId: string, options: { readonly now: number; readonly leaseMillis: number }) {
      const { leaseMillis, now } = options
      const entry = pick(now)
      if (entry === undefined) return Option.none<Claim>()
      const run = yield* Effect.orDieWith(
        store.acquire(entry.job.runId),
        (e) => new Error(`WorkQueue.claim: job ${entry.job.jobId}: ${e.message}`, { cause: e })
      )
      lastClaimOf.set(entry.job.tenant, claims++)
      const leaseUntil = now + leaseMillis
      const job = update(entry, {
        status: "claimed",
        claimedBy: workerId,
        leaseUntil,
        attempts: entry.job.status === "queued" ? entry.job.attempts + 1 : entry.job.attempts,
        claimEpoch: run.claimEpoch,
        updatedAt: now
      })
      return Option.some<Claim>({ job, run, epoch: run.claimEpoch, leaseUntil })
    },
    atomically
  )

  const heartbeat = Effect.fn("WorkQueue.heartbeat")(
    function*(claim: Claim, options: { readonly now: number; readonly leaseMillis: number }) {
      const entry = yield* current(claim, options.now, true)
      const leaseUntil = options.now + options.leaseMillis
      update(entry, { leaseUntil, updatedAt: options.now })
      return leaseUntil
    },
    atomically
  )

  const complete = Effect.fn("WorkQueue.complete")(
    function*(claim: Claim, options: { readonly now: number }) {
      const entry = yield* current(claim, options.now, false)
      update(entry, { status: "done", leaseUntil: null, updatedAt: options.now })
    },
    atomically
  )

  const release = Effect.fn("WorkQueue.release")(
    function*(claim: Claim, options: { readonly now: number }) {
      const entry = yield* current(claim, options.now, false)
      update(entry, {
        status: "queued",
        leaseUntil: null,
        claimedBy: null,
        availableAt: options.now,
        attempts: Math.max(0, entry.job.attempts - 1),
        updatedAt: options.now
      })
      yield* wake
    },
    atomically
  )

  const retryLater = Effect.fn("WorkQueue.retryLater")(
    function*(claim: Claim, options: { readonly now: number; readonly error: string; readonly delayMillis: number }) {
      const entry = yield* current(claim, options.now, false)
      const job = update(entry, {
        status: entry.job.attempts >= entry.job.maxAttempts ? "dead" : "queued",
        availableAt: options.now + options.delayMillis,
        leaseUntil: null,
        claimedBy: null,
        lastError: options.error,
        updatedAt: options.now
      })
      if (job.status === "queued") yield* wake
      return job
    },
    atomically
  )

  const deadLetter = Effect.fn("WorkQueue.deadLetter")(
    function*(claim: Claim, options: { readonly now: number; readonly error: string }) {
      const entry = yield* current(claim, options.now, false)
      update(entry, { status: "dead", leaseUntil: null, lastError: options.error, updatedAt: options.now })
    },
    atomically
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
    get: (jobId) => Effect.sync(() => Option.map(Option.fromNullable(jobs.get(jobId)), (e) => e.job)),
    jobsOf: (runId) => Effect.sync(() => jobsOfRun(runId).map((e) => e.job)),
    depth: (now) =>
      Effect.sync((): Depth => {
        let queued = 0
        let ready = 0
        let claimed = 0
        let dead = 0
        for (const { job } of jobs.values()) {
          if (job.status === "queued") {
            queued++
            if (job.availableAt <= now) ready++
          } else if (job.status === "claimed") claimed++
          else if (job.status === "dead") dead++
        }
        return { queued, ready, claimed, dead }
      }),
    wakeups: Stream.fromPubSub(hub)
  })
})

const before = (a: ReadonlyArray<number>, b: ReadonlyArray<number>) => {
  for (let i = 0; i < a.length; i++) {
    if (a[i]! !== b[i]!) return a[i]! < b[i]!
  }
  return false
}

/** The in-memory queue as a layer over the `RunStore` in context (one fresh queue per build). */
export const layer: Layer.Layer<WorkQueue, never, RunStore> = Layer.scoped(WorkQueue, make)
