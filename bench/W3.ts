/**
 * W3: a node fans out to 100 instances of a worker (each appending its item to a list), then a
 * join runs once; 200 runs one after another. Measures the cost of a wide step.
 */
import { Effect, Schema } from "effect"
import { Graph, Runner, State } from "../src/index.js"
import { check, heapUsedMb, round, timed, type Workload } from "./Harness.js"

const BRANCHES = 100
const RUNS = 200
const WARMUP_RUNS = 20
const EXECUTIONS_PER_RUN = BRANCHES + 2
const STEPS_PER_RUN = 3

const S = State.define({
  done: State.list(Schema.Number),
  joined: State.counter()
})

const items = Array.from({ length: BRANCHES }, (_, i) => i)

const graph = Graph.make({ id: "bench-w3", state: S })
  .node("plan", { writes: [] }, () => Effect.void)
  .node("work", { input: Schema.Number, writes: ["done"] }, (ctx) => Effect.succeed({ done: [ctx.input] }))
  .node("join", { reads: ["done"], writes: ["joined"] }, (ctx) => Effect.succeed({ joined: ctx.state.done.length }))
  .edge(Graph.START, "plan")
  .fanOut("plan", "work", () => items)
  .edge("work", "join")
  .edge("join", Graph.END)
  .compile

const runFanOut = (compiled: Effect.Effect.Success<typeof graph>, runs: number) =>
  Effect.gen(function*() {
    const runner = yield* Runner.Runner
    for (let i = 0; i < runs; i++) {
      const handle = yield* runner.start(compiled, {})
      const result = yield* handle.result
      const done = result.state.done
      const inOrder = done.every((v, j) => v === j)
      yield* check(
        "W3",
        result.status === "completed" && done.length === BRANCHES && inOrder && result.state.joined === BRANCHES &&
          result.step === STEPS_PER_RUN,
        () =>
          `run ${i}: status ${result.status}, done.length ${done.length}, in order ${inOrder}, joined ${result.state.joined}, step ${result.step} (want completed, ${BRANCHES}, true, ${BRANCHES}, ${STEPS_PER_RUN})`
      )
    }
  })

/** The W3 workload. */
export const W3: Workload = {
  name: "W3",
  run: Effect.gen(function*() {
    const compiled = yield* graph
    yield* runFanOut(compiled, WARMUP_RUNS)
    const { cpuMs, wallMs } = yield* timed(runFanOut(compiled, RUNS))
    const executions = RUNS * EXECUTIONS_PER_RUN
    return {
      workload: "W3",
      runs_per_s: round(RUNS / (wallMs / 1000)),
      node_executions_per_s: Math.round(executions / (wallMs / 1000)),
      us_per_branch: round((wallMs * 1000) / (RUNS * BRANCHES), 2),
      runs: RUNS,
      branches: BRANCHES,
      node_executions: executions,
      steps: RUNS * STEPS_PER_RUN,
      wall_ms: round(wallMs),
      cpu_ms: round(cpuMs),
      heap_used_mb: yield* heapUsedMb
    }
  })
}
