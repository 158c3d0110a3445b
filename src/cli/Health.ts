/**
 * The worker's HTTP endpoints, on `@effect/platform`'s router and the Node HTTP server:
 * `/healthz` (the process is up), `/readyz` (the store answers `SELECT 1` and the worker is
 * running and not draining; 503 otherwise, with the worker's status as JSON) and `/metrics`
 * (every Effect metric of the process as Prometheus text, with the worker's own counters and
 * the queue's depth).
 */
import * as HttpRouter from "@effect/platform/HttpRouter"
import * as HttpServer from "@effect/platform/HttpServer"
import * as HttpServerResponse from "@effect/platform/HttpServerResponse"
import * as NodeHttpServer from "@effect/platform-node/NodeHttpServer"
import { Cause, Clock, Duration, Effect, Layer, Metric, Option } from "effect"
import { createServer } from "node:http"
import type * as Store from "../layers/Store.js"
import type { WorkQueue } from "../services/WorkQueue.js"
import type { WorkerStatus } from "../Worker.js"
import * as Prometheus from "./Prometheus.js"

/** What the endpoints look at. */
export interface Probe {
  readonly store: Store.Store["Type"]
  readonly queue: WorkQueue["Type"]
  /** The worker's status; `None` while it starts. */
  readonly worker: Effect.Effect<Option.Option<WorkerStatus>>
  /** Runs the worker holds at most. */
  readonly concurrency: number
}

/** How long `/readyz` waits for the store's `SELECT 1`. */
export const storeCheckTimeout = Duration.seconds(2)

const claimed = Metric.counter("fibergraph_worker_jobs_claimed_total", {
  description: "Jobs this worker claimed",
  incremental: true
})
const completed = Metric.counter("fibergraph_worker_jobs_completed_total", {
  description: "Jobs this worker finished with its run waiting or ended",
  incremental: true
})
const leasesLost = Metric.counter("fibergraph_worker_leases_lost_total", {
  description: "Claims this worker lost to an expired lease or another owner",
  incremental: true
})
const activeRuns = Metric.gauge("fibergraph_worker_active_runs", { description: "Runs this worker holds now" })
const capacity = Metric.gauge("fibergraph_worker_concurrency", { description: "Runs this worker may hold at once" })
const draining = Metric.gauge("fibergraph_worker_draining", { description: "1 while the worker shuts down, else 0" })
const queueJobs = Metric.gauge("fibergraph_queue_jobs", {
  description: "Jobs in the queue by state (ready: queued and available now)"
})

/** Families `/metrics` always announces, with or without series. */
export const families: ReadonlyArray<Prometheus.Family> = [
  { name: "fibergraph_circuit_breaker_state", type: "gauge", help: "Circuit breaker state per key: 0 closed, 1 half-open, 2 open" },
  { name: "fibergraph_worker_jobs_claimed_total", type: "counter", help: "Jobs this worker claimed" },
  { name: "fibergraph_worker_jobs_completed_total", type: "counter", help: "Jobs this worker finished with its run waiting or ended" },
  { name: "fibergraph_worker_leases_lost_total", type: "counter", help: "Claims this worker lost to an expired lease or another owner" },
  { name: "fibergraph_worker_active_runs", type: "gauge", help: "Runs this worker holds now" },
  { name: "fibergraph_worker_concurrency", type: "gauge", help: "Runs this worker may hold at once" },
  { name: "fibergraph_worker_draining", type: "gauge", help: "1 while the worker shuts down, else 0" },
  { name: "fibergraph_queue_jobs", type: "gauge", help: "Jobs in the queue by state (ready: queued and available now)" }
]

/** Whether the store answers, with the reason when it does not. */
const checkStore = (store: Store.Store["Type"]): Effect.Effect<Option.Option<string>> =>
  Option.match(store.sql, {
    onNone: () => Effect.succeedNone,
    onSome: (sql) =>
      sql`SELECT 1`.pipe(
        Effect.timeoutFail({
          duration: storeCheckTimeout,
          onTimeout: () => new Error(`no answer within ${Duration.format(storeCheckTimeout)}`)
        }),
        Effect.as(Option.none<string>()),
        Effect.catchAllCause((cause) =>
          Effect.succeed(Option.some(`the store ${store.url} does not answer: ${Cause.pretty(cause).split("\n")[0]}`))
        )
      )
  })

/** The endpoints over a probe. */
export const make = (probe: Probe) =>
  Effect.gen(function*() {
    const seen = { claimed: 0, completed: 0, leasesLost: 0 }
    const lock = yield* Effect.makeSemaphore(1)

    const record = lock.withPermits(1)(Effect.gen(function*() {
      yield* Metric.set(capacity, probe.concurrency)
      const status = yield* probe.worker
      if (Option.isSome(status)) {
        const s = status.value
        yield* Metric.incrementBy(claimed, s.claimed - seen.claimed)
        yield* Metric.incrementBy(completed, s.completed - seen.completed)
        yield* Metric.incrementBy(leasesLost, s.leasesLost - seen.leasesLost)
        Object.assign(seen, { claimed: s.claimed, completed: s.completed, leasesLost: s.leasesLost })
        yield* Metric.set(activeRuns, s.active.length)
        yield* Metric.set(draining, s.draining ? 1 : 0)
      }
      const depth = yield* probe.queue.depth(yield* Clock.currentTimeMillis).pipe(Effect.option)
      if (Option.isSome(depth)) {
        for (const [state, count] of Object.entries(depth.value)) {
          yield* Metric.set(Metric.tagged(queueJobs, "state", state), count)
        }
      }
    }).pipe(Effect.catchAllCause((cause) => Effect.logWarning("metrics: cannot read the worker's status", cause))))

    const readiness = Effect.gen(function*() {
      const [storeProblem, status] = yield* Effect.all([checkStore(probe.store), probe.worker], { concurrency: 2 })
      const reasons: Array<string> = []
      if (Option.isSome(storeProblem)) reasons.push(storeProblem.value)
      if (Option.isNone(status)) reasons.push("the worker is starting")
      else if (status.value.draining) reasons.push("the worker is draining (shutting down)")
      const body = {
        ready: reasons.length === 0,
        ...(reasons.length === 0 ? {} : { reasons }),
        store: { kind: probe.store.kind, url: probe.store.url, ok: Option.isNone(storeProblem) },
        worker: Option.getOrNull(status)
      }
      return HttpServerResponse.unsafeJson(body, { status: reasons.length === 0 ? 200 : 503 })
    })

    return HttpRouter.empty.pipe(
      HttpRouter.get("/healthz", Effect.succeed(HttpServerResponse.unsafeJson({ status: "ok" }))),
      HttpRouter.get("/readyz", readiness),
      HttpRouter.get(
        "/metrics",
        Effect.zipRight(record, Prometheus.scrape(families)).pipe(
          Effect.map((text) => HttpServerResponse.text(text, { contentType: Prometheus.contentType }))
        )
      )
    )
  })

/** Serves the endpoints on `port` (0: any free port) until the layer closes; provides the `HttpServer` (its address). */
export const layer = (probe: Probe, port: number): Layer.Layer<HttpServer.HttpServer, unknown> =>
  Layer.unwrapEffect(Effect.map(make(probe), (router) => HttpServer.serve(router))).pipe(
    Layer.provideMerge(NodeHttpServer.layer(createServer, { port }))
  )
