/**
 * A support agent with two tools and structured output:
 *
 *   npx tsx examples/agent.ts
 *
 * Without configuration it talks to a local process that speaks OpenAI's wire format (the fake
 * provider the tests use, answering from a script), through the real `@effect/ai-openai` client.
 * Pointed at a real provider, the same program changes nothing but configuration:
 *
 *   FIBERGRAPH_MODEL=openai:gpt-4.1-mini OPENAI_API_KEY=sk-… npx tsx examples/agent.ts
 *   FIBERGRAPH_MODEL=anthropic:claude-sonnet-4-5 ANTHROPIC_API_KEY=… npx tsx examples/agent.ts
 *   FIBERGRAPH_MODEL=openai-compatible:llama3.1 FIBERGRAPH_MODEL_BASE_URL=http://127.0.0.1:11434/v1 npx tsx examples/agent.ts
 *
 * The run is stored in the embedded store (./.fibergraph, or FIBERGRAPH_STORE): every model and
 * tool call is journaled, so a crash in the middle of the loop resumes without paying again.
 */
import { Tool, Toolkit } from "@effect/ai"
import { Config, Effect, Layer, Option, Redacted, Schema, Stream } from "effect"
import { Agent, CircuitBreaker, Graph, Runner, State, Store } from "../src/index.js"
import * as Provider from "../src/layers/model/Provider.js"
import * as FakeProvider from "../test/support/FakeProvider.js"

const LookupOrder = Tool.make("lookup_order", {
  description: "Looks an order up by its id: its status and the days since delivery",
  parameters: { orderId: Schema.String },
  success: Schema.Struct({ status: Schema.String, daysSinceDelivery: Schema.Number })
})
const RefundPolicy = Tool.make("refund_policy", {
  description: "Whether an order delivered this many days ago can be refunded",
  parameters: { daysSinceDelivery: Schema.Number },
  success: Schema.Struct({ refundable: Schema.Boolean, windowDays: Schema.Number })
})
const Tools = Toolkit.make(LookupOrder, RefundPolicy)
const ToolHandlers = Tools.toLayer({
  lookup_order: ({ orderId }) =>
    Effect.succeed(orderId === "A-1042" ? { status: "delivered", daysSinceDelivery: 12 } : { status: "unknown", daysSinceDelivery: -1 }),
  refund_policy: ({ daysSinceDelivery }) =>
    Effect.succeed({ refundable: daysSinceDelivery >= 0 && daysSinceDelivery <= 30, windowDays: 30 })
})

const Ticket = Schema.Struct({
  category: Schema.Literal("refund", "shipping", "other"),
  refund: Schema.Boolean,
  reply: Schema.String
})

const Support = State.define({
  messages: Agent.messages(),
  ticket: State.channel(Schema.NullOr(Ticket), { initial: () => null })
})

const graph = Graph.make({ id: "support", state: Support })
  .node(
    "agent",
    { reads: ["messages"], writes: ["messages", "ticket"] },
    Agent.node({
      model: "support-model",
      pricing: { inputPerMTok: 0.4, outputPerMTok: 1.6 },
      system: "You are a support agent. Look the order up and check the refund policy before you answer. " +
        "Answer with JSON: {\"category\": \"refund\" | \"shipping\" | \"other\", \"refund\": boolean, \"reply\": string}.",
      history: (state) => state.messages,
      toolkit: Tools,
      output: Ticket,
      stream: true,
      estimate: { tokens: 2_000 },
      update: ({ messages, value }) => ({ messages, ticket: value })
    })
  )
  .edge(Graph.START, "agent")
  .edge("agent", Graph.END)
  .compile

/** What the local provider answers: the two tool calls, then the ticket. */
const script: FakeProvider.FakeScript = [
  { toolCalls: [{ name: "lookup_order", arguments: { orderId: "A-1042" } }], usage: { inputTokens: 220, outputTokens: 18 } },
  { toolCalls: [{ name: "refund_policy", arguments: { daysSinceDelivery: 12 } }], usage: { inputTokens: 270, outputTokens: 16 } },
  {
    text: JSON.stringify({
      category: "refund",
      refund: true,
      reply: "Order A-1042 was delivered 12 days ago, within our 30-day window: your refund is on its way."
    }),
    usage: { inputTokens: 320, outputTokens: 40 }
  }
]

/** The configured provider, or the local one when `FIBERGRAPH_MODEL` is not set. */
const Model = Layer.unwrapScoped(Effect.gen(function*() {
  if (Option.isSome(yield* Provider.modelConfig)) return Provider.layerConfig
  const local = yield* FakeProvider.start(script)
  yield* Effect.log(`no FIBERGRAPH_MODEL: using the local OpenAI-compatible provider at ${local.openaiUrl}`)
  return Provider.layer({ provider: "openai", model: "gpt-4.1-mini", apiKey: Redacted.make("sk-local"), baseUrl: local.openaiUrl })
}))

const program = Effect.gen(function*() {
  const runner = yield* Runner.Runner
  const question = yield* Config.string("QUESTION").pipe(Config.withDefault("I want a refund for order A-1042."))
  const run = yield* runner.start(yield* graph, { messages: [{ role: "user", content: question }] }, { budget: { usd: 0.05 } })
  yield* runner.watch(run.runId).pipe(
    Stream.runForEach((event) =>
      Effect.sync(() => {
        if (event._tag === "ModelDelta") { if (event.kind === "text") process.stdout.write(event.delta) }
        else if (event._tag === "ToolCalled") console.log(`\n→ ${event.tool}(${JSON.stringify(event.input)})`)
        else if (event._tag === "ToolReturned") console.log(`← ${JSON.stringify(event.output)}`)
        else if (event._tag === "ModelCalled") console.log(`\n[model call ${event.call}: ${event.inputTokens}+${event.outputTokens} tokens, ${event.finishReason}]`)
      })
    )
  )
  const done = yield* run.result
  console.log(JSON.stringify({ status: done.status, ticket: done.state.ticket, usage: done.usage.total }, null, 2))
  if (done.status !== "completed") return yield* Effect.fail(new Error(`run ended ${done.status}: ${done.error?.message}`))
})

const MainLayer = Layer.mergeAll(
  Runner.layer().pipe(Layer.provideMerge(Layer.merge(Store.layerConfig, CircuitBreaker.layer))),
  Model,
  ToolHandlers
)

Effect.runPromise(program.pipe(Effect.provide(MainLayer), Effect.scoped)).catch((error) => {
  console.error(String(error))
  process.exitCode = 1
})
