/**
 * The child process of the agent crash test:
 *
 *   node --import tsx test/crash/agent-child.ts <store-url> <runId> <start|resume> <openai-base-url> <tool-log>
 *
 * Opens the store, starts or resumes a run of a one-node graph whose agent loops over a `step`
 * tool until the model answers, with the real `@effect/ai-openai` layers pointed at the fake
 * provider process, and prints the result as one JSON line. Every tool execution appends a line
 * (call id, pid) to the tool log, so the parent can count executions across processes.
 */
import { Tool, Toolkit } from "@effect/ai"
import * as NodeRuntime from "@effect/platform-node/NodeRuntime"
import { Cause, Effect, Layer, Option, Redacted, Schema } from "effect"
import { appendFileSync, writeSync } from "node:fs"
import * as Agent from "../../src/Agent.js"
import * as Graph from "../../src/Graph.js"
import * as Main from "../../src/layers/Main.js"
import * as Provider from "../../src/layers/model/Provider.js"
import * as Store from "../../src/layers/Store.js"
import * as Runner from "../../src/Runner.js"
import { RunStore } from "../../src/services/RunStore.js"
import * as State from "../../src/State.js"

const [storeUrl, runId, mode, openaiUrl, toolLog] = process.argv.slice(2) as [string, string, string, string, string]

const emit = (line: unknown) => Effect.sync(() => writeSync(1, `${JSON.stringify(line)}\n`))

const StepTool = Tool.make("step", {
  description: "Does one step of the work",
  parameters: { n: Schema.String },
  success: Schema.String
})
const Tools = Toolkit.make(StepTool)
const Handlers = Tools.toLayer({
  step: ({ n }) =>
    Effect.sync(() => {
      appendFileSync(toolLog, `${JSON.stringify({ n, pid: process.pid })}\n`)
      return `step ${n} done`
    })
})

const S = State.define({
  task: State.channel(Schema.String),
  answer: State.channel(Schema.String),
  messages: Agent.messages()
})

export const graph = Graph.make({ id: "agent-crash", state: S })
  .node(
    "agent",
    { reads: ["task", "messages"], writes: ["answer", "messages"] },
    Agent.node({
      model: "gpt-4.1-mini",
      pricing: { inputPerMTok: 1, outputPerMTok: 2 },
      system: "Do the task one step at a time with the step tool.",
      prompt: (state: { readonly task: string }) => state.task,
      toolkit: Tools,
      maxIterations: 20,
      update: ({ messages, text }) => ({ answer: text, messages })
    })
  )
  .edge(Graph.START, "agent")
  .edge("agent", Graph.END)
  .compile

const Model = Provider.layer({
  provider: "openai",
  model: "gpt-4.1-mini",
  apiKey: Redacted.make("sk-crash-test"),
  baseUrl: openaiUrl
})

const program = Effect.gen(function*() {
  const runner = yield* Runner.Runner
  const store = yield* RunStore
  const compiled = yield* graph
  const stored = yield* Effect.option(store.get(runId))
  yield* emit({ _tag: "ready", pid: process.pid, stored: Option.isSome(stored) })
  const handle = mode === "start"
    ? yield* runner.start(compiled, { task: "do ten steps" }, { runId })
    : yield* runner.resume(compiled, runId)
  const result = yield* handle.result
  const sql = (yield* Store.Store).sql
  const journalRows = Option.isNone(sql) ? null : Number(
    (yield* sql.value<{ readonly n: number | string }>`SELECT count(*) AS n FROM fibergraph.call_journal WHERE run_id = ${runId}`)[0]?.n
  )
  yield* emit({ _tag: "result", status: result.status, state: result.state, usage: result.usage, error: result.error, journalRows })
}).pipe(Effect.provide(Layer.mergeAll(Main.layer({ url: Option.some(storeUrl) }), Model, Handlers)))

NodeRuntime.runMain(
  program.pipe(Effect.tapErrorCause((cause) => emit({ _tag: "error", message: Cause.pretty(cause) }))),
  { disableErrorReporting: true }
)
