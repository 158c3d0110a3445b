/**
 * W2: one node looping 10,000 times through a conditional edge back to itself.
 * Measures supersteps per second within one long run (checkpoint and event log growth included).
 */
import { Effect } from "effect"
import { Graph, Runner, State } from "../src/index.js"
import { check, heapUsedMb, round, timed, type Workload } from "./Harness.js"

const LOOPS = 10_000
const RUNS = 3
const WARMUP_RUNS = 1

const S = State.define({ count: State.counter() })

const graph = Graph.make({ id: "bench-w2", state: S })
  .node("loop", { reads: ["count"], writes: ["count"] }, () => Effect.succeed({ count: 1 }))
  .edge(Graph.START, "loop")
  .route("loop", (s) => s.count < LOOPS ? "loop" : Graph.END, ["loop", Graph.END])
  .compile

const runLoops = (compiled: Effect.Effect.Success<typeof graph>, runs: number) =>
  Effect.gen(function*() {
    const runner = yield* Runner.Runner
    let steps = 0
    for (let i = 0; i < runs; i++) {
      const handle = yield* runner.start(compiled, {}, { maxSteps: LOOPS + 10 })
      const result = yield* handle.result
      yield* check(
        "W2",
        result.status === "completed" && result.state.count === LOOPS && result.step === LOOPS,
        () => `run ${i}: status ${result.status}, count ${result.state.count}, step ${result.step} (want completed, ${LOOPS}, ${LOOPS}); error ${JSON.stringify(result.error)}`
      )
      steps += result.step
    }
    return steps
  })

/** The W2 workload. */
export const W2: Workload = {
  name: "W2",
  run: Effect.gen(function*() {
    const compiled = yield* graph
    yield* runLoops(compiled, WARMUP_RUNS)
    const { cpuMs, value: steps, wallMs } = yield* timed(runLoops(compiled, RUNS))
    return {
      workload: "W2",
      steps_per_s: Math.round(steps / (wallMs / 1000)),
      us_per_step: round((wallMs * 1000) / steps, 2),
      cpu_us_per_step: round((cpuMs * 1000) / steps, 2),
      runs: RUNS,
      loops_per_run: LOOPS,
      steps,
      wall_ms: round(wallMs),
      cpu_ms: round(cpuMs),
      heap_used_mb: yield* heapUsedMb
    }
  })
}
