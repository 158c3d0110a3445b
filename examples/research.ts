/**
 * A research assistant graph, run against a scripted language model (no network):
 *
 *   START ─┬─ plan ──(fan-out: one `search` per query)── search ─┐
 *          └─ background ─────────────────────────────────────────┴─(join)─ draft ─ critique ─┐
 *                                                                  ▲                          │
 *                                                                  └──── revise (loop) ◄──────┤
 *                                                                                  approve ◄──┘ ─ END
 *
 * `plan` and `background` run in parallel; `search` fans out; `draft` waits for both branches;
 * `critique` loops back through `revise` until the draft is good enough; `approve` parks the run
 * for a human, and this script answers as the human would. Events print as they commit.
 *
 * The run is durable: it is stored in the embedded Postgres in ./.fibergraph (or wherever
 * FIBERGRAPH_STORE / DATABASE_URL point: `postgres://…`, `pglite://<dir>`, `memory://`).
 */
import { Effect, Layer, Schema, Stream } from "effect"
import {
  Agent,
  CircuitBreaker,
  EventSinkConsole,
  Graph,
  Node,
  Runner,
  ScriptedModel,
  State,
  Store
} from "../src/index.js"

const Research = State.define({
  question: State.channel(Schema.String),
  queries: State.channel(Schema.Array(Schema.String), { initial: () => [] }),
  background: State.channel(Schema.String, { initial: () => "" }),
  findings: State.list(Schema.String),
  draft: State.channel(Schema.String, { initial: () => "" }),
  revisions: State.counter(),
  verdict: State.channel(Schema.Literal("pending", "revise", "good"), { initial: () => "pending" as const }),
  decision: State.channel(Schema.String, { initial: () => "pending" })
})

const pricing = { inputPerMTok: 3, outputPerMTok: 15 }

/** What the scripted model answers, by the kind of prompt it receives. */
const script: ScriptedModel.Script = (prompt, call) => {
  const text = JSON.stringify(prompt.content)
  const usage = { inputTokens: 400 + call * 10, outputTokens: 120 }
  if (text.includes("PLAN")) return { text: "tidal forces\nlunar orbit\nspring and neap tides", usage }
  if (text.includes("BACKGROUND")) return { text: "Tides are the rise and fall of sea levels.", usage }
  if (text.includes("SEARCH")) {
    const topic = text.match(/SEARCH: ([^"\\]+)/)?.[1] ?? "?"
    return { text: `A finding about ${topic}.`, usage }
  }
  if (text.includes("DRAFT")) return { text: "Tides come from the Moon's pull.", usage }
  if (text.includes("CRITIQUE")) return { text: text.includes("revised twice") ? "good" : "revise", usage }
  if (text.includes("REVISE")) return { text: "Tides come from the Moon's and the Sun's pull (revised).", usage }
  return undefined
}

const graph = Graph.make({ id: "research", version: 1, state: Research })
  .node(
    "plan",
    { reads: ["question"], writes: ["queries"] },
    Agent.node({
      model: "scripted",
      pricing,
      prompt: (s) => `PLAN three search queries for: ${s.question}`,
      output: (text) => ({ queries: text.split("\n") })
    })
  )
  .node(
    "background",
    { reads: ["question"], writes: ["background"] },
    Agent.node({
      model: "scripted",
      pricing,
      prompt: (s) => `BACKGROUND on: ${s.question}`,
      output: (text) => ({ background: text })
    })
  )
  .node(
    "search",
    {
      input: Schema.String,
      writes: ["findings"],
      concurrency: 2,
      policy: { timeout: "30 seconds", retry: { maxAttempts: 3, initialDelay: "200 millis" } }
    },
    Agent.node({
      model: "scripted",
      pricing,
      prompt: (_s, query: string) => `SEARCH: ${query}`,
      output: (text) => ({ findings: [text] })
    })
  )
  .node(
    "draft",
    { reads: ["background", "findings"], writes: ["draft"] },
    Agent.node({
      model: "scripted",
      pricing,
      prompt: (s) => `DRAFT an answer from: ${s.background} ${s.findings.join(" ")}`,
      output: (text) => ({ draft: text })
    })
  )
  .node(
    "critique",
    { reads: ["draft", "revisions"], writes: ["verdict"] },
    Agent.node({
      model: "scripted",
      pricing,
      prompt: (s) => `CRITIQUE (revised ${s.revisions === 2 ? "twice" : `${s.revisions} times`}): ${s.draft}`,
      output: (text) => ({ verdict: text.trim() === "good" ? "good" as const : "revise" as const })
    })
  )
  .node(
    "revise",
    { reads: ["draft"], writes: ["draft", "revisions"] },
    Agent.node({
      model: "scripted",
      pricing,
      prompt: (s) => `REVISE: ${s.draft}`,
      output: (text) => ({ draft: text, revisions: 1 })
    })
  )
  .node(
    "approve",
    { reads: ["draft"], writes: ["decision"] },
    Node.approval({ key: "decision", payload: (s) => ({ draft: s.draft }), timeout: "1 day" })
  )
  .edge(Graph.START, "plan")
  .edge(Graph.START, "background")
  .fanOut("plan", "search", (s) => s.queries)
  .edge(["search", "background"], "draft")
  .edge("draft", "critique")
  .route("critique", (s) => s.verdict === "good" ? "approve" : "revise", ["approve", "revise"])
  .edge("revise", "critique")
  .route("approve", (s) => s.decision === "rejected" ? "revise" : Graph.END, ["revise", Graph.END])
  .compile

const program = Effect.gen(function*() {
  const compiled = yield* graph
  const store = yield* Store.Store
  yield* Effect.log(`store: ${store.url}`)
  const runner = yield* Runner.Runner
  const run = yield* runner.start(compiled, { question: "Why are there tides?" }, {
    budget: { usd: 0.5 },
    timeout: "10 minutes"
  })

  const waiting = yield* run.result
  yield* Effect.log(`run ${run.runId} is ${waiting.status}; a human is asked: ${JSON.stringify(waiting.interrupts[0]?.payload)}`)
  yield* runner.respond(compiled, run.runId, { _tag: "approve", value: { reviewer: "ada" } })

  const done = yield* run.result
  const tags = yield* runner.events(run.runId).pipe(Stream.runFold(0, (n) => n + 1))
  yield* Effect.log(`run ${run.runId} ${done.status} after ${done.step} steps and ${tags} events; ` +
    `${done.usage.total.tokens} tokens, $${done.usage.total.usd.toFixed(4)}`)
  console.log(JSON.stringify(done.state, null, 2))
  if (done.status !== "completed") return yield* Effect.fail(new Error(`run ended ${done.status}`))
})

const MainLayer = Runner.layer().pipe(
  Layer.provideMerge(Layer.mergeAll(Store.layerConfig, CircuitBreaker.layer, EventSinkConsole.layer()))
)

Effect.runPromise(
  program.pipe(Effect.provide(Layer.merge(MainLayer, ScriptedModel.layer(script))), Effect.scoped)
).catch((error) => {
  console.error(error)
  process.exitCode = 1
})
