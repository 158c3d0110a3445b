import { AiError, LanguageModel, Tool, Toolkit } from "@effect/ai"
import { assert, describe, it } from "@effect/vitest"
import { Chunk, Effect, Fiber, Layer, Option, Schema, Stream, TestClock } from "effect"
import * as Agent from "../src/Agent.js"
import { CircuitBreaker, Graph, type Node, Runner, RunStoreMemory, State } from "../src/index.js"
import * as ScriptedModel from "../src/layers/model/ScriptedModel.js"
import type { RunEvent } from "../src/Events.js"

const S = State.define({
  topic: State.channel(Schema.String),
  draft: State.channel(Schema.String),
  notes: State.list(Schema.String)
})

const pricing = { inputPerMTok: 3, outputPerMTok: 15 }

const Runtime = Runner.layer().pipe(Layer.provide(Layer.merge(RunStoreMemory.layer(), CircuitBreaker.layer)))

const withModel = (script: ScriptedModel.Script, options?: ScriptedModel.Options) =>
  Layer.merge(Runtime, ScriptedModel.layer(script, options))

const drafter = Agent.node({
  model: "test-model",
  prompt: (state: { readonly topic: string }) => `Write about ${state.topic}`,
  pricing,
  estimate: { tokens: 500 },
  update: ({ text }) => ({ draft: text })
})

const draftGraph = (policy?: Node.NodePolicy) =>
  Graph.make({ id: "agent-draft", state: S })
    .node("draft", { reads: ["topic"], writes: ["draft"], ...(policy === undefined ? {} : { policy }) }, drafter)
    .edge(Graph.START, "draft")
    .edge("draft", Graph.END)
    .compile

const eventsOf = (runId: string) =>
  Effect.flatMap(Runner.Runner, (runner) => Stream.runCollect(runner.events(runId))).pipe(
    Effect.map((events): ReadonlyArray<RunEvent> => Chunk.toReadonlyArray(events))
  )

const pick = <T extends RunEvent["_tag"]>(events: ReadonlyArray<RunEvent>, tag: T) =>
  events.filter((e): e is Extract<RunEvent, { _tag: T }> => e._tag === tag)

describe("Agent.node", () => {
  it.effect("puts the model's answer into the state and sends the state in the prompt", () =>
    Effect.gen(function*() {
      const graph = yield* Graph.make({ id: "agent-inline", state: S })
        .node(
          "draft",
          { reads: ["topic"], writes: ["draft"] },
          Agent.node({
            model: "test-model",
            prompt: (state) => `Write about ${state.topic}`,
            pricing,
            update: ({ text }, state) => ({ draft: `${state.topic}: ${text}` })
          })
        )
        .edge(Graph.START, "draft")
        .edge("draft", Graph.END)
        .compile
      const runner = yield* Runner.Runner
      const handle = yield* runner.start(graph, { topic: "otters" })
      const result = yield* handle.result
      assert.strictEqual(result.status, "completed")
      assert.strictEqual(result.state.draft, "otters: Otters hold hands while sleeping.")

      const calls = yield* Effect.flatMap(ScriptedModel.ScriptedModelLog, (log) => log.calls)
      assert.strictEqual(calls.length, 1)
      const message = calls[0]!.prompt.content[0]!
      assert.strictEqual(message.role, "user")
      assert.deepStrictEqual(
        message.role === "user" ? message.content.map((p) => (p.type === "text" ? p.text : "")) : [],
        ["Write about otters"]
      )
    }).pipe(
      Effect.provide(withModel([{ text: "Otters hold hands while sleeping.", usage: { inputTokens: 10, outputTokens: 6 } }]))
    ))

  it.effect("records the call's tokens and cost in the run's usage and as a ModelCalled event", () =>
    Effect.gen(function*() {
      const graph = yield* draftGraph()
      const runner = yield* Runner.Runner
      const handle = yield* runner.start(graph, { topic: "tides" }, { budget: { tokens: 10_000, usd: 1 } })
      const result = yield* handle.result
      assert.strictEqual(result.status, "completed")
      const usd = (1200 * 3 + 300 * 15) / 1_000_000
      assert.strictEqual(result.usage.total.tokens, 1500)
      assert.closeTo(result.usage.total.usd, usd, 1e-12)
      assert.strictEqual(result.usage.byNode["draft"]?.tokens, 1500)

      const called = pick(yield* eventsOf(handle.runId), "ModelCalled")
      assert.strictEqual(called.length, 1)
      const event = called[0]!
      assert.strictEqual(event.node, "draft")
      assert.strictEqual(event.model, "test-model")
      assert.strictEqual(event.inputTokens, 1200)
      assert.strictEqual(event.outputTokens, 300)
      assert.closeTo(event.usd, usd, 1e-12)
    }).pipe(Effect.provide(withModel([{ text: "Tides follow the moon.", usage: { inputTokens: 1200, outputTokens: 300 } }]))))

  it.effect("fails the run with BudgetExceededError, without calling the model, when the reservation does not fit", () =>
    Effect.gen(function*() {
      const graph = yield* draftGraph()
      const runner = yield* Runner.Runner
      const handle = yield* runner.start(graph, { topic: "tides" }, { budget: { tokens: 100 } })
      const result = yield* handle.result
      assert.strictEqual(result.status, "failed")
      assert.strictEqual(result.error?.tag, "BudgetExceededError")
      assert.strictEqual(result.usage.total.tokens, 0)
      assert.strictEqual(yield* Effect.flatMap(ScriptedModel.ScriptedModelLog, (log) => log.count), 0)

      const failed = pick(yield* eventsOf(handle.runId), "RunFailed")
      assert.strictEqual(failed.length, 1)
      assert.strictEqual(failed[0]!.errorTag, "BudgetExceededError")
    }).pipe(Effect.provide(withModel([{ text: "never sent", usage: { inputTokens: 1, outputTokens: 1 } }]))))

  it.effect("prices a token estimate at the higher price to reserve against a USD budget", () =>
    Effect.gen(function*() {
      const graph = yield* draftGraph()
      const runner = yield* Runner.Runner
      // 500 estimated tokens at $15/MTok need $0.0075; the budget has $0.005.
      const handle = yield* runner.start(graph, { topic: "tides" }, { budget: { usd: 0.005 } })
      const result = yield* handle.result
      assert.strictEqual(result.status, "failed")
      assert.strictEqual(result.error?.tag, "BudgetExceededError")
      assert.strictEqual(yield* Effect.flatMap(ScriptedModel.ScriptedModelLog, (log) => log.count), 0)
    }).pipe(Effect.provide(withModel([{ text: "never sent", usage: { inputTokens: 1, outputTokens: 1 } }]))))

  it.effect("emits BudgetThreshold events at 50, 75 and 90 percent of the token budget", () =>
    Effect.gen(function*() {
      const step = (name: string) =>
        Agent.node({
          model: "test-model",
          prompt: () => name,
          pricing,
          estimate: { tokens: 50 },
          update: ({ text }) => ({ notes: [text] })
        })
      const graph = yield* Graph.make({ id: "agent-thresholds", state: S })
        .node("a", { writes: ["notes"] }, step("a"))
        .node("b", { writes: ["notes"] }, step("b"))
        .node("c", { writes: ["notes"] }, step("c"))
        .edge(Graph.START, "a")
        .edge("a", "b")
        .edge("b", "c")
        .edge("c", Graph.END)
        .compile
      const runner = yield* Runner.Runner
      const handle = yield* runner.start(graph, {}, { budget: { tokens: 1000 } })
      const result = yield* handle.result
      assert.strictEqual(result.status, "completed")
      assert.deepStrictEqual(result.state.notes, ["first", "second", "third"])
      assert.strictEqual(result.usage.total.tokens, 900)

      const thresholds = pick(yield* eventsOf(handle.runId), "BudgetThreshold")
      assert.deepStrictEqual(
        thresholds.map((e) => [e.scope, e.resource, e.percent, e.used, e.step]),
        [["run", "tokens", 50, 500, 0], ["run", "tokens", 75, 750, 1], ["run", "tokens", 90, 900, 2]]
      )
    }).pipe(Effect.provide(withModel([
      { text: "first", usage: { inputTokens: 400, outputTokens: 100 } },
      { text: "second", usage: { inputTokens: 200, outputTokens: 50 } },
      { text: "third", usage: { inputTokens: 100, outputTokens: 50 } }
    ]))))

  it.effect("retries a transient model failure with the node's backoff, driven by the clock", () =>
    Effect.gen(function*() {
      const graph = yield* draftGraph({ retry: { maxAttempts: 3, initialDelay: "10 millis" } })
      const runner = yield* Runner.Runner
      const log = yield* ScriptedModel.ScriptedModelLog
      const handle = yield* runner.start(graph, { topic: "tides" })
      const result = yield* Effect.fork(handle.result)
      while (Chunk.isEmpty(yield* TestClock.sleeps())) yield* Effect.yieldNow()
      assert.strictEqual(yield* log.count, 1)
      assert.isTrue(Option.isNone(yield* Fiber.poll(result)))

      yield* TestClock.adjust("10 millis")
      const done = yield* Fiber.join(result)
      assert.strictEqual(done.status, "completed")
      assert.strictEqual(done.state.draft, "second time lucky")
      assert.strictEqual(yield* log.count, 2)

      const events = yield* eventsOf(handle.runId)
      const retrying = pick(events, "NodeRetrying")
      assert.deepStrictEqual(retrying.map((e) => [e.node, e.attempt]), [["draft", 1]])
      assert.match(retrying[0]!.error, /rate limited/)
      assert.deepStrictEqual(pick(events, "NodeCompleted").map((e) => e.attempts), [2])
      assert.deepStrictEqual(pick(events, "ModelCalled").map((e) => e.inputTokens), [20])
    }).pipe(Effect.provide(withModel([
      ScriptedModel.fail("rate limited, try again"),
      { text: "second time lucky", usage: { inputTokens: 20, outputTokens: 5 } }
    ]))))

  it.effect("fails the run with the model's AiError when the script is exhausted", () =>
    Effect.gen(function*() {
      const graph = yield* draftGraph()
      const runner = yield* Runner.Runner
      const handle = yield* runner.start(graph, { topic: "tides" })
      const result = yield* handle.result
      assert.strictEqual(result.status, "failed")
      assert.strictEqual(result.error?.tag, "UnknownError")
      assert.match(result.error?.message ?? "", /script exhausted/)

      const failed = pick(yield* eventsOf(handle.runId), "NodeFailed")
      assert.deepStrictEqual(failed.map((e) => [e.node, e.errorTag]), [["draft", "UnknownError"]])
      assert.match(failed[0]!.error, /ScriptedModel\.generateText: script exhausted: call 1/)
    }).pipe(Effect.provide(withModel([]))))
})

describe("ScriptedModel", () => {
  it.effect("answers in order, then fails with an AiError saying the script is exhausted", () =>
    Effect.gen(function*() {
      const first = yield* LanguageModel.generateText({ prompt: "one" })
      assert.strictEqual(first.text, "1")
      assert.strictEqual(first.usage.inputTokens, 3)
      assert.strictEqual(first.usage.outputTokens, 1)
      assert.strictEqual(first.finishReason, "stop")
      const error = yield* Effect.flip(LanguageModel.generateText({ prompt: "two" }))
      assert.isTrue(AiError.isAiError(error))
      assert.instanceOf(error, AiError.UnknownError)
      assert.match(error.message, /script exhausted: call 2 has no scripted response \(the script has 1\)/)
      const calls = yield* Effect.flatMap(ScriptedModel.ScriptedModelLog, (log) => log.calls)
      assert.deepStrictEqual(calls.map((c) => [c.index, c.method, c.responseFormat]), [[0, "generateText", "text"], [
        1,
        "generateText",
        "text"
      ]])
    }).pipe(Effect.provide(ScriptedModel.layer([{ text: "1", usage: { inputTokens: 3, outputTokens: 1 } }]))))

  it.effect("answers from a function of the prompt and the call index", () =>
    Effect.gen(function*() {
      const a = yield* LanguageModel.generateText({ prompt: "ping" })
      const b = yield* LanguageModel.generateText({ prompt: "ping" })
      assert.deepStrictEqual([a.text, b.text], ["pong 0 (1 messages)", "pong 1 (1 messages)"])
    }).pipe(
      Effect.provide(ScriptedModel.layer((prompt, i) => ({ text: `pong ${i} (${prompt.content.length} messages)` })))
    ))

  it.effect("takes its latency on the clock", () =>
    Effect.gen(function*() {
      const call = yield* Effect.fork(LanguageModel.generateText({ prompt: "slow" }))
      yield* TestClock.adjust("999 millis")
      assert.isTrue(Option.isNone(yield* Fiber.poll(call)))
      yield* TestClock.adjust("1 millis")
      const response = yield* Fiber.join(call)
      assert.strictEqual(response.text, "finally")
    }).pipe(Effect.provide(ScriptedModel.layer([{ text: "finally" }], { latency: "1 second" }))))

  it.effect("streams the scripted text", () =>
    Effect.gen(function*() {
      const parts = yield* Stream.runCollect(LanguageModel.streamText({ prompt: "stream" }))
      const text = Chunk.toReadonlyArray(parts).flatMap((p) => (p.type === "text-delta" ? [p.delta] : [])).join("")
      assert.strictEqual(text, "streamed")
      const calls = yield* Effect.flatMap(ScriptedModel.ScriptedModelLog, (log) => log.calls)
      assert.deepStrictEqual(calls.map((c) => c.method), ["streamText"])
    }).pipe(Effect.provide(ScriptedModel.layer([{ text: "streamed" }]))))

  it.effect("makes scripted tool calls, which the toolkit then resolves", () => {
    const Lookup = Tool.make("lookup", { parameters: { q: Schema.String }, success: Schema.String })
    const Tools = Toolkit.make(Lookup)
    const handlers = Tools.toLayer({ lookup: ({ q }) => Effect.succeed(`found ${q}`) })
    return Effect.gen(function*() {
      const response = yield* LanguageModel.generateText({ prompt: "look it up", toolkit: Tools })
      assert.deepStrictEqual(response.toolCalls.map((c) => [c.id, c.name, c.params]), [["call_0_0", "lookup", { q: "otters" }]])
      assert.deepStrictEqual(response.toolResults.map((r) => r.result), ["found otters"])
      assert.strictEqual(response.finishReason, "tool-calls")
      const calls = yield* Effect.flatMap(ScriptedModel.ScriptedModelLog, (log) => log.calls)
      assert.deepStrictEqual(calls.map((c) => c.tools), [["lookup"]])
    }).pipe(
      Effect.provide(Layer.merge(
        handlers,
        ScriptedModel.layer([{ toolCalls: [{ name: "lookup", params: { q: "otters" } }], usage: { inputTokens: 8, outputTokens: 4 } }])
      ))
    )
  })

  it.effect("refuses a scripted tool call the request did not offer", () =>
    Effect.gen(function*() {
      const error = yield* Effect.flip(LanguageModel.generateText({ prompt: "use a tool" }))
      assert.instanceOf(error, AiError.MalformedOutput)
      assert.match(error.description ?? "", /tool "lookup", but the request offered \[\]/)
    }).pipe(Effect.provide(ScriptedModel.layer([{ toolCalls: [{ name: "lookup", params: { q: "x" } }] }]))))
})
