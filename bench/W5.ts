/**
 * W5: 1,000 concurrent runs of a 10-node chain whose nodes each sleep 10 ms: start them all,
 * then await them all. Measures wall time against the 100 ms ideal and the extra RSS.
 */
import { Effect } from "effect"
import { Runner } from "../src/index.js"
import { check, collectGarbage, heapUsedMb, mb, round, timed, withRssPeak, type Workload } from "./Harness.js"
import { chain } from "./W1.js"

const CHAIN = 10
const RUNS = 1000
const WARMUP_RUNS = 200
const SLEEP_MS = 10
const IDEAL_MS = CHAIN * SLEEP_MS

const sleepy = () => Effect.as(Effect.sleep(`${SLEEP_MS} millis`), { count: 1 })

const runConcurrently = (graph: Effect.Effect.Success<ReturnType<typeof chain>>, runs: number) =>
  Effect.gen(function*() {
    const runner = yield* Runner.Runner
    const handles = []
    for (let i = 0; i < runs; i++) handles.push(yield* runner.start(graph, {}))
    const results = yield* Effect.forEach(handles, (h) => h.result, { concurrency: "unbounded" })
    for (const [i, result] of results.entries()) {
      yield* check(
        "W5",
        result.status === "completed" && result.state.count === CHAIN && result.step === CHAIN,
        () => `run ${i}: status ${result.status}, count ${result.state.count}, step ${result.step} (want completed, ${CHAIN}, ${CHAIN})`
      )
    }
    return results.length
  })

/** The W5 workload. */
export const W5: Workload = {
  name: "W5",
  run: Effect.gen(function*() {
    const graph = yield* chain("bench-w5", CHAIN, sleepy)
    yield* runConcurrently(graph, WARMUP_RUNS)
    const gc = yield* collectGarbage
    const baseline = process.memoryUsage()
    const [peakRss, { cpuMs, value: completed, wallMs }] = yield* withRssPeak(timed(runConcurrently(graph, RUNS)))
    const heapAfter = yield* heapUsedMb
    return {
      workload: "W5",
      wall_ms: round(wallMs),
      cpu_ms: round(cpuMs),
      ideal_ms: IDEAL_MS,
      overhead_ms: round(wallMs - IDEAL_MS),
      runs: completed,
      steps: completed * CHAIN,
      rss_baseline_mb: mb(baseline.rss),
      rss_peak_mb: mb(peakRss),
      rss_extra_mb: mb(peakRss - baseline.rss),
      heap_baseline_mb: mb(baseline.heapUsed),
      heap_used_mb: heapAfter,
      gc_before_baseline: gc
    }
  })
}
