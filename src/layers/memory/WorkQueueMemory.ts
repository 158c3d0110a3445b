/**
 * The in-memory `WorkQueue` driver over the memory store's `Runs`, with the semantics of the SQL
 * queue (the port's rules live in `WorkQueue.make`): each driver call is one synchronous step, so
 * it is atomic, and a submit runs under one lock, as a transaction would.
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
import { Effect, Layer, PubSub, Stream } from "effect"
import * as RunStore from "../../services/RunStore.js"
import * as WorkQueue from "../../services/WorkQueue.js"
import type { Claim, Depth, Job } from "../../services/WorkQueue.js"
import * as RunStoreMemory from "./RunStoreMemory.js"

/** Attempts a job gets when its submit does not say (as the SQL schema's default). */
export const defaultMaxAttempts = WorkQueue.defaultMaxAttempts

interface Entry {
  job: Job
  /** Creation order across the whole queue. */
  readonly seq: number
}

const isLive = (job: Job, now: number) => job.status === "claimed" && job.leaseUntil !== null && job.leaseUntil >= now

const isClaimable = (job: Job, now: number) =>
  (job.status === "queued" && job.availableAt <= now) ||
  (job.status === "claimed" && (job.leaseUntil === null || job.leaseUntil < now))

const before = (a: ReadonlyArray<number>, b: ReadonlyArray<number>) => {
  for (let i = 0; i < a.length; i++) {
    if (a[i]! !== b[i]!) return a[i]! < b[i]!
  }
  return false
}

/** Builds the driver over `runs` (the memory store's state) and `store` (its port); the wake-up hub closes with the scope. */
export const makeDriver = (runs: RunStoreMemory.MemoryRuns, store: RunStore.RunStore["Type"]) =>
  Effect.gen(function*() {
    const lock = yield* Effect.makeSemaphore(1)
    const hub = yield* Effect.acquireRelease(PubSub.sliding<void>(1), PubSub.shutdown)

    const jobs = new Map<string, Entry>()
    const byRun = new Map<string, Array<Entry>>()
    const keys = new Map<string, string>()
    const lastClaimOf = new Map<string, number>()
    let created = 0
    let claims = 0

    const keyOf = (tenant: string, key: string) => `${tenant}\u0000${key}`
    const byAge = (a: Entry, b: Entry) => a.job.createdAt - b.job.createdAt || a.seq - b.seq
    const jobsOfRun = (runId: string) => [...(byRun.get(runId) ?? [])].sort(byAge)

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

    /** The claimed job's entry, if `claim` is still current (and its lease live, when `live`). */
    const current = (claim: Claim, now: number, live: boolean) => {
      const entry = jobs.get(claim.job.jobId)
      const run = runs.get(claim.job.runId)
      if (entry === undefined || run === undefined) return undefined
      const job = entry.job
      if (job.claimEpoch !== claim.epoch || job.status !== "claimed" || run.claimEpoch !== claim.epoch) return undefined
      if (live && job.leaseUntil !== null && job.leaseUntil < now) return undefined
      return entry
    }

    const driver: WorkQueue.Driver = {
      runs: store,
      atomically: (effect) => lock.withPermits(1)(effect),
      runByKey: (tenant, key) => Effect.sync(() => keys.get(keyOf(tenant, key))),
      setKey: (runId, tenant, key) => Effect.sync(() => void keys.set(keyOf(tenant, key), runId)),
      insertJob: (options) =>
        Effect.sync(() => {
          const ofRun = byRun.get(options.runId) ?? []
          const job: Job = {
            jobId: `job_${options.runId}_${ofRun.length + 1}`,
            runId: options.runId,
            tenant: options.tenant,
            priority: options.priority,
            status: "queued",
            availableAt: options.availableAt,
            attempts: 0,
            maxAttempts: options.maxAttempts,
            leaseUntil: null,
            claimedBy: null,
            claimEpoch: null,
            lastError: null,
            createdAt: options.now,
            updatedAt: options.now
          }
          const entry: Entry = { job, seq: created++ }
          jobs.set(job.jobId, entry)
          ofRun.push(entry)
          byRun.set(options.runId, ofRun)
          return job
        }),
      firstJob: (runId) => Effect.sync(() => jobsOfRun(runId)[0]?.job),
      claim: (workerId, { leaseMillis, now }) =>
        Effect.suspend(() => {
          const entry = pick(now)
          if (entry === undefined) return Effect.succeed(undefined)
          const run = runs.acquire(entry.job.runId)
          if (run === undefined) {
            return Effect.dieMessage(`WorkQueue.claim: job ${entry.job.jobId}: run ${entry.job.runId} not found`)
          }
          lastClaimOf.set(entry.job.tenant, claims++)
          entry.job = {
            ...entry.job,
            status: "claimed",
            claimedBy: workerId,
            leaseUntil: now + leaseMillis,
            attempts: entry.job.status === "queued" ? entry.job.attempts + 1 : entry.job.attempts,
            claimEpoch: run.claimEpoch,
            updatedAt: now
          }
          return Effect.succeed({ job: entry.job, run })
        }),
      update: (claim, patch, { live, now }) =>
        Effect.sync(() => {
          const entry = current(claim, now, live)
          if (entry === undefined) return undefined
          entry.job = { ...entry.job, ...patch }
          return entry.job
        }),
      get: (jobId) => Effect.sync(() => jobs.get(jobId)?.job),
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
      notify: Effect.asVoid(PubSub.publish(hub, undefined)),
      wakeups: Stream.fromPubSub(hub)
    }
    return driver
  })

/** Builds the queue over the memory store's `Runs` in context; its wake-up hub closes with the scope. */
export const make = Effect.gen(function*() {
  const runs = yield* RunStoreMemory.Runs
  return WorkQueue.make(yield* makeDriver(runs, RunStore.make(RunStoreMemory.driver(runs))))
})

/** The in-memory queue as a layer over the memory store's `Runs` (one fresh queue per build). */
export const layer: Layer.Layer<WorkQueue.WorkQueue, never, RunStoreMemory.Runs> = Layer.scoped(
  WorkQueue.WorkQueue,
  make
)
