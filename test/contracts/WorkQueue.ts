/**
 * The contract every `WorkQueue` backend passes (memory, embedded PGlite, server Postgres), run
 * beside the `RunStore` it shares its runs with.
 *
 * Isolation in a shared queue. `claim` takes the next claimable job of the whole queue, and the
 * layer is built once per block (as the SQL backends run it, over one database), so jobs a test
 * leaves behind stay in the queue for the tests after it. Every test therefore works in its own
 * time window and its own tenants:
 * - windows run backwards: each test's window is one day, ending where the previous test's began,
 *   and the first ends on 2020-01-01, before the fixtures' times and the wall clock. Every `now` a
 *   test passes lies in its window, so no job of an earlier test is claimable then (its
 *   `availableAt` and any lease lie in a later window), nor any job written with current times;
 * - counts are scoped to a test's tenants (fairness counts live leases per tenant), and `depth`,
 *   which counts the whole queue, is compared before and after within a test;
 * - every claim checks that it got a job of the test's own tenants, so a leak fails loudly.
 * The tests run one after the other, as a block does by default; run them concurrently and a test
 * could see the jobs of a test that started after it.
 */
import { assert, layer } from "@effect/vitest"
import { Cause, type Duration, Effect, Exit, type Layer, Option, Ref, Stream } from "effect"
import { RunNotFoundError, StaleClaimError } from "../../src/Errors.js"
import { type RunRecord, RunStore } from "../../src/services/RunStore.js"
import { type Claim, type Depth, type Job, LeaseLostError, type SubmitOptions, WorkQueue } from "../../src/services/WorkQueue.js"
import { makeCheckpoint, makeCommit, makeEvents, makeRun, runStarted, uniqueId } from "./RunStore.js"

/** Options of the contract suite. */
export interface WorkQueueContractOptions {
  /** How long building (and closing) the layer may take, e.g. for migrations (default 60 seconds). */
  readonly timeout?: Duration.DurationInput
}

/** The end of the first test's window (2020-01-01): earlier than any time the fixtures or the wall clock give. */
const LATEST = 1_577_836_800_000
const DAY = 86_400_000
const LEASE = 30_000

let windowsOpened = 0

/** A test's own slice of time, and the tenants it may claim jobs of. */
interface Window {
  /** The window's first instant: runs are created then. */
  readonly start: number
  /** An instant `offset` ms into the window. */
  readonly at: (offset: number) => number
  /** The test's first tenant. */
  readonly tenant: string
  /** Another tenant of this test. */
  readonly newTenant: () => string
  readonly owns: (tenant: string) => boolean
}

/** Opens the next window, one day before the previous one. */
const openWindow = (): Window => {
  windowsOpened++
  const start = LATEST - windowsOpened * DAY
  const tenants = new Set<string>()
  const newTenant = () => {
    const tenant = uniqueId("tenant")
    tenants.add(tenant)
    return tenant
  }
  return { start, at: (offset) => start + offset, tenant: newTenant(), newTenant, owns: (t) => tenants.has(t) }
}

/** Submits a fresh run created at the window's start (unless told otherwise). */
const submitRun = (
  w: Window,
  run: { readonly tenant?: string; readonly createdAt?: number } = {},
  options: SubmitOptions = {}
) =>
  Effect.gen(function*() {
    const queue = yield* WorkQueue
    const createdAt = run.createdAt ?? w.start
    const record = makeRun({ runId: uniqueId("run"), tenant: run.tenant ?? w.tenant, createdAt, updatedAt: createdAt })
    const result = yield* queue.submit(record, [runStarted(record)], makeCheckpoint(record.runId, 1, 0), options)
    assert.isTrue(result.created, "a fresh run is created")
    return result
  })

/** Claims the next job, checking that it belongs to this test. */
const claimNext = (w: Window, workerId: string, now: number, leaseMillis = LEASE) =>
  Effect.gen(function*() {
    const queue = yield* WorkQueue
    const claim = yield* queue.claim(workerId, { now, leaseMillis })
    if (Option.isSome(claim) && !w.owns(claim.value.job.tenant)) {
      assert.fail(`claimed job ${claim.value.job.jobId} of another test (tenant ${claim.value.job.tenant}): time windows overlap`)
    }
    return claim
  })

/** Claims the next job, which must exist. */
const claimSome = (w: Window, workerId: string, now: number, leaseMillis = LEASE) =>
  Effect.flatMap(
    claimNext(w, workerId, now, leaseMillis),
    (claim) => Option.isSome(claim) ? Effect.succeed(claim.value) : Effect.sync(() => assert.fail(`${workerId} claimed nothing at ${now}`))
  )

/** Asserts that nothing is claimable at `now`. */
const claimNone = (w: Window, now: number, message: string) =>
  Effect.flatMap(claimNext(w, uniqueId("worker"), now), (claim) =>
    Effect.sync(() => {
      if (Option.isSome(claim)) assert.fail(`${message}, but job ${claim.value.job.jobId} was claimed at ${now}`)
    }))

/** Commits one step of `run` under `epoch` (the run's own by default). */
const commitStep = (run: RunRecord, epoch: number = run.claimEpoch) =>
  Effect.flatMap(RunStore, (store) =>
    store.commit(makeCommit(run, {
      epoch,
      events: makeEvents(run.runId, run.lastSeq + 1, 2, run.step + 1),
      checkpoint: makeCheckpoint(run.runId, run.lastSeq + 2, run.step + 1)
    })))

const jobOf = (jobId: string) =>
  Effect.flatMap(WorkQueue, (queue) =>
    Effect.flatMap(queue.get(jobId), (job) =>
      Option.isSome(job) ? Effect.succeed(job.value) : Effect.sync(() => assert.fail(`job ${jobId} is gone`))))

/** The error `effect` fails with; an unexpected success fails the test. */
const failure = <A, E, R>(effect: Effect.Effect<A, E, R>): Effect.Effect<E, never, R> =>
  Effect.matchEffect(effect, {
    onFailure: Effect.succeed,
    onSuccess: (value) => Effect.sync(() => assert.fail(`expected a failure, but it succeeded with ${JSON.stringify(value)}`))
  })

/** Asserts that `effect` fails with `LeaseLostError` for `claim`. */
const leaseLost = <A, E, R>(effect: Effect.Effect<A, E, R>, claim: Claim, label: string) =>
  Effect.map(failure(effect), (error) => {
    assert.instanceOf(error, LeaseLostError, label)
    assert.strictEqual(error.jobId, claim.job.jobId, label)
    assert.strictEqual(error.runId, claim.job.runId, label)
    assert.strictEqual(error.epoch, claim.epoch, label)
  })

/** Asserts that every operation that needs `claim` to be current fails with `LeaseLostError`. */
const fenced = (claim: Claim, now: number) =>
  Effect.gen(function*() {
    const queue = yield* WorkQueue
    yield* leaseLost(queue.heartbeat(claim, { now, leaseMillis: LEASE }), claim, "heartbeat")
    yield* leaseLost(queue.complete(claim, { now }), claim, "complete")
    yield* leaseLost(queue.release(claim, { now }), claim, "release")
    yield* leaseLost(queue.retryLater(claim, { now, error: "late", delayMillis: 0 }), claim, "retryLater")
    yield* leaseLost(queue.deadLetter(claim, { now, error: "late" }), claim, "deadLetter")
  })

const depthDelta = (after: Depth, before: Depth): Depth => ({
  queued: after.queued - before.queued,
  ready: after.ready - before.ready,
  claimed: after.claimed - before.claimed,
  dead: after.dead - before.dead
})

/** Waits (on the live clock) until `ref` exceeds `above`, for at most `millis`. */
const exceeds = (ref: Ref.Ref<number>, above: number, millis: number) =>
  Effect.gen(function*() {
    for (let waited = 0; waited <= millis; waited += 10) {
      if ((yield* Ref.get(ref)) > above) return true
      yield* Effect.sleep("10 millis")
    }
    return false
  })

/**
 * Registers the `WorkQueue` contract as a `describe` block against `workQueue`, a layer that
 * provides the queue and the `RunStore` it works beside (on the same database, for SQL).
 *
 * The layer is built once for the block, with runs and jobs of many tests side by side: see the
 * module's comment for how tests stay apart. Every `now` is passed explicitly, so the block runs
 * on the live clock (a database pool must see real time).
 */
export const workQueueContract = (
  name: string,
  workQueue: Layer.Layer<WorkQueue | RunStore, unknown>,
  options: WorkQueueContractOptions = {}
): void => {
  layer(workQueue, { excludeTestServices: true, timeout: options.timeout ?? "60 seconds" })(name, (it) => {
    it.effect("submit writes the run, its first events and checkpoint, and one queued job together", () =>
      Effect.gen(function*() {
        const queue = yield* WorkQueue
        const store = yield* RunStore
        const w = openWindow()
        const run = makeRun({ runId: uniqueId("run"), tenant: w.tenant, createdAt: w.start, updatedAt: w.start })
        const events = [runStarted(run)]
        const checkpoint = makeCheckpoint(run.runId, 1, 0)
        const result = yield* queue.submit(run, events, checkpoint)
        assert.isTrue(result.created)
        assert.deepStrictEqual(result.run, run)
        assert.deepStrictEqual(yield* store.get(run.runId), run)
        assert.deepStrictEqual(yield* store.events(run.runId, 0), events)
        assert.deepStrictEqual(Option.getOrUndefined(yield* store.latestCheckpoint(run.runId)), checkpoint)

        const job = result.job
        assert.isString(job.jobId)
        assert.isAbove(job.jobId.length, 0)
        assert.isTrue(Number.isInteger(job.maxAttempts) && job.maxAttempts > 0, "a default number of attempts")
        const expected: Job = {
          jobId: job.jobId,
          runId: run.runId,
          tenant: w.tenant,
          priority: 0,
          status: "queued",
          availableAt: w.start,
          attempts: 0,
          maxAttempts: job.maxAttempts,
          leaseUntil: null,
          claimedBy: null,
          claimEpoch: null,
          lastError: null,
          createdAt: w.start,
          updatedAt: w.start
        }
        assert.deepStrictEqual(job, expected, "created with the run, available at once")
        assert.deepStrictEqual(yield* queue.get(job.jobId), Option.some(expected))
        assert.deepStrictEqual(yield* queue.jobsOf(run.runId), [expected])

        const { job: tuned } = yield* submitRun(w, {}, { priority: 7, availableAt: w.at(5_000), maxAttempts: 2 })
        assert.strictEqual(tuned.priority, 7)
        assert.strictEqual(tuned.availableAt, w.at(5_000))
        assert.strictEqual(tuned.maxAttempts, 2)
        assert.notStrictEqual(tuned.jobId, job.jobId, "job ids are unique")
        assert.deepStrictEqual(yield* queue.get(uniqueId("job")), Option.none())
        assert.deepStrictEqual(yield* queue.jobsOf(uniqueId("run")), [])
      }))

    it.effect("submit is idempotent by run id: it returns the run and its first job as stored, and writes nothing", () =>
      Effect.gen(function*() {
        const queue = yield* WorkQueue
        const store = yield* RunStore
        const w = openWindow()
        const first = yield* submitRun(w)
        const runId = first.run.runId
        const claim = yield* claimSome(w, "worker-a", w.at(1_000))
        const advanced = yield* commitStep(claim.run)
        const second = yield* queue.enqueue(runId, { now: w.at(2_000) })
        const events = yield* store.events(runId, 0)

        const imposter = makeRun({ runId, tenant: w.newTenant(), graphId: "imposter", createdAt: w.at(3_000) })
        const again = yield* queue.submit(imposter, [runStarted(imposter)], makeCheckpoint(runId, 1, 0), {
          priority: 9,
          idempotencyKey: uniqueId("key")
        })
        assert.isFalse(again.created)
        assert.deepStrictEqual(again.run, advanced, "the run as it is stored now")
        assert.deepStrictEqual(again.job, yield* jobOf(first.job.jobId), "its first job, as it is now")
        assert.strictEqual(again.job.status, "claimed")
        assert.deepStrictEqual((yield* queue.jobsOf(runId)).map((j) => j.jobId), [first.job.jobId, second.jobId])
        assert.deepStrictEqual(yield* store.events(runId, 0), events, "no events written")
        assert.deepStrictEqual(yield* store.get(runId), advanced)
      }))

    it.effect("submit is idempotent by tenant and idempotency key", () =>
      Effect.gen(function*() {
        const queue = yield* WorkQueue
        const store = yield* RunStore
        const w = openWindow()
        const key = uniqueId("key")
        const first = yield* submitRun(w, {}, { idempotencyKey: key })

        const retry = makeRun({ runId: uniqueId("run"), tenant: w.tenant, createdAt: w.at(10) })
        const again = yield* queue.submit(retry, [runStarted(retry)], makeCheckpoint(retry.runId, 1, 0), {
          idempotencyKey: key,
          priority: 5
        })
        assert.isFalse(again.created)
        assert.deepStrictEqual(again.run, first.run, "the run that used the key first")
        assert.deepStrictEqual(again.job, first.job)
        assert.instanceOf(yield* failure(store.get(retry.runId)), RunNotFoundError, "the second run is not created")
        assert.deepStrictEqual(yield* queue.jobsOf(retry.runId), [])

        const otherTenant = yield* submitRun(w, { tenant: w.newTenant() }, { idempotencyKey: key })
        assert.notStrictEqual(otherTenant.run.runId, first.run.runId, "keys are per tenant")
        const otherKey = yield* submitRun(w, {}, { idempotencyKey: uniqueId("key") })
        assert.notStrictEqual(otherKey.run.runId, first.run.runId)
        const unkeyedA = yield* submitRun(w)
        const unkeyedB = yield* submitRun(w)
        assert.notStrictEqual(unkeyedA.run.runId, unkeyedB.run.runId, "no key, no deduplication")

        const acquired = yield* store.acquire(first.run.runId)
        const later = makeRun({ runId: uniqueId("run"), tenant: w.tenant, createdAt: w.at(2_000) })
        const third = yield* queue.submit(later, [runStarted(later)], makeCheckpoint(later.runId, 1, 0), {
          idempotencyKey: key
        })
        assert.isFalse(third.created)
        assert.deepStrictEqual(third.run, acquired, "the keyed run as it is stored now")
      }))

    it.effect("claim leases the job, bumps its run's claim epoch by one and returns the run with it", () =>
      Effect.gen(function*() {
        const queue = yield* WorkQueue
        const store = yield* RunStore
        const w = openWindow()
        const { job, run } = yield* submitRun(w)
        yield* store.acquire(run.runId)
        const before = yield* store.acquire(run.runId)
        assert.strictEqual(before.claimEpoch, 2)

        const now = w.at(1_000)
        const claim = yield* claimSome(w, "worker-a", now)
        assert.strictEqual(claim.epoch, 3)
        assert.strictEqual(claim.leaseUntil, now + LEASE)
        assert.deepStrictEqual(claim.run, yield* store.get(run.runId), "the run row as the claim left it")
        assert.strictEqual(claim.run.claimEpoch, 3)
        const expected: Job = {
          ...job,
          status: "claimed",
          claimedBy: "worker-a",
          leaseUntil: now + LEASE,
          attempts: 1,
          claimEpoch: 3,
          updatedAt: now
        }
        assert.deepStrictEqual(claim.job, expected)
        assert.deepStrictEqual(yield* queue.get(job.jobId), Option.some(expected))
        yield* claimNone(w, now, "a job under a live lease is not claimable")
        yield* claimNone(w, now + LEASE, "a lease is live through its last millisecond")
      }))

    it.effect("the claim's epoch fences RunStore.commit: writes under an earlier epoch fail with StaleClaimError", () =>
      Effect.gen(function*() {
        const store = yield* RunStore
        const w = openWindow()
        const { run } = yield* submitRun(w)
        const localOwner = yield* store.acquire(run.runId)
        const claim = yield* claimSome(w, "worker-a", w.at(1_000))
        assert.strictEqual(claim.epoch, localOwner.claimEpoch + 1)

        for (const epoch of [0, localOwner.claimEpoch]) {
          const error = yield* failure(commitStep(localOwner, epoch))
          assert.instanceOf(error, StaleClaimError)
          assert.strictEqual(error.epoch, epoch)
          assert.strictEqual(error.currentEpoch, claim.epoch)
        }
        const committed = yield* commitStep(claim.run)
        assert.strictEqual(committed.step, 1)
        assert.strictEqual(committed.claimEpoch, claim.epoch)
        assert.instanceOf(yield* failure(commitStep(committed, localOwner.claimEpoch)), StaleClaimError)
      }))

    it.effect("concurrent claims from many workers hand out every job exactly once", () =>
      Effect.gen(function*() {
        const queue = yield* WorkQueue
        const w = openWindow()
        const n = 24
        const submitted = yield* Effect.forEach(Array.from({ length: n }), () => submitRun(w))
        const now = w.at(1_000)
        const drain = (workerId: string) =>
          Effect.gen(function*() {
            const got: Array<Claim> = []
            while (true) {
              const claim = yield* claimNext(w, workerId, now)
              if (Option.isNone(claim)) return got
              got.push(claim.value)
            }
          })
        const byWorker = yield* Effect.all(
          Array.from({ length: 12 }, (_, i) => drain(`worker-${i}`)),
          { concurrency: "unbounded" }
        )
        const claims = byWorker.flat()
        const ids = claims.map((c) => c.job.jobId)
        assert.strictEqual(ids.length, n, "every job claimed")
        assert.strictEqual(new Set(ids).size, n, "no job claimed twice")
        assert.deepStrictEqual([...ids].sort(), submitted.map((s) => s.job.jobId).sort())
        for (const [i, mine] of byWorker.entries()) {
          for (const claim of mine) {
            assert.strictEqual(claim.epoch, 1)
            assert.strictEqual(claim.job.attempts, 1)
            const stored = yield* jobOf(claim.job.jobId)
            assert.strictEqual(stored.claimedBy, `worker-${i}`, "the stored claimant is the one that got the claim")
            assert.strictEqual(stored.claimEpoch, 1)
          }
        }
        yield* claimNone(w, now, "all jobs are claimed")
        assert.isAtLeast((yield* queue.depth(now)).claimed, n)
      }))

    it.effect("a job is not claimable before its availableAt", () =>
      Effect.gen(function*() {
        const w = openWindow()
        const { job } = yield* submitRun(w, {}, { availableAt: w.at(60_000) })
        yield* claimNone(w, w.at(0), "a delayed job is not claimable when submitted")
        yield* claimNone(w, w.at(59_999), "nor a millisecond before it is due")
        const claim = yield* claimSome(w, "worker-a", w.at(60_000))
        assert.strictEqual(claim.job.jobId, job.jobId)
      }))

    it.effect("within a tenant: higher priority first, then earlier availableAt, then earlier creation", () =>
      Effect.gen(function*() {
        const w = openWindow()
        const jobs: Record<string, readonly [priority: number, availableAt: number]> = {
          a: [0, 3_000],
          b: [5, 4_000],
          c: [5, 2_000],
          d: [0, 1_000],
          e: [0, 1_000],
          f: [-1, 0]
        }
        const idOf = new Map<string, string>()
        for (const [i, [label, [priority, availableAt]]] of Object.entries(jobs).entries()) {
          const { job } = yield* submitRun(w, { createdAt: w.at(i) }, { priority, availableAt: w.at(availableAt) })
          idOf.set(job.jobId, label)
        }
        const order: Array<string> = []
        for (let i = 0; i < 6; i++) {
          const claim = yield* claimSome(w, "worker-a", w.at(10_000))
          order.push(idOf.get(claim.job.jobId)!)
        }
        assert.deepStrictEqual(order, ["c", "b", "d", "e", "a", "f"])
        yield* claimNone(w, w.at(10_000), "every job is claimed")
      }))

    it.effect("equal jobs are claimed in creation order, even when created in the same millisecond", () =>
      Effect.gen(function*() {
        const w = openWindow()
        const submitted: Array<string> = []
        for (let i = 0; i < 6; i++) submitted.push((yield* submitRun(w)).job.jobId)
        const claimed: Array<string> = []
        for (let i = 0; i < 6; i++) claimed.push((yield* claimSome(w, "worker-a", w.at(1_000))).job.jobId)
        assert.deepStrictEqual(claimed, submitted)
      }))

    it.effect("fairness: a tenant with 50 queued jobs of higher priority does not starve a tenant with one", () =>
      Effect.gen(function*() {
        const w = openWindow()
        const busy = w.tenant
        const quiet = w.newTenant()
        for (let i = 0; i < 50; i++) yield* submitRun(w, { tenant: busy }, { priority: 10 })
        const { job } = yield* submitRun(w, { tenant: quiet, createdAt: w.at(1) })
        const first = yield* claimSome(w, "worker-a", w.at(1_000))
        const second = yield* claimSome(w, "worker-b", w.at(1_000))
        assert.include([first.job.jobId, second.job.jobId], job.jobId, "the quiet tenant's job is among the first two claims")
        const third = yield* claimSome(w, "worker-c", w.at(1_000))
        assert.strictEqual(third.job.tenant, busy)
      }))

    it.effect("fairness: when each claim is finished before the next, tenants take turns (least recently claimed first)", () =>
      Effect.gen(function*() {
        const queue = yield* WorkQueue
        const w = openWindow()
        const [a, b, c] = [w.tenant, w.newTenant(), w.newTenant()]
        const name = new Map([[a, "a"], [b, "b"], [c, "c"]])
        for (let i = 0; i < 20; i++) yield* submitRun(w, { tenant: a })
        for (let i = 0; i < 2; i++) yield* submitRun(w, { tenant: b, createdAt: w.at(1) })
        for (let i = 0; i < 2; i++) yield* submitRun(w, { tenant: c, createdAt: w.at(2) })
        const order: Array<string> = []
        for (let i = 0; i < 8; i++) {
          const now = w.at(1_000 + i)
          const claim = yield* claimSome(w, "worker-a", now)
          order.push(name.get(claim.job.tenant)!)
          yield* queue.complete(claim, { now })
        }
        assert.deepStrictEqual(order, ["a", "b", "c", "a", "b", "c", "a", "a"])
      }))

    it.effect("fairness: the tenant with fewer live leases goes first, even if it was claimed more recently", () =>
      Effect.gen(function*() {
        const queue = yield* WorkQueue
        const w = openWindow()
        const [a, b] = [w.tenant, w.newTenant()]
        for (let i = 0; i < 3; i++) yield* submitRun(w, { tenant: a })
        for (let i = 0; i < 3; i++) yield* submitRun(w, { tenant: b, createdAt: w.at(1) })
        const t = w.at(1_000)
        const held = yield* claimSome(w, "worker-a", t)
        assert.strictEqual(held.job.tenant, a)
        const finished = yield* claimSome(w, "worker-b", t)
        assert.strictEqual(finished.job.tenant, b)
        yield* queue.complete(finished, { now: t })
        assert.strictEqual((yield* claimSome(w, "worker-b", t)).job.tenant, b, "a holds a live lease, b holds none")
        assert.strictEqual((yield* claimSome(w, "worker-c", t)).job.tenant, a, "one live lease each: a was claimed longer ago")
      }))

    it.effect("an expired lease makes the job claimable with the next epoch, and fences the old claimant", () =>
      Effect.gen(function*() {
        const queue = yield* WorkQueue
        const store = yield* RunStore
        const w = openWindow()
        const { job } = yield* submitRun(w)
        const t0 = w.at(1_000)
        const old = yield* claimSome(w, "worker-a", t0)
        const committed = yield* commitStep(old.run)

        yield* claimNone(w, t0 + LEASE, "the lease is live until it ends")
        const now = t0 + LEASE + 1
        const fresh = yield* claimSome(w, "worker-b", now)
        assert.strictEqual(fresh.job.jobId, job.jobId)
        assert.strictEqual(fresh.epoch, old.epoch + 1)
        assert.strictEqual(fresh.run.claimEpoch, old.epoch + 1)
        assert.strictEqual(fresh.run.step, 1, "the new owner resumes from the last committed step")
        assert.strictEqual(fresh.job.attempts, 1, "taking over a lapsed lease does not use an attempt")
        assert.strictEqual(fresh.job.claimedBy, "worker-b")
        assert.strictEqual(fresh.job.claimEpoch, fresh.epoch)
        assert.strictEqual(fresh.leaseUntil, now + LEASE)

        yield* fenced(old, now + 1)
        const stale = yield* failure(commitStep(committed, old.epoch))
        assert.instanceOf(stale, StaleClaimError)
        assert.strictEqual(stale.currentEpoch, fresh.epoch)
        const stored = yield* store.get(job.runId)
        assert.strictEqual(stored.step, committed.step, "the stale commit wrote nothing")
        assert.strictEqual(stored.lastSeq, committed.lastSeq)

        yield* commitStep(fresh.run)
        assert.strictEqual(yield* queue.heartbeat(fresh, { now: now + 10, leaseMillis: LEASE }), now + 10 + LEASE)
        yield* queue.complete(fresh, { now: now + 20 })
        assert.strictEqual((yield* jobOf(job.jobId)).status, "done")
      }))

    it.effect("takeovers of lapsed leases use no attempts: a run that outlived ten lost workers still has its retries", () =>
      Effect.gen(function*() {
        const queue = yield* WorkQueue
        const w = openWindow()
        const { job } = yield* submitRun(w, {}, { maxAttempts: 2 })
        let now = w.at(1_000)
        let claim = yield* claimSome(w, "worker-0", now, 1_000)
        assert.strictEqual(claim.job.attempts, 1)
        for (let i = 1; i <= 10; i++) {
          now += 1_001
          const next = yield* claimSome(w, `worker-${i}`, now, 1_000)
          assert.strictEqual(next.job.jobId, job.jobId)
          assert.strictEqual(next.epoch, claim.epoch + 1)
          assert.strictEqual(next.job.attempts, 1, `takeover ${i} used no attempt`)
          claim = next
        }
        const retried = yield* queue.retryLater(claim, { now: now + 10, error: "first real error", delayMillis: 0 })
        assert.strictEqual(retried.status, "queued", "the first real error is retried, not dead-lettered")
        assert.strictEqual(retried.attempts, 1)
        const second = yield* claimSome(w, "worker-a", now + 20)
        assert.strictEqual(second.job.attempts, 2)
        const dead = yield* queue.retryLater(second, { now: now + 30, error: "second real error", delayMillis: 0 })
        assert.strictEqual(dead.status, "dead", "the second real error uses the last attempt")
      }))

    it.effect("a job whose lease lapsed is taken up before newer work of its tenant, even of higher priority", () =>
      Effect.gen(function*() {
        const w = openWindow()
        const other = w.newTenant()
        const { job: lapsed } = yield* submitRun(w, {}, { priority: 0 })
        const t0 = w.at(1_000)
        const old = yield* claimSome(w, "worker-a", t0, 1_000)
        assert.strictEqual(old.job.jobId, lapsed.jobId)
        const { job: newer } = yield* submitRun(w, { createdAt: t0 + 500 }, { priority: 10 })
        const { job: sameAge } = yield* submitRun(w, { createdAt: t0 + 500 }, { priority: 0 })
        const now = t0 + 2_000
        const first = yield* claimSome(w, "worker-b", now)
        assert.strictEqual(first.job.jobId, lapsed.jobId, "the lapsed job first")
        assert.strictEqual(first.epoch, old.epoch + 1)
        const second = yield* claimSome(w, "worker-b", now)
        assert.strictEqual(second.job.jobId, newer.jobId, "then the newer work, by priority")
        const third = yield* claimSome(w, "worker-b", now)
        assert.strictEqual(third.job.jobId, sameAge.jobId)
        const { job: otherJob } = yield* submitRun(w, { tenant: other, createdAt: t0 + 500 })
        const fourth = yield* claimSome(w, "worker-b", now)
        assert.strictEqual(fourth.job.jobId, otherJob.jobId)
        yield* claimNone(w, now, "every job is claimed")
      }))

    it.effect("heartbeat extends a live lease; a lapsed one cannot be renewed, but can still be ended while nobody took it", () =>
      Effect.gen(function*() {
        const queue = yield* WorkQueue
        const w = openWindow()
        yield* submitRun(w)
        const t0 = w.at(1_000)
        const claim = yield* claimSome(w, "worker-a", t0)
        assert.strictEqual(yield* queue.heartbeat(claim, { now: t0 + 20_000, leaseMillis: LEASE }), t0 + 50_000)
        assert.strictEqual((yield* jobOf(claim.job.jobId)).leaseUntil, t0 + 50_000)
        yield* claimNone(w, t0 + 40_000, "a renewed lease outlives the original one")
        assert.strictEqual(
          yield* queue.heartbeat(claim, { now: t0 + 50_000, leaseMillis: LEASE }),
          t0 + 80_000,
          "a lease can be renewed in its last millisecond"
        )

        yield* leaseLost(queue.heartbeat(claim, { now: t0 + 80_001, leaseMillis: LEASE }), claim, "heartbeat after expiry")
        const lapsed = yield* jobOf(claim.job.jobId)
        assert.strictEqual(lapsed.status, "claimed")
        assert.strictEqual(lapsed.leaseUntil, t0 + 80_000, "a refused heartbeat changes nothing")
        yield* queue.complete(claim, { now: t0 + 80_002 })
        assert.strictEqual((yield* jobOf(claim.job.jobId)).status, "done")
        yield* claimNone(w, t0 + 100_000, "a completed job is not claimable")
      }))

    it.effect("a claim is lost when its run is acquired by another owner", () =>
      Effect.gen(function*() {
        const store = yield* RunStore
        const w = openWindow()
        yield* submitRun(w)
        const claim = yield* claimSome(w, "worker-a", w.at(1_000))
        yield* store.acquire(claim.job.runId)
        yield* fenced(claim, w.at(2_000))
        assert.strictEqual((yield* jobOf(claim.job.jobId)).status, "claimed", "refused operations change nothing")
      }))

    it.effect("complete finishes the job for good", () =>
      Effect.gen(function*() {
        const queue = yield* WorkQueue
        const w = openWindow()
        yield* submitRun(w)
        const before = yield* queue.depth(w.at(1_000))
        const claim = yield* claimSome(w, "worker-a", w.at(1_000))
        yield* queue.complete(claim, { now: w.at(2_000) })
        const done = yield* jobOf(claim.job.jobId)
        assert.strictEqual(done.status, "done")
        assert.strictEqual(done.leaseUntil, null)
        assert.strictEqual(done.attempts, 1)
        assert.strictEqual(done.updatedAt, w.at(2_000))
        assert.deepStrictEqual(
          depthDelta(yield* queue.depth(w.at(1_000)), before),
          { queued: -1, ready: -1, claimed: 0, dead: 0 }
        )
        yield* claimNone(w, w.at(3_600_000), "a done job is never claimed again, even after its lease would have ended")
        yield* fenced(claim, w.at(3_000))
      }))

    it.effect("release gives the job back at once without counting the attempt", () =>
      Effect.gen(function*() {
        const queue = yield* WorkQueue
        const w = openWindow()
        const { job } = yield* submitRun(w)
        const claim = yield* claimSome(w, "worker-a", w.at(1_000))
        yield* queue.release(claim, { now: w.at(5_000) })
        assert.deepStrictEqual(yield* jobOf(job.jobId), {
          ...claim.job,
          status: "queued",
          availableAt: w.at(5_000),
          attempts: 0,
          leaseUntil: null,
          claimedBy: null,
          updatedAt: w.at(5_000)
        })
        yield* fenced(claim, w.at(5_001))
        const next = yield* claimSome(w, "worker-b", w.at(5_000))
        assert.strictEqual(next.job.jobId, job.jobId, "claimable at once, by anyone")
        assert.strictEqual(next.epoch, claim.epoch + 1)
        assert.strictEqual(next.job.attempts, 1)
      }))

    it.effect("retryLater requeues with a backoff, and dead-letters with the last error once the attempts are used", () =>
      Effect.gen(function*() {
        const queue = yield* WorkQueue
        const w = openWindow()
        const { job } = yield* submitRun(w, {}, { maxAttempts: 3 })
        const before = yield* queue.depth(w.at(1_000_000))
        let now = w.at(1_000)
        let epoch = 0
        for (const [attempt, delayMillis] of [[1, 1_000], [2, 2_000]] as const) {
          const claim = yield* claimSome(w, "worker-a", now)
          assert.strictEqual(claim.job.jobId, job.jobId)
          assert.strictEqual(claim.job.attempts, attempt)
          assert.isAbove(claim.epoch, epoch)
          epoch = claim.epoch
          const failedAt = now + 100
          const retried = yield* queue.retryLater(claim, { now: failedAt, error: `timeout #${attempt}`, delayMillis })
          const expected: Job = {
            ...claim.job,
            status: "queued",
            availableAt: failedAt + delayMillis,
            leaseUntil: null,
            claimedBy: null,
            lastError: `timeout #${attempt}`,
            updatedAt: failedAt
          }
          assert.deepStrictEqual(retried, expected)
          assert.deepStrictEqual(yield* jobOf(job.jobId), expected)
          yield* fenced(claim, failedAt + 1)
          yield* claimNone(w, failedAt + delayMillis - 1, "not claimable during the backoff")
          now = failedAt + delayMillis
        }
        const last = yield* claimSome(w, "worker-a", now)
        assert.strictEqual(last.job.attempts, 3)
        const dead = yield* queue.retryLater(last, { now: now + 100, error: "timeout #3", delayMillis: 4_000 })
        assert.strictEqual(dead.status, "dead")
        assert.strictEqual(dead.lastError, "timeout #3")
        assert.strictEqual(dead.attempts, 3)
        assert.strictEqual(dead.leaseUntil, null)
        assert.deepStrictEqual(yield* jobOf(job.jobId), dead)
        yield* claimNone(w, w.at(1_000_000), "a dead job is never claimed")
        assert.deepStrictEqual(
          depthDelta(yield* queue.depth(w.at(1_000_000)), before),
          { queued: -1, ready: -1, claimed: 0, dead: 1 }
        )
      }))

    it.effect("deadLetter dead-letters the job at once with its error", () =>
      Effect.gen(function*() {
        const queue = yield* WorkQueue
        const w = openWindow()
        const { job } = yield* submitRun(w, {}, { maxAttempts: 5 })
        const claim = yield* claimSome(w, "worker-a", w.at(1_000))
        yield* queue.deadLetter(claim, { now: w.at(2_000), error: "poison input: 'x' is not a number" })
        const dead = yield* jobOf(job.jobId)
        assert.strictEqual(dead.status, "dead")
        assert.strictEqual(dead.lastError, "poison input: 'x' is not a number")
        assert.strictEqual(dead.attempts, 1)
        assert.strictEqual(dead.leaseUntil, null)
        assert.strictEqual(dead.updatedAt, w.at(2_000))
        yield* claimNone(w, w.at(3_600_000), "a dead job is never claimed")
        yield* fenced(claim, w.at(3_000))
      }))

    it.effect("enqueue adds a queued job to an existing run; on an unknown run it is a defect", () =>
      Effect.gen(function*() {
        const queue = yield* WorkQueue
        const w = openWindow()
        const { job: first, run } = yield* submitRun(w)
        const firstClaim = yield* claimSome(w, "worker-a", w.at(1))
        yield* queue.complete(firstClaim, { now: w.at(5) })

        const second = yield* queue.enqueue(run.runId, { now: w.at(10), availableAt: w.at(100), priority: 3 })
        assert.notStrictEqual(second.jobId, first.jobId)
        assert.deepStrictEqual(second, {
          jobId: second.jobId,
          runId: run.runId,
          tenant: run.tenant,
          priority: 3,
          status: "queued",
          availableAt: w.at(100),
          attempts: 0,
          maxAttempts: second.maxAttempts,
          leaseUntil: null,
          claimedBy: null,
          claimEpoch: null,
          lastError: null,
          createdAt: w.at(10),
          updatedAt: w.at(10)
        })
        assert.isAbove(second.maxAttempts, 0)
        assert.deepStrictEqual((yield* queue.jobsOf(run.runId)).map((j) => j.jobId), [first.jobId, second.jobId])
        yield* claimNone(w, w.at(99), "an enqueued job waits for its availableAt")
        const claim = yield* claimSome(w, "worker-a", w.at(100))
        assert.strictEqual(claim.job.jobId, second.jobId)
        assert.strictEqual(claim.epoch, firstClaim.epoch + 1)
        yield* queue.complete(claim, { now: w.at(101) })

        const third = yield* queue.enqueue(run.runId, { now: w.at(200) })
        assert.strictEqual(third.availableAt, w.at(200), "available at once by default")
        assert.strictEqual(third.priority, 0)
        assert.strictEqual((yield* claimSome(w, "worker-a", w.at(200))).job.jobId, third.jobId)

        const missing = uniqueId("missing")
        const exit = yield* Effect.exit(queue.enqueue(missing, { now: w.at(300) }))
        assert.isTrue(Exit.isFailure(exit) && Cause.isDie(exit.cause), "enqueue on an unknown run dies")
        assert.deepStrictEqual(yield* queue.jobsOf(missing), [])
      }))

    it.effect("a run has at most one job under a live lease; its next job waits", () =>
      Effect.gen(function*() {
        const queue = yield* WorkQueue
        const w = openWindow()
        const { job: first, run } = yield* submitRun(w)
        const second = yield* queue.enqueue(run.runId, { now: w.at(1) })
        const { job: other } = yield* submitRun(w, { createdAt: w.at(2) })

        const t = w.at(1_000)
        assert.strictEqual((yield* claimSome(w, "worker-a", t)).job.jobId, first.jobId)
        assert.strictEqual((yield* claimSome(w, "worker-b", t)).job.jobId, other.jobId, "other runs are not held up")
        yield* claimNone(w, t, "the run's second job waits while its first is claimed")

        const lapse = t + LEASE + 1
        const held = yield* claimSome(w, "worker-c", lapse)
        assert.strictEqual(held.job.jobId, first.jobId, "after the lease lapses, the run's older job is taken again")
        assert.strictEqual((yield* claimSome(w, "worker-d", lapse)).job.jobId, other.jobId)
        yield* claimNone(w, lapse, "the run's second job still waits: one job of a run under a live lease")

        yield* queue.complete(held, { now: lapse + 1 })
        const next = yield* claimSome(w, "worker-a", lapse + 1)
        assert.strictEqual(next.job.jobId, second.jobId)
        assert.strictEqual(next.epoch, held.epoch + 1)
      }))

    it.effect("depth counts queued, ready, claimed and dead jobs", () =>
      Effect.gen(function*() {
        const queue = yield* WorkQueue
        const w = openWindow()
        const [t, later] = [w.at(1_000), w.at(2_000)]
        const before = yield* queue.depth(t)
        const beforeLater = yield* queue.depth(later)
        yield* submitRun(w)
        yield* submitRun(w, {}, { availableAt: later })
        yield* submitRun(w)
        assert.deepStrictEqual(depthDelta(yield* queue.depth(t), before), { queued: 3, ready: 2, claimed: 0, dead: 0 })
        assert.deepStrictEqual(depthDelta(yield* queue.depth(later), beforeLater), { queued: 3, ready: 3, claimed: 0, dead: 0 })

        const a = yield* claimSome(w, "worker-a", t)
        assert.deepStrictEqual(depthDelta(yield* queue.depth(t), before), { queued: 2, ready: 1, claimed: 1, dead: 0 })
        const b = yield* claimSome(w, "worker-b", t)
        yield* queue.deadLetter(b, { now: t, error: "boom" })
        assert.deepStrictEqual(depthDelta(yield* queue.depth(t), before), { queued: 1, ready: 0, claimed: 1, dead: 1 })
        yield* queue.release(a, { now: t })
        assert.deepStrictEqual(depthDelta(yield* queue.depth(t), before), { queued: 2, ready: 1, claimed: 0, dead: 1 })
        assert.deepStrictEqual(depthDelta(yield* queue.depth(later), beforeLater), { queued: 2, ready: 2, claimed: 0, dead: 1 })
      }))

    it.effect("wakeups signal new work: submit, enqueue and release", () =>
      Effect.scoped(Effect.gen(function*() {
        const queue = yield* WorkQueue
        const w = openWindow()
        const seen = yield* Ref.make(0)
        yield* Effect.forkScoped(Stream.runForEach(queue.wakeups, () => Ref.update(seen, (n) => n + 1)))

        let signalled = false
        for (let i = 0; i < 50 && !signalled; i++) {
          const count = yield* Ref.get(seen)
          yield* submitRun(w)
          signalled = yield* exceeds(seen, count, 100)
        }
        assert.isTrue(signalled, "a submit signalled a wakeup")

        const after = (label: string, trigger: Effect.Effect<unknown, unknown, WorkQueue | RunStore>) =>
          Effect.gen(function*() {
            yield* Effect.sleep("50 millis")
            const count = yield* Ref.get(seen)
            yield* trigger
            assert.isTrue(yield* exceeds(seen, count, 5_000), `${label} signalled a wakeup`)
          })
        yield* after("submit", submitRun(w))
        const { run } = yield* submitRun(w)
        yield* after("enqueue", queue.enqueue(run.runId, { now: w.at(2) }))
        const claim = yield* claimSome(w, "worker-a", w.at(3))
        yield* after("release", queue.release(claim, { now: w.at(4) }))
      })))
  })
}
