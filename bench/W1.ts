/**
 * W1: a 10-node linear chain, each node adding 1 to a counter; 1,000 runs one after another.
 * Measures supersteps per second on the runtime's hot path (no I/O, no concurrency).
 */
import { Effect } from "effect"
import { Graph, Runner, State } from "../src/index.js"
import { check, heapUsedMb, round, timed, type Workload } from "./Harness.js"

const CHAIN = 10
const RUNS = 1000
const WARMUP_RUNS = 200

const S = State.define({ count: State.counter() })

/** A linear chain of `length` nodes, each incrementing `count`. */
export const chain = (id: string, length: number, node: () => Effect.Effect<{ readonly count: number }>) => {
  const names = Array.from({ length }, (_, i) => `n${i}`)
  let builder = Graph.make({ id, state: S }) as Graph.Builder<typeof S.channels, string>
  for (const name of names) builder = builder.node(name, { writes: ["count"] }, node)
  builder = builder.edge(Graph.START, names[0]!)
  for (let i = 1; i < length; i++) builder = builder.edge(names[i - 1]!, names[i]!)
  return builder.edge(names[length - 1]!, Graph.END).compile
}

const runChain = (graph: Effect.Effect.Success<ReturnType<typeof chain>>, runs: number) =>
  Effect.gen(function*() {
    const runner = yield* Runner.Runner
    let steps = 0
    for (let i = 0; i < runs; i++) {
      const handle = yield* runner.start(graph, {})
      const result = yield* handle.result
      yield* check(
        "W1",
        result.status === "completed" && result.state.count === CHAIN && result.step === CHAIN,
        () => `run ${i}: status ${result.status}, count ${result.state.count}, step ${result.step} (want completed, ${CHAIN}, ${CHAIN})`
      )
      steps += result.step
    }
    return steps
  })

/** The W1 workload. */
export const W1: Workload = {
  name: "W1",
  run: Effect.gen(function*() {
    const graph = yield* chain("bench-w1", CHAIN, () => Effect.succeed({ count: 1 }))
    yield* runChain(graph, WARMUP_RUNS)
    const { cpuMs, value: steps, wallMs } = yield* timed(runChain(graph, RUNS))
    return {
      workload: "W1",
      steps_per_s: Math.round(steps / (wallMs / 1000)),
      us_per_step: round((wallMs * 1000) / steps, 2),
      cpu_us_per_step: round((cpuMs * 1000) / steps, 2),
      runs: RUNS,
      steps,
      wall_ms: round(wallMs),
      cpu_ms: round(cpuMs),
      heap_used_mb: yield* heapUsedMb
    }
  })
}
