/**
 * A graph module: the graphs a worker runs (`fibergraph worker --graphs examples/graphs.ts`).
 * It exports `graphs` (compiled graphs or their `.compile` effects) and `layer`, the services
 * their nodes need, here a scripted language model (no network).
 *
 * - `research`: parallel branches, a fan-out, a join, a critique loop and a human approval; its
 *   agent nodes call the model (`examples/research.ts` runs it in one process).
 * - `count`: deterministic, no model: two parallel nodes, a join, then a loop up to `target`.
 * - `approval`: deterministic: drafts from `title`, waits for a human, publishes when approved.
 */
import { Effect, Schema } from "effect"
import { Agent, Graph, Node, ScriptedModel, State } from "../src/index.js"

/** The research assistant's state. */
export const Research = State.define({
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
export const script: ScriptedModel.Script = (prompt, call) => {
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

/**
 * The research assistant:
 *
 *   START ─┬─ plan ──(fan-out: one `search` per query)── search ─┐
 *          └─ background ─────────────────────────────────────────┴─(join)─ draft ─ critique ─┐
 *                                                                  ▲                          │
 *                                                                  └──── revise (loop) ◄──────┤
 *                                                                                  approve ◄──┘ ─ END
 */
export const research = Graph.make({ id: "research", version: 1, state: Research })
  .node(
    "plan",
    { reads: ["question"], writes: ["queries"] },
    Agent.node({
      model: "scripted",
      pricing,
      prompt: (s) => `PLAN three search queries for: ${s.question}`,
      update: ({ text }) => ({ queries: text.split("\n") })
    })
  )
  .node(
    "background",
    { reads: ["question"], writes: ["background"] },
    Agent.node({
      model: "scripted",
      pricing,
      prompt: (s) => `BACKGROUND on: ${s.question}`,
      update: ({ text }) => ({ background: text })
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
      update: ({ text }) => ({ findings: [text] })
    })
  )
  .node(
    "draft",
    { reads: ["background", "findings"], writes: ["draft"] },
    Agent.node({
      model: "scripted",
      pricing,
      prompt: (s) => `DRAFT an answer from: ${s.background} ${s.findings.join(" ")}`,
      update: ({ text }) => ({ draft: text })
    })
  )
  .node(
    "critique",
    { reads: ["draft", "revisions"], writes: ["verdict"] },
    Agent.node({
      model: "scripted",
      pricing,
      prompt: (s) => `CRITIQUE (revised ${s.revisions === 2 ? "twice" : `${s.revisions} times`}): ${s.draft}`,
      update: ({ text }) => ({ verdict: text.trim() === "good" ? "good" as const : "revise" as const })
    })
  )
  .node(
    "revise",
    { reads: ["draft"], writes: ["draft", "revisions"] },
    Agent.node({
      model: "scripted",
      pricing,
      prompt: (s) => `REVISE: ${s.draft}`,
      update: ({ text }) => ({ draft: text, revisions: 1 })
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

/** The counting graph's state: count up to `target` (default 3). */
export const Count = State.define({
  target: State.channel(Schema.Int.pipe(Schema.between(1, 1000)), { initial: () => 3 }),
  count: State.counter(),
  log: State.list(Schema.String)
})

/** `a` and `b` in parallel, joined by `tally`, which loops until `count` reaches `target`. */
export const count = Graph.make({ id: "count", version: 1, state: Count })
  .node("a", { writes: ["count", "log"] }, () => Effect.succeed({ count: 1, log: ["a"] }))
  .node("b", { writes: ["count", "log"] }, () => Effect.succeed({ count: 1, log: ["b"] }))
  .node(
    "tally",
    { reads: ["count"], writes: ["count", "log"], policy: { breaker: { failureThreshold: 5, resetAfter: "30 seconds" } } },
    (ctx) => Effect.succeed({ count: 1, log: [`tally ${ctx.state.count + 1}`] })
  )
  .edge(Graph.START, "a")
  .edge(Graph.START, "b")
  .edge(["a", "b"], "tally")
  .route("tally", (s) => s.count < s.target ? "tally" : Graph.END, ["tally", Graph.END])
  .compile

/** The approval graph's state. */
export const Approval = State.define({
  title: State.channel(Schema.String),
  draft: State.channel(Schema.String, { initial: () => "" }),
  decision: State.channel(Schema.Literal("pending", "approved", "rejected", "edited", "timed_out"), {
    initial: () => "pending" as const
  }),
  published: State.channel(Schema.Boolean, { initial: () => false })
})

/** Drafts from `title`, parks for a human's approval, and publishes unless rejected. */
export const approval = Graph.make({ id: "approval", version: 1, state: Approval })
  .node("write", { reads: ["title"], writes: ["draft"] }, (ctx) => Effect.succeed({ draft: `A post about ${ctx.state.title}` }))
  .node("review", { reads: ["draft"], writes: ["decision"] }, Node.approval({ key: "decision", payload: (s) => ({ draft: s.draft }) }))
  .node("publish", { writes: ["published"] }, () => Effect.succeed({ published: true }))
  .edge(Graph.START, "write")
  .edge("write", "review")
  .route("review", (s) => s.decision === "rejected" ? Graph.END : "publish", ["publish", Graph.END])
  .edge("publish", Graph.END)
  .compile

/** The graphs of this module. */
export const graphs = [research, count, approval]

/** The services the graphs' nodes need: the scripted model of `research`. */
export const layer = ScriptedModel.layer(script)
