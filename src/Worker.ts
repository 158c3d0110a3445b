/**
 * The workflow worker: claims jobs from the `WorkQueue` (woken by notifications, with a jittered
 * poll as the fallback), runs each claimed run through the `Runner` under its claim's epoch while a
 * scoped fiber heartbeats the lease, and stops a run at once when its lease is lost. Closing the
 * layer stops claiming, gives in-flight runs a grace period to settle and releases the rest.
 */
import { Cause, Clock, Config, Context, Deferred, Duration, Effect, Fiber, FiberMap, Layer, Option, Random, Stream } from "effect"
import { StaleClaimError } from "./Errors.js"
import type { CompiledGraph } from "./Graph.js"
import * as Control from "./internal/Control.js"
import type { HumanResponse } from "./Node.js"
import { type LoadError, type ResponseTarget, type RunHandle, Runner, type StartOptions } from "./Runner.js"
import { GraphRegistry } from "./services/GraphRegistry.js"
import { RunStore, terminalStatuses } from "./services/RunStore.js"
import { type Claim, LeaseLostError, type SubmitOptions, WorkQueue } from "./services/WorkQueue.js"

/** How a worker claims and holds work. */
export interface Options {
  /** Identifies this worker in claims (default: host name and pid). */
  readonly workerId?: string
  /** Runs held at once (default 4). */
  readonly concurrency?: number
  /** How long a claim lasts without a heartbeat (default 30 s). */
  readonly lease?: Duration.DurationInput
  /** How often a held claim is renewed (default a third of the lease). */
  readonly heartbeat?: Duration.DurationInput
  /** The fallback poll when no notification arrives (default 2 s, jittered). */
  readonly poll?: Duration.DurationInput
  /** On shutdown, how long in-flight runs may take to settle before their jobs are released (default 10 s). */
  readonly shutdownGrace?: Duration.DurationInput
}

/** What a worker reports about itself (for `/readyz` and metrics). */
export interface WorkerStatus {
  readonly workerId: string
  readonly active: ReadonlyArray<string>
  readonly claimed: number
  readonly completed: number
  readonly leasesLost: number
  readonly draining: boolean
}

/** The running worker. */
export class WorkflowWorker extends Context.Tag("fibergraph/WorkflowWorker")<WorkflowWorker, {
  readonly status: Effect.Effect<WorkerStatus>
}>() {}

/** Builds a worker that runs until its scope closes. */
export const make = (options: Options = {}) =>
  Effect.gen(function*() {
    const queue = yield* WorkQueue
    const runner = yield* Runner
    const registry = yield* GraphRegistry
    const store = yield* RunStore
    const host = yield* Config.string("HOSTNAME").pipe(Config.withDefault("worker"), Effect.orElseSucceed(() => "worker"))
    const workerId = options.workerId ?? `${host}-${process.pid}`
    const concurrency = Math.max(1, options.concurrency ?? 4)
    const leaseMillis = Duration.toMillis(options.lease ?? "30 seconds")
    const heartbeatMillis = options.heartbeat === undefined ? Math.max(10, Math.floor(leaseMillis / 3)) : Duration.toMillis(options.heartbeat)
    const pollMillis = Duration.toMillis(options.poll ?? "2 seconds")
    const graceMillis = Duration.toMillis(options.shutdownGrace ?? "10 seconds")

    const stats = { claimed: 0, completed: 0, leasesLost: 0, draining: false }
    const held = new Map<string, Claim>()
    /** Jobs whose lost lease the heartbeat already counted. */
    const lostCounted = new Set<string>()
    const fibers = yield* FiberMap.make<string>()
    const slots = yield* Effect.makeSemaphore(concurrency)
    let wake = yield* Deferred.make<void>()
    const signal = Effect.suspend(() => Deferred.succeed(wake, undefined))

    const now = Clock.currentTimeMillis

    /** Logs a lost claim once per job (the heartbeat, the runner and the store may each notice it). */
    const claimLost = (claim: Claim, detail: string) =>
      Effect.suspend(() => {
        if (lostCounted.has(claim.job.jobId)) return Effect.void
        lostCounted.add(claim.job.jobId)
        stats.leasesLost++
        return Effect.logWarning("claim lost", detail).pipe(
          Effect.annotateLogs({ event: "ClaimLost", runId: claim.job.runId, jobId: claim.job.jobId, epoch: claim.epoch })
        )
      })

    /** Runs one claimed job to a settled run (or a lost lease), then completes, re-queues or dead-letters it. */
    const work = (claim: Claim) =>
      Effect.gen(function*() {
        const run = claim.run
        const entry = yield* Effect.either(registry.get(run.graphId, run.graphVersion))
        if (entry._tag === "Left") {
          yield* Effect.logError(entry.left.message)
          return yield* queue.deadLetter(claim, { now: yield* now, error: entry.left.message })
        }
        const graph = entry.right.graph
        const at = yield* now
        const due = run.status !== "waiting" || Control.due(run, at) !== undefined
        if (terminalStatuses.has(run.status) || !due) return yield* queue.complete(claim, { now: at })

        const lost = yield* Deferred.make<string>()
        let leaseUntil = claim.leaseUntil
        const lostClaim = (detail: string) =>
          new StaleClaimError({
            runId: run.runId,
            epoch: claim.epoch,
            currentEpoch: claim.epoch,
            expectedStep: run.step,
            currentStep: run.step,
            reason: detail
          })
        /** Checked before every step: no node starts once the lease has run out or was lost. */
        const guard = Effect.gen(function*() {
          const detail = yield* Deferred.poll(lost)
          if (Option.isSome(detail)) return yield* Effect.fail(lostClaim(yield* detail.value))
          if ((yield* now) >= leaseUntil) return yield* Effect.fail(lostClaim("the lease ran out before the step started"))
        })
        /** Renews the lease; a renewal that cannot reach the store is retried until the lease runs out, then the claim is lost. */
        const renew = Effect.gen(function*() {
          const at = yield* now
          if (at >= leaseUntil) {
            return yield* Effect.fail(
              new LeaseLostError({
                jobId: claim.job.jobId,
                runId: run.runId,
                epoch: claim.epoch,
                detail: "the lease ran out before it could be renewed"
              })
            )
          }
          leaseUntil = yield* queue.heartbeat(claim, { now: at, leaseMillis }).pipe(
            Effect.catchAllDefect((defect) =>
              Effect.as(Effect.logWarning("lease renewal failed; retrying until the lease runs out", defect), leaseUntil)
            )
          )
        })
        const heartbeat = yield* renew.pipe(
          Effect.delay(heartbeatMillis),
          Effect.forever,
          Effect.catchTag("LeaseLostError", (error) =>
            Effect.gen(function*() {
              yield* claimLost(claim, error.message)
              yield* Deferred.succeed(lost, error.message)
              yield* runner.stop(run.runId)
            })),
          Effect.fork
        )
        const settled = yield* Effect.gen(function*() {
          yield* runner.adopt(graph, run, { guard }).pipe(Effect.provide(entry.right.context)) as Effect.Effect<
            RunHandle<unknown>,
            LoadError | StaleClaimError
          >
          return yield* Effect.raceFirst(
            Effect.map(
              runner.result(graph, run.runId, run.status === "waiting" ? { afterSeq: run.lastSeq } : {}),
              Option.some
            ),
            Effect.as(Deferred.await(lost), Option.none())
          )
        }).pipe(Effect.ensuring(Fiber.interrupt(heartbeat)))
        if (Option.isNone(settled)) return
        const result = settled.value
        if (result.claimLost === true) return yield* claimLost(claim, result.stopped ?? "the run's claim moved to another owner")
        if (result.status === "waiting") {
          yield* runner.stop(run.runId)
          const stored = yield* Effect.orDie(store.get(run.runId))
          const at = Control.nextDue(stored)
          if (at !== null) yield* queue.enqueue(run.runId, { now: yield* now, availableAt: at })
        } else if (!terminalStatuses.has(result.status)) {
          return yield* Effect.die(new Error(result.stopped ?? `the run's actor stopped while the run was ${result.status}`))
        }
        yield* queue.complete(claim, { now: yield* now })
        stats.completed++
      }).pipe(
        Effect.catchTags({
          LeaseLostError: (error) => claimLost(claim, error.message),
          StaleClaimError: (error) => claimLost(claim, error.message)
        }),
        Effect.catchAllCause((cause) =>
          Effect.gen(function*() {
            yield* Effect.logError(`job ${claim.job.jobId} of run ${claim.job.runId} failed`, cause)
            const delayMillis = Math.min(60_000, 1000 * 2 ** Math.min(10, claim.job.attempts))
            const squashed = Cause.squash(cause) as { readonly _tag?: unknown; readonly message?: unknown }
            const message = typeof squashed?.message === "string" ? squashed.message : String(squashed)
            const error = typeof squashed?._tag === "string" ? `${squashed._tag}: ${message}` : message
            yield* queue.retryLater(claim, { now: yield* now, error, delayMillis }).pipe(Effect.ignore)
          })
        ),
        Effect.ensuring(Effect.sync(() => {
          held.delete(claim.job.jobId)
          lostCounted.delete(claim.job.jobId)
        })),
        Effect.annotateLogs({ workerId, runId: claim.job.runId, jobId: claim.job.jobId }),
        Effect.withSpan("fibergraph.worker.job", { attributes: { "fibergraph.run_id": claim.job.runId } })
      )

    /** Claims while a slot is free; sleeps until a notification or the jittered poll when nothing is claimable. */
    const loop = Effect.gen(function*() {
      while (!stats.draining) {
        yield* slots.take(1)
        const claim = yield* Effect.flatMap(now, (at) => queue.claim(workerId, { now: at, leaseMillis })).pipe(
          Effect.catchAllCause((cause) =>
            Effect.as(
              Effect.logWarning("claiming failed; retrying after the poll interval", cause),
              Option.none()
            )
          )
        )
        if (Option.isSome(claim)) {
          stats.claimed++
          held.set(claim.value.job.jobId, claim.value)
          yield* FiberMap.run(fibers, claim.value.job.jobId, Effect.ensuring(work(claim.value), slots.release(1)))
          continue
        }
        yield* slots.release(1)
        const jitter = yield* Random.nextRange(0.5, 1.5)
        yield* Effect.raceFirst(Deferred.await(wake), Effect.sleep(Math.round(pollMillis * jitter)))
        wake = yield* Deferred.make<void>()
      }
    })

    yield* queue.wakeups.pipe(
      Stream.runForEach(() => signal),
      Effect.catchAllCause((cause) => Effect.logWarning("wake-up notifications failed; listening again", cause)),
      Effect.zipRight(Effect.sleep("1 second")),
      Effect.forever,
      Effect.forkScoped
    )

    const loopFiber = yield* Effect.forkScoped(loop)

    yield* Effect.addFinalizer(() =>
      Effect.gen(function*() {
        stats.draining = true
        yield* Fiber.interrupt(loopFiber)
        yield* Effect.interruptible(FiberMap.awaitEmpty(fibers)).pipe(Effect.timeout(graceMillis), Effect.ignore)
        const remaining = [...held.values()]
        for (const claim of remaining) {
          yield* runner.stop(claim.job.runId)
          yield* FiberMap.remove(fibers, claim.job.jobId)
          yield* Effect.flatMap(now, (at) => queue.release(claim, { now: at })).pipe(Effect.ignore)
        }
        yield* Effect.logInfo(`worker ${workerId} stopped; released ${remaining.length} job(s)`)
      })
    )

    return WorkflowWorker.of({
      status: Effect.sync(() => ({
        workerId,
        active: [...held.values()].map((c) => c.job.runId),
        claimed: stats.claimed,
        completed: stats.completed,
        leasesLost: stats.leasesLost,
        draining: stats.draining
      }))
    })
  })

/** The worker as a layer: it claims from the `WorkQueue` and runs graphs from the `GraphRegistry` on the `Runner`. */
export const layer = (
  options: Options = {}
): Layer.Layer<WorkflowWorker, never, WorkQueue | Runner | GraphRegistry | RunStore> =>
  Layer.scoped(WorkflowWorker, make(options))

/** Accepts a new run into the queue (idempotent by run id or idempotency key); a worker will run it. */
export const submit = <S>(
  graph: CompiledGraph & { readonly state: { readonly schema: { readonly Type: S } } },
  input: Partial<S>,
  options: StartOptions & SubmitOptions = {}
) =>
  Effect.gen(function*() {
    const runner = yield* Runner
    const queue = yield* WorkQueue
    const prepared = yield* runner.prepare(graph, input, options)
    return yield* queue.submit(prepared.run, prepared.events, prepared.checkpoint, options)
  })

/** Answers a waiting run and, when that lets it continue, queues it for a worker. */
export const respond = (
  graph: CompiledGraph,
  runId: string,
  response: HumanResponse,
  target?: ResponseTarget
) =>
  Effect.gen(function*() {
    const runner = yield* Runner
    const queue = yield* WorkQueue
    const status = yield* runner.answer(graph, runId, response, target)
    if (status === "running") yield* queue.enqueue(runId, { now: yield* Clock.currentTimeMillis })
    return status
  })
