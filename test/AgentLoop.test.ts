import { AiError, Tool, Toolkit } from "@effect/ai"
import { assert, describe, it } from "@effect/vitest"
import { Chunk, Effect, Fiber, Layer, Option, Ref, Schema, Stream, TestClock } from "effect"
import * as Agent from "../src/Agent.js"
import type { LiveEvent, RunEvent } from "../src/Events.js"
import { CircuitBreaker, Graph, Runner, RunStoreMemory, State } from "../src/index.js"
import * as ScriptedModel from "../src/layers/model/ScriptedModel.js"

const S = State.define({
  question: State.channel(Schema.String),
  answer: State.channel(Schema.String),
  messages: Agent.messages()
})

const pricing = { inputPerMTok: 1, outputPerMTok: 2 }

const Lookup = Tool.make("lookup", {
  description: "Looks a word up",
  parameters: { q: Schema.String },
  success: Schema.String
})
const Tools = Toolkit.make(Lookup)

/** The tool's handler, counting its calls in `calls`. */
const handlers = (calls: Ref.Ref<ReadonlyArray<string>>) =>
  Tools.toLayer({ lookup: ({ q }) => Effect.as(Ref.update(calls, (c) => [...c, q]), `${q} means water`) })

const Runtime = Runner.layer().pipe(Layer.provide(Layer.merge(RunStoreMemory.layer(), CircuitBreaker.layer)))

const agentGraph = <O = string>(options: Partial<Agent.Options<any, any, any, any, O>> = {}, tools = true) =>
  Graph.make({ id: "agent-loop", state: S })
    .node(
      "agent",
      { reads: ["question", "messages"], writes: ["answer", "messages"] },
      Agent.node<any, any, any, typeof Tools.tools, O>({
        model: "test-model",
        pricing,
        system: "You answer questions.",
        history: (state) => state.messages,
        prompt: (state) => state.question,
        ...(tools ? { toolkit: Tools } : {}),
        update: ({ messages, value }) => ({ answer: typeof value === "string" ? value : JSON.stringify(value), messages }),
        ...options
      })
    )
    .edge(Graph.START, "agent")
    .edge("agent", Graph.END)
    .compile

const eventsOf = (runId: string) =>
  Effect.flatMap(Runner.Runner, (runner) => Stream.runCollect(runner.events(runId))).pipe(
    Effect.map((events): ReadonlyArray<RunEvent> => Chunk.toReadonlyArray(events))
  )

const pick = <T extends RunEvent["_tag"]>(events: ReadonlyArray<RunEvent>, tag: T) =>
  events.filter((e): e is Extract<RunEvent, { _tag: T }> => e._tag === tag)

const layerOf = (script: ScriptedModel.Script, calls: Ref.Ref<ReadonlyArray<string>>) =>
  Layer.mergeAll(Runtime, ScriptedModel.layer(script), handlers(calls))

const setup = (script: ScriptedModel.Script) =>
  Effect.map(Ref.make<ReadonlyArray<string>>([]), (calls) => ({ calls, layer: layerOf(script, calls) }))

const withSetup = <A, E>(
  script: ScriptedModel.Script,
  body: (calls: Ref.Ref<ReadonlyArray<string>>) => Effect.Effect<A, E, Layer.Layer.Success<ReturnType<typeof layerOf>>>
) => Effect.flatMap(setup(script), ({ calls, layer }) => Effect.provide(body(calls), layer))

const modelLog = Effect.flatMap(ScriptedModel.ScriptedModelLog, (log) => log.calls)

describe("Agent.node: the tool loop", () => {
  it.effect("runs the tools the model asks for, in parallel, feeds the results back and keeps the conversation", () =>
    withSetup([
      {
        toolCalls: [{ name: "lookup", params: { q: "agua" } }, { name: "lookup", params: { q: "eau" } }],
        usage: { inputTokens: 10, outputTokens: 5 }
      },
      { text: "Both mean water.", usage: { inputTokens: 30, outputTokens: 4 } }
    ], (calls) =>
      Effect.gen(function*() {
        const runner = yield* Runner.Runner
        const graph = yield* agentGraph()
        const handle = yield* runner.start(graph, { question: "What do agua and eau mean?" })
        const result = yield* handle.result
        assert.strictEqual(result.status, "completed")
        assert.strictEqual(result.state.answer, "Both mean water.")
        assert.deepStrictEqual([...(yield* Ref.get(calls))].sort(), ["agua", "eau"])

        const requests = yield* modelLog
        assert.strictEqual(requests.length, 2)
        assert.deepStrictEqual(requests[0]!.tools, ["lookup"])
        const second = requests[1]!.prompt.content
        assert.deepStrictEqual(second.map((m) => m.role), ["system", "user", "assistant", "tool"])
        const toolMessage = second[3]!
        assert.deepStrictEqual(
          toolMessage.role === "tool" ? toolMessage.content.map((p) => [p.name, p.result, p.isFailure]) : [],
          [["lookup", "agua means water", false], ["lookup", "eau means water", false]]
        )

        assert.deepStrictEqual(result.state.messages.map((m) => m.role), ["user", "assistant", "tool", "assistant"])
        assert.strictEqual(result.usage.total.tokens, 49)

        const events = yield* eventsOf(handle.runId)
        assert.deepStrictEqual(pick(events, "ModelCalled").map((e) => [e.call, e.inputTokens, e.finishReason]), [
          [0, 10, "tool-calls"],
          [3, 30, "stop"]
        ])
        assert.deepStrictEqual(pick(events, "ToolCalled").map((e) => [e.call, e.tool, e.input]), [
          [1, "lookup", { q: "agua" }],
          [2, "lookup", { q: "eau" }]
        ])
        assert.deepStrictEqual(
          pick(events, "ToolReturned").map((e) => [e.call, e.output, e.error]).sort(),
          [[1, "agua means water", null], [2, "eau means water", null]]
        )
      })))

  it.effect("hands a call with arguments that do not decode back to the model as a tool error", () =>
    withSetup([
      { toolCalls: [{ name: "lookup", params: { q: 42 } }] },
      { toolCalls: [{ name: "lookup", params: { q: "agua" } }] },
      { text: "agua means water" }
    ], (calls) =>
      Effect.gen(function*() {
        const runner = yield* Runner.Runner
        const handle = yield* runner.start(yield* agentGraph(), { question: "agua?" })
        const result = yield* handle.result
        assert.strictEqual(result.status, "completed")
        assert.deepStrictEqual(yield* Ref.get(calls), ["agua"])
        const requests = yield* modelLog
        const tool = requests[1]!.prompt.content.at(-1)!
        assert.strictEqual(tool.role, "tool")
        const part = tool.role === "tool" ? tool.content[0]! : undefined
        assert.isTrue(part?.isFailure)
        assert.match(JSON.stringify(part?.result), /Failed to decode tool call parameters for tool 'lookup'/)
        const returned = pick(yield* eventsOf(handle.runId), "ToolReturned")
        assert.match(returned[0]!.error ?? "", /Failed to decode tool call parameters/)
        assert.strictEqual(returned[1]!.error, null)
      })))

  it.effect("fails the run with AgentMaxIterationsError when the model never stops calling tools", () =>
    withSetup(() => ({ toolCalls: [{ name: "lookup", params: { q: "again" } }] }), (calls) =>
      Effect.gen(function*() {
        const runner = yield* Runner.Runner
        const handle = yield* runner.start(yield* agentGraph({ maxIterations: 3 }), { question: "loop" })
        const result = yield* handle.result
        assert.strictEqual(result.status, "failed")
        assert.strictEqual(result.error?.tag, "AgentMaxIterationsError")
        assert.match(result.error?.message ?? "", /made 3 model calls without a final answer \(it still asked for lookup\)/)
        assert.strictEqual((yield* modelLog).length, 3, "not retried: another attempt would loop the same way")
        assert.strictEqual((yield* Ref.get(calls)).length, 2)
      })))

  it.effect("decodes structured output, giving the model one repair turn with the decode error", () =>
    withSetup([
      { text: "{\"word\":\"agua\"}" },
      { text: "{\"word\":\"agua\",\"meaning\":\"water\"}" }
    ], () =>
      Effect.gen(function*() {
        const runner = yield* Runner.Runner
        const output = Schema.Struct({ word: Schema.String, meaning: Schema.String })
        const handle = yield* runner.start(yield* agentGraph({ output }), { question: "agua?" })
        const result = yield* handle.result
        assert.strictEqual(result.status, "completed")
        assert.deepStrictEqual(JSON.parse(result.state.answer), { word: "agua", meaning: "water" })
        const repair = (yield* modelLog)[1]!.prompt.content.at(-1)!
        assert.strictEqual(repair.role, "user")
        assert.match(JSON.stringify(repair.content), /does not match the required JSON schema.*meaning/)
      })))

  it.effect("fails with AgentOutputError naming the path when the repaired answer still does not decode", () =>
    withSetup([
      { text: "{\"word\":\"agua\",\"meaning\":1}" },
      { text: "{\"word\":\"agua\",\"meaning\":2}" }
    ], () =>
      Effect.gen(function*() {
        const runner = yield* Runner.Runner
        const output = Schema.Struct({ word: Schema.String, meaning: Schema.String })
        const handle = yield* runner.start(yield* agentGraph({ output }), { question: "agua?" })
        const result = yield* handle.result
        assert.strictEqual(result.status, "failed")
        assert.strictEqual(result.error?.tag, "AgentOutputError")
        assert.match(result.error?.message ?? "", /at \$\.meaning/)
        assert.strictEqual((yield* modelLog).length, 2)
      })))

  it.effect("streams text deltas to Runner.watch, live only: the durable log holds none", () =>
    withSetup([{ text: "streamed answer", usage: { inputTokens: 3, outputTokens: 2 } }], () =>
      Effect.gen(function*() {
        const runner = yield* Runner.Runner
        const graph = yield* agentGraph({ stream: true }, false)
        const handle = yield* runner.start(graph, { question: "stream it" }, { interruptBefore: ["agent"] })
        yield* handle.result
        const watching = yield* Effect.fork(Stream.runCollect(runner.watch(handle.runId)))
        yield* Effect.yieldNow()
        yield* runner.respond(graph, handle.runId, { _tag: "approve" })
        const seen: ReadonlyArray<LiveEvent> = Chunk.toReadonlyArray(yield* Fiber.join(watching))
        const deltas = seen.filter((e) => e._tag === "ModelDelta")
        assert.deepStrictEqual(deltas.map((d) => [d.node, d.call, d.kind, d.delta]), [["agent", 0, "text", "streamed answer"]])
        const called = seen.findIndex((e) => e._tag === "ModelCalled")
        assert.isBelow(seen.findIndex((e) => e._tag === "ModelDelta"), called + 1)
        const stored = yield* eventsOf(handle.runId)
        assert.isFalse(stored.some((e) => (e._tag as string) === "ModelDelta"))
        assert.deepStrictEqual(stored.map((e) => e.seq), stored.map((_, i) => i + 1))
        const result = yield* handle.result
        assert.strictEqual(result.state.answer, "streamed answer")
        assert.strictEqual((yield* modelLog)[0]!.method, "streamText")
      })))

  const httpFailure = (status: number, headers: Record<string, string> = {}) =>
    ScriptedModel.fail(
      new AiError.HttpResponseError({
        module: "OpenAiClient",
        method: "createResponse",
        request: { method: "POST", url: "http://127.0.0.1/v1/responses", urlParams: [], hash: Option.none(), headers: {} },
        response: { status, headers },
        reason: "StatusCode",
        description: `status ${status}`
      })
    )

  it.effect("waits as long as a 429's Retry-After asks before the next attempt, within the node's retry policy", () =>
    withSetup([httpFailure(429, { "retry-after": "5" }), { text: "after the wait" }], () =>
      Effect.gen(function*() {
        const runner = yield* Runner.Runner
        const graph = yield* Graph.make({ id: "agent-retry-after", state: S })
          .node(
            "agent",
            { writes: ["answer"], policy: { retry: { maxAttempts: 3, initialDelay: "10 millis", jitter: false } } },
            Agent.node({ model: "test-model", pricing, prompt: () => "hi", update: ({ text }) => ({ answer: text }) })
          )
          .edge(Graph.START, "agent")
          .edge("agent", Graph.END)
          .compile
        const handle = yield* runner.start(graph, {})
        const result = yield* Effect.fork(handle.result)
        yield* TestClock.adjust("4900 millis")
        assert.strictEqual((yield* modelLog).length, 1, "the backoff alone (10 ms) would have retried already")
        yield* TestClock.adjust("100 millis")
        const done = yield* Fiber.join(result)
        assert.strictEqual(done.status, "completed")
        assert.strictEqual(done.state.answer, "after the wait")
        assert.strictEqual((yield* modelLog).length, 2)
      })))

  it.effect("does not retry a 401: another attempt cannot fix a rejected key", () =>
    withSetup([httpFailure(401), { text: "never" }], () =>
      Effect.gen(function*() {
        const runner = yield* Runner.Runner
        const graph = yield* Graph.make({ id: "agent-401", state: S })
          .node(
            "agent",
            { writes: ["answer"], policy: { retry: { maxAttempts: 3, initialDelay: "10 millis", jitter: false } } },
            Agent.node({ model: "test-model", pricing, prompt: () => "hi", update: ({ text }) => ({ answer: text }) })
          )
          .edge(Graph.START, "agent")
          .edge("agent", Graph.END)
          .compile
        const handle = yield* runner.start(graph, {})
        const result = yield* handle.result
        assert.strictEqual(result.status, "failed")
        assert.strictEqual(result.error?.tag, "ModelAuthError")
        assert.strictEqual((yield* modelLog).length, 1)
      })))

  it.effect("continues a thread: a new run from a completed run's final state, the new message appended", () =>
    withSetup([{ text: "Hello!" }, { text: "You said hi before." }], () =>
      Effect.gen(function*() {
        const runner = yield* Runner.Runner
        const graph = yield* Graph.make({ id: "agent-chat", state: S })
          .node(
            "agent",
            { reads: ["messages"], writes: ["messages", "answer"] },
            Agent.node({
              model: "test-model",
              pricing,
              history: (state: { readonly messages: ReadonlyArray<Agent.Message> }) => state.messages,
              update: ({ messages, text }) => ({ messages, answer: text })
            })
          )
          .edge(Graph.START, "agent")
          .edge("agent", Graph.END)
          .compile
        const first = yield* runner.start(graph, { messages: [{ role: "user", content: "hi" }] }, { tenant: "acme" })
        assert.strictEqual((yield* first.result).status, "completed")
        const second = yield* runner.continue(graph, first.runId, { messages: [{ role: "user", content: "what did I say?" }] })
        const result = yield* second.result
        assert.strictEqual(result.status, "completed")
        assert.strictEqual(result.state.answer, "You said hi before.")
        assert.deepStrictEqual(
          result.state.messages.map((m) => [m.role, typeof m.content === "string" ? m.content : (m.content[0] as any)?.text]),
          [["user", "hi"], ["assistant", "Hello!"], ["user", "what did I say?"], ["assistant", "You said hi before."]]
        )
        assert.strictEqual((yield* modelLog)[1]!.prompt.content.length, 3)
        const thread = yield* runner.thread(second.runId)
        assert.deepStrictEqual(thread.map((r) => [r.runId, r.tenant]), [[first.runId, "acme"], [second.runId, "acme"]])

        const notDone = yield* runner.start(graph, {}, { interruptBefore: ["agent"] })
        yield* notDone.result
        const refused = yield* Effect.flip(runner.continue(graph, notDone.runId, {}))
        assert.strictEqual(refused._tag, "RunStatusError")
        const bad = yield* Effect.flip(runner.continue(graph, first.runId, { messages: "not a list" as never }))
        assert.include(["InputValidationError", "StateValidationError"], bad._tag)
      })))

  it.effect("a retried attempt answers completed calls from the journal: not sent, not run, not counted again", () =>
    withSetup([
      { toolCalls: [{ name: "lookup", params: { q: "agua" } }], usage: { inputTokens: 10, outputTokens: 5 } },
      httpFailure(503),
      { text: "agua means water", usage: { inputTokens: 20, outputTokens: 3 } }
    ], (calls) =>
      Effect.gen(function*() {
        const runner = yield* Runner.Runner
        const graph = yield* Graph.make({ id: "agent-journal-retry", state: S })
          .node(
            "agent",
            { writes: ["answer"], policy: { retry: { maxAttempts: 2, initialDelay: "1 millis", jitter: false } } },
            Agent.node({
              model: "test-model",
              pricing,
              prompt: () => "agua?",
              toolkit: Tools,
              update: ({ text }) => ({ answer: text })
            })
          )
          .edge(Graph.START, "agent")
          .edge("agent", Graph.END)
          .compile
        const handle = yield* runner.start(graph, {})
        const pending = yield* Effect.fork(handle.result)
        yield* TestClock.adjust("1 second")
        const result = yield* Fiber.join(pending)
        assert.strictEqual(result.status, "completed")
        assert.strictEqual(result.state.answer, "agua means water")
        assert.strictEqual((yield* modelLog).length, 3, "call 0 was not sent again by the second attempt")
        assert.deepStrictEqual(yield* Ref.get(calls), ["agua"], "the tool ran once")
        assert.strictEqual(result.usage.total.tokens, 38, "call 0's tokens count once")
        const events = yield* eventsOf(handle.runId)
        assert.deepStrictEqual(pick(events, "ModelCalled").map((e) => [e.call, e.replayed ?? false, e.inputTokens]), [
          [0, false, 10],
          [0, true, 0],
          [2, false, 20]
        ])
        assert.deepStrictEqual(pick(events, "ToolReturned").map((e) => [e.call, e.replayed ?? false]), [[1, false], [1, true]])
      })))

  const divergingGraph = (journal: "strict" | "rerecord") => {
    let attempts = 0
    return Graph.make({ id: `agent-diverge-${journal}`, state: S })
      .node(
        "agent",
        { writes: ["answer"], policy: { retry: { maxAttempts: 2, initialDelay: "1 millis", jitter: false } } },
        Agent.node({
          model: "test-model",
          pricing,
          prompt: () => `agua? (asked ${++attempts} times)`,
          toolkit: Tools,
          journal,
          update: ({ text }) => ({ answer: text })
        })
      )
      .edge(Graph.START, "agent")
      .edge("agent", Graph.END)
      .compile
  }

  it.effect("a retry whose request differs from the journaled one fails with JournalDivergenceError", () =>
    withSetup([{ toolCalls: [{ name: "lookup", params: { q: "agua" } }] }, httpFailure(503)], () =>
      Effect.gen(function*() {
        const runner = yield* Runner.Runner
        const handle = yield* runner.start(yield* divergingGraph("strict"), {})
        const pending = yield* Effect.fork(handle.result)
        yield* TestClock.adjust("1 second")
        const result = yield* Fiber.join(pending)
        assert.strictEqual(result.status, "failed")
        assert.strictEqual(result.error?.tag, "JournalDivergenceError")
        assert.match(result.error?.message ?? "", /model call 0 of .* differs from the recorded call/)
        assert.strictEqual((yield* modelLog).length, 2, "the changed call was not sent")
      })))

  it.effect("with journal: rerecord, a diverging call drops the records from there and calls anew", () =>
    withSetup([
      { toolCalls: [{ name: "lookup", params: { q: "agua" } }] },
      httpFailure(503),
      { toolCalls: [{ name: "lookup", params: { q: "eau" } }] },
      { text: "water" }
    ], (calls) =>
      Effect.gen(function*() {
        const runner = yield* Runner.Runner
        const handle = yield* runner.start(yield* divergingGraph("rerecord"), {})
        const pending = yield* Effect.fork(handle.result)
        yield* TestClock.adjust("1 second")
        const result = yield* Fiber.join(pending)
        assert.strictEqual(result.status, "completed")
        assert.strictEqual(result.state.answer, "water")
        assert.strictEqual((yield* modelLog).length, 4)
        assert.deepStrictEqual(yield* Ref.get(calls), ["agua", "eau"])
      })))
})
