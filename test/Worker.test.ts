/**
 * The workflow worker's behaviour, on the in-memory queue (driven by the `TestClock`) and on the
 * SQL queue, embedded and on the Postgres server (real clock, short leases): claiming and
 * completing runs within its concurrency, fairness across tenants, priority and delayed jobs,
 * durable wait timers and answers, lost leases (the run stops at once and its stale owner never
 * writes again), graceful shutdown (settle within the grace, release the rest), dead letters and
 * retries, and what `WorkflowWorker.status` reports.
 *
 * Every worker is started like a process, with its own `Runner`, over the store and queue the test
 * shares with an "API" runner that submits and answers runs.
 */
import { assert, describe, it, layer } from "@effect/vitest"
import { Clock, Effect, type Scope } from "effect"
import * as PgliteClient from "../src/layers/sql/PgliteClient.js"
import { Runner, type StartOptions } from "../src/Runner.js"
import { RunStore, type RunStatus } from "../src/services/RunStore.js"
import { type SubmitOptions, WorkQueue } from "../src/services/WorkQueue.js"
import * as Worker from "../src/Worker.js"
import {
  ask,
  broken,
  driftSubmitted,
  executionsByStep,
  executionsOf,
  ghost,
  Probe,
  work
} from "./worker/Graphs.js"
import {
  type Clocked,
  Commits,
  type Env,
  envLayer,
  liveClock,
  memoryBackend,
  settle,
  spawnWorker,
  sqlBackend,
  stop,
  testClock,
  until
} from "./worker/Harness.js"
import { MigratedTemplate } from "./support/Pglite.js"
import * as Postgres from "./support/Postgres.js"

/** The durations of a suite, in ms. */
interface Timing {
  readonly lease: number
  readonly heartbeat: number
  readonly poll: number
  readonly grace: number
  /** A `slow` node that fits well within the grace. */
  readonly short: number
  /** A `slow` node that outlasts a lease check but ends within the test. */
  readonly medium: number
  /** A `slow` node that outlasts the test (it is interrupted). */
  readonly long: number
  /** The timeout of a wait for a human. */
  readonly wait: number
  /** How far in the future a delayed job becomes available. */
  readonly delay: number
}

const onTestClock: Timing = {
  lease: 30_000,
  heartbeat: 10_000,
  poll: 5_000,
  grace: 10_000,
  short: 2_000,
  medium: 600_000,
  long: 86_400_000,
  wait: 600_000,
  delay: 60_000
}

const onRealClock: Timing = {
  lease: 2_000,
  heartbeat: 400,
  poll: 200,
  grace: 2_000,
  short: 300,
  medium: 1_500,
  long: 60_000,
  wait: 2_000,
  delay: 2_500
}

type Body = () => Effect.Effect<void, unknown, Env | Scope.Scope>

interface Setup {
  readonly clock: Clocked
  readonly t: Timing
  readonly test: (name: string, body: Body, timeout?: number) => void
}

const statusOf = (runId: string) =>
  Effect.flatMap(RunStore, (store) => Effect.map(Effect.orDie(store.get(runId)), (run) => run.status))

const allCompleted = (runIds: ReadonlyArray<string>) =>
  Effect.map(Effect.forEach(runIds, statusOf), (statuses) => statuses.every((s) => s === "completed"))

const jobsOf = (runId: string) => Effect.flatMap(WorkQueue, (queue) => queue.jobsOf(runId))

/** Whether the runs completed and the workers are done with all their jobs. */
const allDone = (runIds: ReadonlyArray<string>) =>
  Effect.zipWith(
    allCompleted(runIds),
    Effect.forEach(runIds, jobsOf),
    (completed, jobs) => completed && jobs.flat().every((j) => j.status === "done" || j.status === "dead")
  )

const describeJobs = (runId: string) =>
  Effect.map(jobsOf(runId), (jobs) =>
    JSON.stringify(jobs.map((j) => ({
      status: j.status,
      attempts: j.attempts,
      availableAt: j.availableAt,
      claimedBy: j.claimedBy,
      lastError: j.lastError?.slice(0, 120) ?? null
    }))))

/**
 * Who continued a run after its wait: the epoch of the commit that recorded `RunResumed`, the
 * epochs of the commits after it, and the run's jobs (with the epochs of their claims).
 */
const resumption = (runId: string) =>
  Effect.gen(function*() {
    const store = yield* RunStore
    const commits = yield* Commits
    const events = yield* Effect.orDie(store.events(runId, 0))
    const resumed = events.find((e) => e._tag === "RunResumed")
    const ok = commits.log.filter((c) => c.runId === runId && c.outcome === "ok")
    const at = resumed === undefined ? -1 : ok.findIndex((c) => c.seqs.includes(resumed.seq))
    const jobs = yield* jobsOf(runId)
    return {
      resumedEpoch: at < 0 ? null : ok[at]!.epoch,
      laterEpochs: [...new Set(at < 0 ? [] : ok.slice(at + 1).map((c) => c.epoch))],
      jobs,
      detail: `commits (epoch, first seq, outcome) ${
        JSON.stringify(commits.log.filter((c) => c.runId === runId).map((c) => [c.epoch, c.seqs[0], c.outcome]))
      }; jobs ${JSON.stringify(jobs.map((j) => [j.status, j.claimedBy, j.claimEpoch, j.attempts]))}`
    }
  })

const submitWork = (input: { readonly tag?: string; readonly hold?: number }, options: StartOptions & SubmitOptions = {}) =>
  Effect.map(Worker.submit(work, input, options), (r) => r.run.runId)

const workerSuite = ({ clock, t, test }: Setup) => {
  const base = { lease: t.lease, heartbeat: t.heartbeat, poll: t.poll, shutdownGrace: t.grace }

  test("claims submitted runs and completes them, holding at most `concurrency` runs at once", () =>
    Effect.gen(function*() {
      const probe = yield* Probe
      const worker = yield* spawnWorker(clock, { ...base, workerId: "w1", concurrency: 3 })
      const ids = yield* Effect.forEach(Array.from({ length: 8 }, (_, i) => i), (i) => submitWork({ tag: `r${i}`, hold: t.short }))
      yield* until(clock, allDone(ids), "all 8 runs to complete", { step: clock.kind === "test" ? 500 : 25 })

      assert.strictEqual(probe.maxInflight, 3, "three runs were in flight at once, never more")
      for (const id of ids) {
        assert.deepStrictEqual(
          ["a", "slow", "c"].map((n) => executionsOf(probe, id, n)),
          [1, 1, 1],
          `run ${id}: each node ran once (jobs ${yield* describeJobs(id)}; worker ${JSON.stringify(yield* worker.status)}; ` +
            `log ${JSON.stringify((yield* worker.logs).filter((l) => l.level === "WARN" || l.level === "ERROR").map((l) => l.message.slice(0, 200)))})`
        )
        const jobs = yield* jobsOf(id)
        assert.deepStrictEqual(jobs.map((j) => [j.status, j.attempts, j.claimedBy]), [["done", 1, "w1"]], `run ${id}: its job is done`)
      }
      const status = yield* worker.status
      assert.deepStrictEqual(
        { claimed: status.claimed, completed: status.completed, leasesLost: status.leasesLost, active: status.active, draining: status.draining },
        { claimed: 8, completed: 8, leasesLost: 0, active: [], draining: false }
      )
    }))

  test("an idle worker is woken by a submit, not by its poll", () =>
    Effect.gen(function*() {
      yield* spawnWorker(clock, { ...base, workerId: "w1", poll: "1 hour" })
      yield* settle(clock, 500)
      const runId = yield* submitWork({ tag: "woken" })
      if (clock.kind === "test") {
        yield* settle(clock)
        assert.strictEqual(yield* statusOf(runId), "completed", "the run completed without the clock moving")
      } else {
        yield* until(clock, Effect.map(statusOf(runId), (s) => s === "completed"), "the run to complete", { within: 10_000 })
      }
    }))

  test("per-tenant fairness: one tenant's backlog of 30 runs does not starve another tenant's run", () =>
    Effect.gen(function*() {
      const probe = yield* Probe
      yield* Effect.forEach(Array.from({ length: 30 }, (_, i) => i), (i) => submitWork({ tag: `a${i}` }, { tenant: "tenant-a" }))
      const b = yield* submitWork({ tag: "b" }, { tenant: "tenant-b" })
      yield* spawnWorker(clock, { ...base, workerId: "w1", concurrency: 1 })
      yield* until(clock, Effect.map(statusOf(b), (s) => s === "completed"), "tenant B's run to complete", { step: 100 })
      const order = probe.finished.map((f) => f.tag)
      const position = order.indexOf("b")
      assert.isTrue(position >= 0 && position <= 2, `B's run finished among the first three, not at position ${position + 1}: ${order.join(",")}`)
    }))

  test("higher priority first; a delayed job is not claimed before its availableAt", () =>
    Effect.gen(function*() {
      const probe = yield* Probe
      const now = yield* Clock.currentTimeMillis
      const availableAt = now + t.delay
      const low = yield* submitWork({ tag: "low" }, { priority: 0 })
      const high = yield* submitWork({ tag: "high" }, { priority: 10 })
      const later = yield* submitWork({ tag: "later" }, { priority: 100, availableAt })
      yield* spawnWorker(clock, { ...base, workerId: "w1", concurrency: 1 })
      yield* until(clock, allDone([low, high]), "the available runs to complete", { step: 100 })

      assert.deepStrictEqual(probe.finished.map((f) => f.tag), ["high", "low"], "high priority first, the delayed run not yet")
      const [job] = yield* jobsOf(later)
      assert.deepStrictEqual([job?.status, job?.attempts], ["queued", 0], "the delayed job was never claimed")

      yield* until(clock, allDone([later]), "the delayed run to complete", { step: clock.kind === "test" ? 1_000 : 50 })
      const finished = probe.finished.find((f) => f.tag === "later")!
      assert.isAtLeast(finished.at, availableAt, "the delayed run ran no earlier than its availableAt")
    }))

  test("a wait with a timeout is a durable timer: another worker fires it when it is due and the run goes on", () =>
    Effect.gen(function*() {
      const probe = yield* Probe
      const store = yield* RunStore
      const first = yield* spawnWorker(clock, { ...base, workerId: "w1" })
      const { run } = yield* Worker.submit(ask, { waitMs: t.wait })
      const runId = run.runId
      yield* until(clock, Effect.map(statusOf(runId), (s) => s === "waiting"), "the run to wait", { step: 100 })
      yield* until(clock, Effect.map(jobsOf(runId), (jobs) => jobs[0]?.status === "done"), "its first job to be done", {
        step: 100,
        detail: describeJobs(runId)
      })

      const waiting = yield* Effect.orDie(store.get(runId))
      assert.isNotNull(waiting.waitUntil, "the wait has a due time")
      const dueAt = waiting.waitUntil!
      const jobs = yield* jobsOf(runId)
      assert.deepStrictEqual(
        jobs.map((j) => [j.status, j.availableAt]),
        [["done", run.createdAt], ["queued", dueAt]],
        "the first job is done and the timer is a queued job due when the wait expires"
      )

      yield* first.runner.stop(runId)
      assert.notInclude(yield* first.runner.active, runId, "no process holds the waiting run in memory any more")
      const second = yield* spawnWorker(clock, { ...base, workerId: "w2" })
      if (clock.kind === "test") {
        const now = yield* Clock.currentTimeMillis
        yield* clock.advance(dueAt - now - 1_000)
        assert.strictEqual(yield* statusOf(runId), "waiting", "not fired before it is due")
        assert.strictEqual(executionsOf(probe, runId, "ask"), 1)
      }
      yield* until(clock, allDone([runId]), "the timed-out run to complete", {
        step: clock.kind === "test" ? 10_000 : 50,
        within: clock.kind === "test" ? 2 * t.wait : 20_000,
        detail: Effect.map(Effect.zip(statusOf(runId), describeJobs(runId)), ([status, jobs]) => `run ${status}, jobs ${jobs}`)
      })

      const runner = yield* Runner
      const result = yield* runner.result(ask, runId)
      assert.strictEqual(result.state.decision, "timeout", "the node received the timeout")
      assert.deepStrictEqual([executionsOf(probe, runId, "ask"), executionsOf(probe, runId, "after")], [2, 1])
      assert.isAtLeast(probe.finished.find((f) => f.runId === runId)!.at, dueAt, "it went on no earlier than the due time")
      const fired = yield* resumption(runId)
      const timerEpoch = fired.jobs[1]?.claimEpoch
      assert.deepStrictEqual(
        { jobs: fired.jobs.map((j) => j.status), resumedEpoch: fired.resumedEpoch, laterEpochs: fired.laterEpochs },
        { jobs: ["done", "done"], resumedEpoch: timerEpoch, laterEpochs: [timerEpoch] },
        `the claim of the timer job fired the timeout and finished the run, and nothing else was queued: ${fired.detail}`
      )
      const statuses = [yield* first.status, yield* second.status]
      assert.strictEqual(statuses[0]!.completed + statuses[1]!.completed, 2, "the first job and the timer job were completed by the workers")
    }))

  test("Worker.respond commits the answer to a waiting run and queues it; a worker completes it", () =>
    Effect.gen(function*() {
      const probe = yield* Probe
      const store = yield* RunStore
      const worker = yield* spawnWorker(clock, { ...base, workerId: "w1" })
      const { run } = yield* Worker.submit(ask, {})
      const runId = run.runId
      yield* until(clock, Effect.map(statusOf(runId), (s) => s === "waiting"), "the run to wait", { step: 100 })
      yield* until(clock, Effect.map(jobsOf(runId), (jobs) => jobs[0]?.status === "done"), "its first job to be done", {
        step: 100,
        detail: describeJobs(runId)
      })
      assert.strictEqual((yield* jobsOf(runId)).length, 1, "a wait without a timeout has no timer job")

      const status = yield* (Worker.respond(ask, runId, { _tag: "approve" }) as Effect.Effect<RunStatus, unknown, Runner | WorkQueue | Probe>)
      assert.strictEqual(status, "running")
      const events = yield* Effect.orDie(store.events(runId, 0))
      assert.includeMembers(events.map((e) => e._tag), ["RunResumed"], "the answer is committed")
      assert.strictEqual((yield* jobsOf(runId)).length, 2, "the answered run is queued")

      yield* until(clock, allDone([runId]), "the answered run to complete", { step: 100 })
      const runner = yield* Runner
      assert.strictEqual((yield* runner.result(ask, runId)).state.decision, "approve")
      const resumed = yield* resumption(runId)
      assert.deepStrictEqual(resumed.laterEpochs, [resumed.jobs[1]?.claimEpoch], `the queued job's claim finished the run: ${resumed.detail}`)
      assert.deepStrictEqual([executionsOf(probe, runId, "ask"), executionsOf(probe, runId, "after")], [2, 1])
      assert.deepStrictEqual((yield* jobsOf(runId)).map((j) => j.status), ["done", "done"])
      assert.strictEqual((yield* worker.status).completed, 2)
    }))

  test("a worker keeps no run in memory once its job is done: a due wait is fired under the claim of its timer job", () =>
    Effect.gen(function*() {
      const worker = yield* spawnWorker(clock, { ...base, workerId: "w1" })
      const { run } = yield* Worker.submit(ask, { waitMs: t.wait })
      const runId = run.runId
      yield* until(clock, Effect.map(jobsOf(runId), (jobs) => jobs[0]?.status === "done"), "the first job to be done", {
        step: 100,
        detail: describeJobs(runId)
      })
      const heldInMemory = (yield* worker.runner.active).includes(runId)

      yield* until(clock, allDone([runId]), "the timed-out run to complete", {
        step: clock.kind === "test" ? 10_000 : 50,
        within: clock.kind === "test" ? 2 * t.wait : 20_000,
        detail: Effect.map(Effect.zip(statusOf(runId), describeJobs(runId)), ([status, jobs]) => `run ${status}, jobs ${jobs}`)
      })
      const fired = yield* resumption(runId)
      const timerEpoch = fired.jobs[1]?.claimEpoch
      assert.deepStrictEqual(
        { heldInMemory, jobs: fired.jobs.length, resumedEpoch: fired.resumedEpoch, laterEpochs: fired.laterEpochs },
        { heldInMemory: false, jobs: 2, resumedEpoch: timerEpoch, laterEpochs: [timerEpoch] },
        `after its job, the worker's runner ${heldInMemory ? "still held" : "no longer held"} the waiting run; ${fired.detail}`
      )
    }))

  test("a run taken over by another owner is stopped at once, and its stale owner never writes again", () =>
    Effect.gen(function*() {
      const probe = yield* Probe
      const store = yield* RunStore
      const commits = yield* Commits
      const worker = yield* spawnWorker(clock, { ...base, workerId: "w1" })
      const runId = yield* submitWork({ tag: "taken", hold: t.medium })
      yield* until(clock, Effect.sync(() => probe.inflight === 1), "the slow node to be in flight", { step: 100 })

      const before = yield* Effect.orDie(store.get(runId))
      const mark = commits.log.length
      const taken = yield* Effect.orDie(store.acquire(runId))
      assert.strictEqual(taken.claimEpoch, before.claimEpoch + 1)
      const tookAt = yield* Clock.currentTimeMillis
      yield* until(
        clock,
        Effect.sync(() => probe.interrupted.includes(`${runId} slow`)),
        "the in-flight node to be interrupted",
        { step: clock.kind === "test" ? 1_000 : 25, within: clock.kind === "test" ? t.lease : 10_000 }
      )
      if (clock.kind === "test") {
        assert.isAtMost((yield* Clock.currentTimeMillis) - tookAt, t.heartbeat + 1_000, "stopped at the next heartbeat")
      }
      const status = yield* worker.status
      assert.deepStrictEqual([status.leasesLost, status.completed, status.active], [1, 0, []])
      const logs = yield* worker.logs
      const lost = logs.filter((l) => l.level === "WARN" && l.message.includes("claim lost"))
      assert.isTrue(lost.some((l) => l.annotations["event"] === "ClaimLost" && l.annotations["runId"] === runId), "a ClaimLost warning is logged")
      assert.strictEqual(lost.length, 1, "one WARN per lost claim")
      assert.deepStrictEqual(logs.filter((l) => l.level === "ERROR").map((l) => l.message), [], "a lost claim is no ERROR")

      yield* clock.advance(t.medium + 1_000)
      const after = commits.log.slice(mark).filter((c) => c.runId === runId)
      assert.deepStrictEqual(
        after.filter((c) => c.epoch <= before.claimEpoch),
        [],
        "no commit was even attempted under the old epoch (nor would one have passed)"
      )
      assert.isTrue(after.every((c) => c.epoch > taken.claimEpoch), "later writes come from later claims")
    }))

  test("an expired lease is claimed by another worker, which resumes from the last committed step; the stalled one stops", () =>
    Effect.gen(function*() {
      const probe = yield* Probe
      const store = yield* RunStore
      const commits = yield* Commits
      const stalled = yield* spawnWorker(clock, { ...base, workerId: "A", concurrency: 1, poll: "1 hour", heartbeat: 1.5 * t.lease })
      const runId = yield* submitWork({ tag: "stalled", hold: t.long })
      yield* until(clock, Effect.sync(() => probe.inflight === 1), "the slow node to be in flight", { step: 100 })
      const epochA = (yield* Effect.orDie(store.get(runId))).claimEpoch

      yield* clock.advance(t.lease + (clock.kind === "test" ? 1_000 : 100))
      const mark = commits.log.length
      const rescuer = yield* spawnWorker(clock, { ...base, workerId: "B" })
      yield* until(clock, allDone([runId]), "B to complete the run", { step: 100 })
      yield* until(
        clock,
        Effect.map(stalled.status, (s) => s.leasesLost > 0),
        "A to find its lease lost",
        { within: clock.kind === "test" ? t.lease : 10_000 }
      )

      assert.isTrue(probe.interrupted.includes(`${runId} slow`), "A's in-flight node was interrupted")
      assert.deepStrictEqual(["a", "slow", "c"].map((n) => executionsOf(probe, runId, n)), [1, 2, 1], "a committed step never ran again")
      const after = commits.log.slice(mark).filter((c) => c.runId === runId)
      assert.isTrue(after.length > 0 && after.every((c) => c.epoch > epochA && c.outcome === "ok"), "every commit after the takeover is B's")
      const [job, ...others] = yield* jobsOf(runId)
      assert.deepStrictEqual([job?.status, job?.attempts, job?.claimedBy, others.length], ["done", 1, "B", 0], "the takeover used no attempt")
      assert.deepStrictEqual([(yield* rescuer.status).completed, (yield* stalled.status).completed], [1, 0])
      assert.strictEqual((yield* stalled.status).leasesLost, 1, "A counts its one lost claim once")
      const logs = yield* stalled.logs
      const lost = logs.filter((l) => l.level === "WARN" && l.message.includes("claim lost"))
      assert.strictEqual(lost.length, 1, "A logged once that it lost the claim")
      assert.deepStrictEqual(logs.filter((l) => l.level === "ERROR").map((l) => l.message), [], "a lost claim is no ERROR")
    }))

  test("a stalled owner whose node ends after the takeover gets its commit rejected and writes nothing", () =>
    Effect.gen(function*() {
      const probe = yield* Probe
      const store = yield* RunStore
      const commits = yield* Commits
      const stalled = yield* spawnWorker(clock, { ...base, workerId: "A", concurrency: 1, poll: "1 hour", heartbeat: "1 hour" })
      const runId = yield* submitWork({ tag: "stalled", hold: 2 * t.lease })
      yield* until(clock, Effect.sync(() => probe.inflight === 1), "the slow node to be in flight", { step: 100 })
      const epochA = (yield* Effect.orDie(store.get(runId))).claimEpoch

      yield* clock.advance(t.lease + (clock.kind === "test" ? 1_000 : 100))
      const mark = commits.log.length
      yield* spawnWorker(clock, { ...base, workerId: "B" })
      yield* until(clock, allDone([runId]), "B to complete the run", { step: 100 })
      yield* until(
        clock,
        Effect.sync(() => commits.log.slice(mark).some((c) => c.runId === runId && c.epoch === epochA)),
        "A's late commit",
        { within: clock.kind === "test" ? t.lease : 10_000 }
      )
      yield* settle(clock)

      const fromA = commits.log.slice(mark).filter((c) => c.runId === runId && c.epoch === epochA)
      assert.deepStrictEqual(fromA.map((c) => c.outcome), ["StaleClaimError"], "A's late commit is rejected")
      const events = yield* Effect.orDie(store.events(runId, 0))
      assert.deepStrictEqual(events.map((e) => e.seq), events.map((_, i) => i + 1), "the event log has no gap and no duplicate")
      assert.deepStrictEqual(["a", "c"].map((n) => executionsOf(probe, runId, n)), [1, 1])
      const logs = yield* stalled.logs
      const lost = logs.filter((l) => l.level === "WARN" && l.message.includes("claim lost"))
      assert.strictEqual(lost.length, 1, "A logged once that it lost the claim")
      assert.deepStrictEqual(logs.filter((l) => l.level === "ERROR").map((l) => l.message), [], "a lost claim is no ERROR")
      const status = yield* stalled.status
      assert.strictEqual(status.completed, 0, "A does not count the run as completed")
      assert.strictEqual(status.leasesLost, 1, "A counts the claim it lost")
    }))

  test("shutdown lets an in-flight run settle within the grace period", () =>
    Effect.gen(function*() {
      const probe = yield* Probe
      const worker = yield* spawnWorker(clock, { ...base, workerId: "w1" })
      const runId = yield* submitWork({ tag: "settles", hold: t.short })
      yield* until(clock, Effect.sync(() => probe.inflight === 1), "the slow node to be in flight", { step: 100 })

      const took = yield* stop(clock, worker, { step: 500, limit: 3 * t.grace })
      assert.strictEqual(yield* statusOf(runId), "completed", "the run settled before the worker stopped")
      const jobs = yield* jobsOf(runId)
      assert.deepStrictEqual(jobs.map((j) => [j.status, j.attempts]), [["done", 1]])
      assert.deepStrictEqual(probe.interrupted, [])
      const status = yield* worker.status
      assert.deepStrictEqual([status.draining, status.completed, status.active], [true, 1, []])
      if (clock.kind === "test") {
        assert.isBelow(took, t.grace, `the shutdown ended once the run settled (it took ${took} ms of a ${t.grace} ms grace)`)
      }
    }))

  test("shutdown releases a run that outlasts the grace; another worker resumes it from its last committed step", () =>
    Effect.gen(function*() {
      const probe = yield* Probe
      const commits = yield* Commits
      const first = yield* spawnWorker(clock, { ...base, workerId: "w1" })
      const runId = yield* submitWork({ tag: "released", hold: t.long })
      yield* until(clock, Effect.sync(() => probe.inflight === 1), "the slow node to be in flight", { step: 100 })

      yield* stop(clock, first, { limit: 3 * t.grace })
      assert.isTrue(probe.interrupted.includes(`${runId} slow`), "the in-flight node was interrupted")
      assert.strictEqual(yield* statusOf(runId), "running")
      const [released] = yield* jobsOf(runId)
      assert.deepStrictEqual(
        [released?.status, released?.attempts, released?.claimedBy, released?.leaseUntil],
        ["queued", 0, null, null],
        "the job is queued again and the released claim is not counted as an attempt"
      )

      const second = yield* spawnWorker(clock, { ...base, workerId: "w2" })
      yield* until(clock, allDone([runId]), "the second worker to complete the run", { step: 100 })
      assert.deepStrictEqual(["a", "slow", "c"].map((n) => executionsOf(probe, runId, n)), [1, 2, 1], "a committed step never ran again")
      assert.deepStrictEqual(executionsByStep(probe, runId, "a").map((e) => e.count), [1])
      const okSteps = commits.log.filter((c) => c.runId === runId && c.outcome === "ok").map((c) => c.expectedStep)
      assert.strictEqual(new Set(okSteps).size, okSteps.length, "no step was committed twice")
      const jobs = yield* jobsOf(runId)
      assert.deepStrictEqual(jobs.map((j) => [j.status, j.attempts, j.claimedBy]), [["done", 1, "w2"]])
      assert.strictEqual((yield* second.status).completed, 1)
    }))

  test("a job whose graph is not registered is dead-lettered with a message naming the graph", () =>
    Effect.gen(function*() {
      const worker = yield* spawnWorker(clock, { ...base, workerId: "w1" })
      const { run } = yield* Worker.submit(ghost, {})
      yield* until(
        clock,
        Effect.map(jobsOf(run.runId), (jobs) => jobs[0]?.status === "dead"),
        "the job to be dead-lettered",
        { step: 100, detail: describeJobs(run.runId) }
      )
      const [job] = yield* jobsOf(run.runId)
      assert.include(job?.lastError ?? "", `graph "ghost"`)
      assert.strictEqual(job?.attempts, 1)
      assert.strictEqual(yield* statusOf(run.runId), "pending", "the run was never started")
      const status = yield* worker.status
      assert.deepStrictEqual([status.claimed, status.completed, status.active], [1, 0, []])
    }))

  test("a node defect fails the run (its error stored); the job is done, not retried", () =>
    Effect.gen(function*() {
      const probe = yield* Probe
      const store = yield* RunStore
      yield* spawnWorker(clock, { ...base, workerId: "w1" })
      const { run } = yield* Worker.submit(broken, {}, { maxAttempts: 3 })
      yield* until(clock, Effect.map(statusOf(run.runId), (s) => s === "failed"), "the run to fail", { step: 100 })
      yield* settle(clock)
      const failed = yield* Effect.orDie(store.get(run.runId))
      assert.include(failed.error?.message ?? "", "boom in node")
      const jobs = yield* jobsOf(run.runId)
      assert.deepStrictEqual(jobs.map((j) => [j.status, j.attempts, j.lastError]), [["done", 1, null]])
      assert.strictEqual(executionsOf(probe, run.runId, "boom"), 1)
    }))

  test("a job the worker cannot take up is retried with backoff and dead-lettered after maxAttempts, with its last error", () =>
    Effect.gen(function*() {
      yield* spawnWorker(clock, { ...base, workerId: "w1" })
      const { run } = yield* Worker.submit(driftSubmitted, {}, { maxAttempts: 2 })
      const runId = run.runId
      yield* until(
        clock,
        Effect.map(jobsOf(runId), (jobs) => jobs[0]?.attempts === 1 && jobs[0].status === "queued"),
        "the first attempt to be given back",
        { step: 100, detail: describeJobs(runId) }
      )
      const [retried] = yield* jobsOf(runId)
      assert.include(retried?.lastError ?? "", "GraphMismatchError")
      assert.strictEqual(retried!.availableAt - retried!.updatedAt, 2_000, "the retry waits its backoff")

      yield* until(
        clock,
        Effect.map(jobsOf(runId), (jobs) => jobs[0]?.status === "dead"),
        "the job to be dead-lettered",
        { step: clock.kind === "test" ? 500 : 50, detail: describeJobs(runId) }
      )
      const [dead] = yield* jobsOf(runId)
      assert.deepStrictEqual([dead?.attempts, dead?.maxAttempts], [2, 2])
      assert.include(dead?.lastError ?? "", "GraphMismatchError")
    }))
}

describe("WorkflowWorker (memory, TestClock)", () => {
  const test: Setup["test"] = (name, body, timeout) =>
    it.effect(name, () => Effect.scoped(body()).pipe(Effect.provide(envLayer(memoryBackend))), timeout)

  workerSuite({ clock: testClock, t: onTestClock, test })

  test("closing an idle worker does not wait out the shutdown grace", () =>
    Effect.gen(function*() {
      const worker = yield* spawnWorker(testClock, { workerId: "w1", shutdownGrace: "1 hour" })
      yield* settle(testClock)
      const took = yield* stop(testClock, worker, { step: 60_000, limit: 2 * 3_600_000 })
      assert.strictEqual(took, 0, `the shutdown waited ${took} ms of clock time with nothing in flight`)
    }))

  test("Worker.respond in the worker's own process queues the answered run instead of running it outside a claim", () =>
    Effect.gen(function*() {
      const worker = yield* spawnWorker(testClock, { workerId: "w1", lease: onTestClock.lease, poll: onTestClock.poll })
      const { run } = yield* Worker.submit(ask, {})
      const runId = run.runId
      yield* until(testClock, Effect.map(jobsOf(runId), (jobs) => jobs[0]?.status === "done"), "the first job to be done", {
        step: 100,
        detail: describeJobs(runId)
      })
      const status = yield* (Worker.respond(ask, runId, { _tag: "approve" }).pipe(
        Effect.provideService(Runner, worker.runner)
      ) as Effect.Effect<RunStatus, unknown, WorkQueue | Probe>)
      yield* until(testClock, allDone([runId]), "the answered run to complete", { step: 100 })
      yield* settle(testClock)
      const resumed = yield* resumption(runId)
      assert.deepStrictEqual(
        { status, jobs: resumed.jobs.length, laterEpochs: resumed.laterEpochs },
        { status: "running", jobs: 2, laterEpochs: [resumed.jobs[1]?.claimEpoch] },
        `respond returned ${status}; ${resumed.detail}`
      )
    }))

  test("a defect outside the nodes (the store dies on commit) is retried later and dead-lettered after maxAttempts", () =>
    Effect.gen(function*() {
      const commits = yield* Commits
      const { run } = yield* Worker.submit(work, { tag: "poisoned" }, { maxAttempts: 3 })
      const runId = run.runId
      commits.poisoned.add(runId)
      yield* spawnWorker(testClock, { workerId: "w1", lease: onTestClock.lease })
      yield* until(
        testClock,
        Effect.map(jobsOf(runId), (jobs) => jobs[0]?.status === "dead"),
        "the job to be dead-lettered",
        { step: 1_000, within: 5 * 60_000, detail: describeJobs(runId) }
      )
      const [job] = yield* jobsOf(runId)
      assert.deepStrictEqual([job?.attempts, job?.status], [3, "dead"])
      assert.strictEqual(commits.log.filter((c) => c.runId === runId).length, 3, "one commit attempt per job attempt")
      assert.include(job?.lastError ?? "", "disk on fire", "the last error is the failure itself")
    }))
})

layer(MigratedTemplate, { timeout: "120 seconds", excludeTestServices: true })("WorkflowWorker (embedded SQL, real clock)", (it) => {
  workerSuite({
    clock: liveClock,
    t: onRealClock,
    test: (name, body, timeout) =>
      it.effect(
        name,
        () => Effect.scoped(body()).pipe(Effect.provide(envLayer(sqlBackend(PgliteClient.layerFromTemplate())))),
        timeout ?? 30_000
      )
  })
})

describe.runIf(Postgres.available)("WorkflowWorker (Postgres server, real clock)", () => {
  workerSuite({
    clock: liveClock,
    t: onRealClock,
    test: (name, body, timeout) =>
      it.live(
        name,
        () => Effect.scoped(body()).pipe(Effect.provide(envLayer(sqlBackend(Postgres.migratedDatabase("fg_worker"))))),
        timeout ?? 30_000
      )
  })
})
