/**
 * What every workload shares: the runtime layers (built once per workload), timing, memory
 * sampling, and the correctness checks that make a run count.
 */
import { performance } from "node:perf_hooks"
import { runInNewContext } from "node:vm"
import { setFlagsFromString } from "node:v8"
import { Data, Effect, Layer, Logger } from "effect"
import { CircuitBreaker, Runner, RunStoreMemory } from "../src/index.js"

/** A workload whose result was wrong: its timing is worthless. */
export class BenchCheckFailed extends Data.TaggedError("BenchCheckFailed")<{
  readonly workload: string
  readonly detail: string
}> {
  override get message() {
    return `${this.workload}: ${this.detail}`
  }
}

/** A benchmark workload: its name and the program that measures it and returns the report fields. */
export interface Workload {
  readonly name: string
  readonly run: Effect.Effect<Record<string, unknown>, unknown, Runner.Runner>
}

/** Logs go to stderr, so stdout carries only the one JSON report line. */
const StderrLogger = Logger.replace(Logger.defaultLogger, Logger.withConsoleError(Logger.logfmtLogger))

/** The runtime under test: Runner over the in-memory RunStore and the process's circuit breakers. */
export const BenchLayer: Layer.Layer<Runner.Runner> = Runner.layer().pipe(
  Layer.provide(Layer.merge(RunStoreMemory.layer(), CircuitBreaker.layer)),
  Layer.provide(StderrLogger)
)

/** Milliseconds from a monotonic clock. */
export const nowMs = Effect.sync(() => performance.now())

/** What a measured section took: wall time, and the process's CPU time (user + system) over it. */
export interface Timing<A> {
  readonly wallMs: number
  readonly cpuMs: number
  readonly value: A
}

/**
 * Runs `effect` and returns its value with the elapsed wall and CPU time in milliseconds. CPU time
 * is reported too because a loaded machine stretches wall time while CPU time stays put.
 */
export const timed = <A, E, R>(effect: Effect.Effect<A, E, R>): Effect.Effect<Timing<A>, E, R> =>
  Effect.gen(function*() {
    const cpu = yield* Effect.sync(() => process.cpuUsage())
    const start = yield* nowMs
    const value = yield* effect
    const end = yield* nowMs
    const used = yield* Effect.sync(() => process.cpuUsage(cpu))
    return { wallMs: end - start, cpuMs: (used.user + used.system) / 1000, value }
  })

/** Fails the workload unless `ok`. */
export const check = (workload: string, ok: boolean, detail: () => string): Effect.Effect<void, BenchCheckFailed> =>
  ok ? Effect.void : Effect.fail(new BenchCheckFailed({ workload, detail: detail() }))

const gcFn: (() => void) | undefined = (() => {
  const exposed = (globalThis as { gc?: () => void }).gc
  if (typeof exposed === "function") return exposed
  try {
    setFlagsFromString("--expose-gc")
    const fn = runInNewContext("gc") as unknown
    return typeof fn === "function" ? (fn as () => void) : undefined
  } catch {
    return undefined
  }
})()

/** Forces a full garbage collection when the VM allows it; returns whether it ran. */
export const collectGarbage = Effect.sync(() => {
  if (gcFn === undefined) return false
  gcFn()
  gcFn()
  return true
})

/** Bytes as megabytes, one decimal. */
export const mb = (bytes: number) => Math.round((bytes / (1024 * 1024)) * 10) / 10

/** Rounds to `digits` decimals. */
export const round = (n: number, digits = 1) => {
  const f = 10 ** digits
  return Math.round(n * f) / f
}

/** The heap in use now, in megabytes. */
export const heapUsedMb = Effect.sync(() => mb(process.memoryUsage().heapUsed))

/** Samples RSS on an interval while `effect` runs; returns its value and the peak RSS in bytes. */
export const withRssPeak = <A, E, R>(
  effect: Effect.Effect<A, E, R>,
  everyMs = 2
): Effect.Effect<readonly [number, A], E, R> =>
  Effect.acquireUseRelease(
    Effect.sync(() => {
      const sampler = { peak: process.memoryUsage.rss(), timer: undefined as NodeJS.Timeout | undefined }
      sampler.timer = setInterval(() => {
        const rss = process.memoryUsage.rss()
        if (rss > sampler.peak) sampler.peak = rss
      }, everyMs)
      return sampler
    }),
    (sampler) =>
      Effect.map(effect, (value) => {
        const rss = process.memoryUsage.rss()
        if (rss > sampler.peak) sampler.peak = rss
        return [sampler.peak, value] as const
      }),
    (sampler) => Effect.sync(() => clearInterval(sampler.timer))
  )
