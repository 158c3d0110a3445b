/**
 * The agent node kind: an ordinary node that runs a tool-calling loop on `@effect/ai`'s
 * `LanguageModel`: call the model, run the tools it asked for (in parallel, bounded), feed the
 * results back, until it answers or `maxIterations` is reached. Every model call and tool call is
 * journaled as it completes (`CallJournal`, under the node's idempotency key and the call's
 * index): a retried attempt or a resumed run answers completed calls from the journal instead of
 * sending, paying and counting them again.
 */
import { AiError, LanguageModel, Prompt, type Response, Tool, type Toolkit } from "@effect/ai"
import { Clock, Effect, Option, ParseResult, Schema, Stream } from "effect"
import { createHash } from "node:crypto"
import {
  AgentMaxIterationsError,
  AgentOutputError,
  type BudgetExceededError,
  JournalDivergenceError,
  type RunNotFoundError,
  type StaleClaimError
} from "./Errors.js"
import type { EventBody } from "./Events.js"
import { type Internals, internalsOf } from "./internal/NodeContext.js"
import { classifyNow, type ProviderError } from "./layers/model/ProviderErrors.js"
import type { NodeContext, Spending } from "./Node.js"
import type { CallKind, JournalEntry } from "./services/CallJournal.js"
import * as State from "./State.js"

/** A model's prices in USD per million tokens. */
export interface Pricing {
  readonly inputPerMTok: number
  readonly outputPerMTok: number
}

/** A message of a conversation, as kept in state (JSON-compatible). */
export type Message = Prompt.MessageEncoded

/** The schema of one message of a conversation. */
export const Message: Schema.Schema<Message> = Schema.encodedSchema(Prompt.Message) as Schema.Schema<Message>

/** A state channel holding a conversation: messages appended by each agent turn. */
export const messages = (): State.Channel<ReadonlyArray<Message>> => State.list(Message)

/** What an agent's loop ended with, for `update` to turn into a state update. */
export interface Answer<O> {
  /** The final answer's text. */
  readonly text: string
  /** The answer decoded against `output` (the text itself without one). */
  readonly value: O
  /** The messages this invocation added to the conversation: its prompt, the tool turns and the answer. */
  readonly messages: ReadonlyArray<Message>
  /** How many model calls the loop made (answered from the journal or not). */
  readonly iterations: number
  readonly usage: { readonly inputTokens: number; readonly outputTokens: number; readonly usd: number }
  readonly finishReason: string
}

/** How an agent node prompts its model, which tools it may call, and how its answer becomes a state update. */
export interface Options<S, I, U, Tools extends Record<string, Tool.Any>, O> {
  /** The model's name as recorded in usage, `ModelCalled` events, spans and the journal. */
  readonly model: string
  readonly pricing: Pricing
  /** The system prompt. */
  readonly system?: string | ((state: S, input: I) => string)
  /** The conversation so far (e.g. a `messages()` channel of the state). */
  readonly history?: (state: S, input: I) => ReadonlyArray<Message>
  /** This invocation's turn: a user message (a string) or messages; none continues the history. */
  readonly prompt?: (state: S, input: I) => string | ReadonlyArray<Message>
  /** The tools the model may call; their handlers come from the context (`toolkit.toLayer(...)`). */
  readonly toolkit?: Toolkit.Toolkit<Tools>
  /** The most model calls one invocation makes (default 8); reaching it is an `AgentMaxIterationsError`. */
  readonly maxIterations?: number
  /** How many tool calls of one turn run at once (default 4). */
  readonly toolConcurrency?: number
  /** Decodes the final answer (JSON); a failure gets one repair turn, then an `AgentOutputError`. */
  readonly output?: Schema.Schema<O, any>
  /** Streams the model's output to `Runner.watch` subscribers as `ModelDelta`s (default false: one response). */
  readonly stream?: boolean
  /**
   * Reserved against the run's and the node's budgets before each model call that is sent, so one
   * call cannot overshoot them far. Without `usd`, the tokens are priced at the higher of the two prices.
   */
  readonly estimate?: Spending
  /**
   * What a call that differs from the journal's record at the same index does: `"strict"` (default)
   * fails with `JournalDivergenceError`; `"rerecord"` drops the records from there and calls anew.
   */
  readonly journal?: "strict" | "rerecord"
  /** Turns the answer into the node's update (or command). */
  readonly update: (answer: Answer<O>, state: S, input: I) => U
}

/** The errors an agent node fails with, besides its tools' requirements. */
export type AgentError =
  | AiError.AiError
  | ProviderError
  | BudgetExceededError
  | AgentMaxIterationsError
  | AgentOutputError
  | JournalDivergenceError
  | StaleClaimError
  | RunNotFoundError

const perMillion = 1_000_000

const reservationOf = (pricing: Pricing, estimate: Spending | undefined): Spending | undefined => {
  if (estimate === undefined) return undefined
  const tokens = estimate.tokens
  const usd = estimate.usd ??
    (tokens === undefined ? undefined : (tokens * Math.max(pricing.inputPerMTok, pricing.outputPerMTok)) / perMillion)
  return {
    ...(tokens === undefined ? {} : { tokens }),
    ...(usd === undefined ? {} : { usd })
  }
}

/** JSON with object keys sorted, so equal requests hash equally. */
const stableJson = (value: unknown): string =>
  JSON.stringify(value, (_, v: unknown) =>
    v !== null && typeof v === "object" && !Array.isArray(v)
      ? Object.fromEntries(Object.entries(v as Record<string, unknown>).sort(([a], [b]) => a < b ? -1 : a > b ? 1 : 0))
      : v)

const hashOf = (value: unknown) => createHash("sha256").update(stableJson(value)).digest("hex")

/** A tool call the model asked for, as journaled. */
interface ToolCallRecord {
  readonly id: string
  readonly name: string
  readonly params: unknown
}

/** A model call's outcome, as journaled. */
interface ModelReply {
  readonly text: string
  readonly toolCalls: ReadonlyArray<ToolCallRecord>
  readonly finishReason: string
  readonly inputTokens: number
  readonly outputTokens: number
}

/** A tool call's outcome, as journaled and handed back to the model. */
interface ToolReply {
  readonly result: unknown
  readonly isFailure: boolean
}

/**
 * The tools as sent to the provider: the same names, descriptions and JSON schemas, but with
 * parameters taken as they come, so a malformed call reaches the loop (and goes back to the model
 * as a tool error) instead of failing the whole response's decoding.
 */
const wireTools = (tools: Record<string, Tool.Any>): Toolkit.WithHandler<Record<string, Tool.Any>> => {
  const wired: Record<string, Tool.Any> = {}
  for (const [name, tool] of Object.entries(tools)) {
    const parametersSchema = Schema.Record({ key: Schema.String, value: Schema.Unknown }).annotations({
      jsonSchema: Tool.getJsonSchema(tool as any) as object
    })
    wired[name] = Object.assign(Object.create(Object.getPrototypeOf(tool)), tool, { parametersSchema })
  }
  return {
    tools: wired,
    handle: (name) => Effect.dieMessage(`agent tool ${String(name)} is resolved by the agent loop, not by @effect/ai`)
  } as Toolkit.WithHandler<Record<string, Tool.Any>>
}

const replyOf = (parts: ReadonlyArray<Response.AnyPart>): ModelReply => {
  let text = ""
  const toolCalls: Array<ToolCallRecord> = []
  let finishReason = "unknown"
  let inputTokens = 0
  let outputTokens = 0
  for (const part of parts) {
    switch (part.type) {
      case "text":
        text += part.text
        break
      case "text-delta":
        text += part.delta
        break
      case "tool-call":
        if (part.providerExecuted !== true) toolCalls.push({ id: part.id, name: part.name, params: part.params })
        break
      case "finish":
        finishReason = part.reason
        inputTokens = part.usage.inputTokens ?? 0
        outputTokens = part.usage.outputTokens ?? 0
        break
    }
  }
  return { text, toolCalls, finishReason, inputTokens, outputTokens }
}

const assistantMessage = (reply: ModelReply): Message => ({
  role: "assistant",
  content: [
    ...(reply.text === "" ? [] : [{ type: "text" as const, text: reply.text }]),
    ...reply.toolCalls.map((call) => ({
      type: "tool-call" as const,
      id: call.id,
      name: call.name,
      params: call.params,
      providerExecuted: false
    }))
  ]
})

const toolMessage = (calls: ReadonlyArray<ToolCallRecord>, replies: ReadonlyArray<ToolReply>): Message => ({
  role: "tool",
  content: calls.map((call, i) => ({
    type: "tool-result" as const,
    id: call.id,
    name: call.name,
    isFailure: replies[i]!.isFailure,
    result: replies[i]!.result,
    providerExecuted: false
  }))
})

const describeFailure = (error: unknown): string =>
  typeof error === "object" && error !== null && "error" in error && typeof error.error === "string"
    ? error.error
    : error instanceof AiError.MalformedOutput || error instanceof AiError.MalformedInput
    ? error.description ?? error.message
    : error instanceof Error
    ? error.message
    : typeof error === "object" && error !== null && "message" in error
    ? String(error.message)
    : String(error)

/** Where a parse error points, as `$.a.b[0]`. */
const pathOf = (error: ParseResult.ParseError): string => {
  const issue = ParseResult.ArrayFormatter.formatErrorSync(error)[0]
  return issue === undefined ? "$" : `$${issue.path.map((p) => typeof p === "number" ? `[${p}]` : `.${String(p)}`).join("")}`
}

/** An agent node's run function, for `Graph.make(...).node(name, spec, Agent.node({ ... }))`. */
export const node = <S, I, U, Tools extends Record<string, Tool.Any> = {}, O = string>(
  options: Options<S, I, U, Tools, O>
) => {
  const reservation = reservationOf(options.pricing, options.estimate)
  const { inputPerMTok, outputPerMTok } = options.pricing
  const maxIterations = options.maxIterations ?? 8
  const streaming = options.stream ?? false
  const decodeOutput = options.output === undefined
    ? undefined
    : Schema.decodeUnknown(Schema.parseJson(options.output as Schema.Schema<O, unknown>))
  const costOf = (inputTokens: number, outputTokens: number) =>
    (inputTokens * inputPerMTok + outputTokens * outputPerMTok) / perMillion

  return (ctx: NodeContext<S, I>): Effect.Effect<
    U,
    AgentError,
    LanguageModel.LanguageModel | Tool.HandlersFor<Tools> | Tool.Requirements<Tools[keyof Tools]>
  > =>
    Effect.gen(function*() {
      const internals: Internals = internalsOf(ctx as NodeContext<unknown, unknown>)
      const { env } = internals
      const name = `${env.prefix}${ctx.node}`
      const journal = Option.fromNullable(env.journal)
      const model = yield* LanguageModel.LanguageModel
      const recorded = Option.isSome(journal) ? [...yield* journal.value.entries(ctx.runId, ctx.idempotencyKey)] : []
      let replaying = true
      const toolkit = options.toolkit === undefined ? undefined : yield* options.toolkit
      const tools = toolkit === undefined ? [] : Object.values(toolkit.tools as Record<string, Tool.Any>)
      const wired = toolkit === undefined || tools.length === 0 ? undefined : wireTools(toolkit.tools)
      const toolSchemas = tools.map((tool) => ({ name: tool.name, parameters: Tool.getJsonSchema(tool as any) }))

      const push = (body: EventBody) =>
        Effect.sync(() => {
          internals.events.push(internals.stamp(body))
        })

      /** The recorded entry at `index` if it is this call; a divergence otherwise (or a fresh start under `rerecord`). */
      const lookup = (index: number, kind: CallKind, callName: string, requestHash: string) =>
        Effect.gen(function*() {
          if (!replaying) return undefined
          const entry = recorded[index]
          if (entry === undefined) {
            replaying = false
            return undefined
          }
          if (entry.kind === kind && entry.name === callName && entry.requestHash === requestHash) return entry
          if (options.journal === "rerecord" && Option.isSome(journal)) {
            yield* env.guard
            yield* journal.value.truncate(ctx.runId, ctx.idempotencyKey, index, { epoch: env.epoch })
            recorded.length = index
            replaying = false
            return undefined
          }
          return yield* new JournalDivergenceError({
            runId: ctx.runId,
            key: ctx.idempotencyKey,
            index,
            kind,
            name: callName,
            recordedName: `${entry.kind} ${entry.name}`,
            recordedHash: entry.requestHash,
            requestHash
          })
        })

      const record = (entry: Omit<JournalEntry, "runId" | "key" | "step" | "at">) =>
        Effect.gen(function*() {
          if (Option.isNone(journal)) return
          yield* env.guard
          const at = yield* Clock.currentTimeMillis
          const full: JournalEntry = { ...entry, runId: ctx.runId, key: ctx.idempotencyKey, step: ctx.step, at }
          yield* journal.value.record(full, { epoch: env.epoch })
          recorded[entry.index] = full
        })

      const sendModel = (index: number, prompt: Prompt.Prompt) => {
        const request = { prompt, ...(wired === undefined ? {} : { toolkit: wired, disableToolCallResolution: true as const }) }
        if (!streaming) return Effect.map(model.generateText(request), (response) => replyOf(response.content))
        return model.streamText(request).pipe(
          Stream.tap((part) =>
            part.type === "text-delta" || part.type === "reasoning-delta" || part.type === "tool-params-delta"
              ? Effect.flatMap(Clock.currentTimeMillis, (at) =>
                env.live({
                  _tag: "ModelDelta",
                  runId: ctx.runId,
                  step: ctx.step,
                  node: name,
                  index: ctx.index,
                  call: index,
                  kind: part.type === "text-delta" ? "text" : part.type === "reasoning-delta" ? "reasoning" : "tool-params",
                  delta: part.delta,
                  ...(part.type === "tool-params-delta" ? { tool: part.id } : {}),
                  at
                }))
              : Effect.void
          ),
          Stream.runCollect,
          Effect.map((parts) => replyOf([...parts]))
        )
      }

      const callModel = (index: number, conversation: ReadonlyArray<Message>) =>
        Effect.gen(function*() {
          const requestHash = hashOf({ model: options.model, messages: conversation, tools: toolSchemas })
          const entry = yield* lookup(index, "model", options.model, requestHash)
          if (entry !== undefined) {
            const reply = entry.response as ModelReply
            const first = !internals.counted.has(index)
            internals.counted.add(index)
            yield* ctx.recordUsage({
              model: options.model,
              inputTokens: first ? reply.inputTokens : 0,
              outputTokens: first ? reply.outputTokens : 0,
              usd: first ? (entry.usage?.usd ?? costOf(reply.inputTokens, reply.outputTokens)) : 0,
              call: index,
              finishReason: reply.finishReason,
              replayed: true
            })
            return reply
          }
          if (reservation !== undefined) yield* ctx.reserve(reservation)
          const started = yield* Clock.currentTimeMillis
          const reply = yield* sendModel(index, Prompt.make(conversation)).pipe(
            Effect.catchAll((error) => Effect.flatMap(classifyNow(error), Effect.fail))
          )
          const latencyMs = (yield* Clock.currentTimeMillis) - started
          const usd = costOf(reply.inputTokens, reply.outputTokens)
          yield* record({
            index,
            kind: "model",
            name: options.model,
            requestHash,
            response: reply,
            usage: { inputTokens: reply.inputTokens, outputTokens: reply.outputTokens, usd }
          })
          internals.counted.add(index)
          yield* ctx.recordUsage({
            model: options.model,
            inputTokens: reply.inputTokens,
            outputTokens: reply.outputTokens,
            usd,
            call: index,
            latencyMs,
            finishReason: reply.finishReason
          })
          yield* Effect.annotateCurrentSpan({
            "gen_ai.usage.input_tokens": reply.inputTokens,
            "gen_ai.usage.output_tokens": reply.outputTokens,
            "gen_ai.response.finish_reason": reply.finishReason,
            "fibergraph.usd": usd
          })
          return reply
        }).pipe(
          Effect.withSpan("fibergraph.model", {
            attributes: {
              "gen_ai.operation.name": "chat",
              "gen_ai.request.model": options.model,
              "fibergraph.run_id": ctx.runId,
              "fibergraph.node": name,
              "fibergraph.step": ctx.step,
              "fibergraph.call": index
            }
          })
        )

      const runTool = (call: ToolCallRecord): Effect.Effect<ToolReply, never, any> =>
        toolkit === undefined
          ? Effect.succeed({ result: { error: `no tool named "${call.name}" is available` }, isFailure: true })
          : (toolkit.handle as (name: string, params: unknown) => Effect.Effect<Tool.HandlerResult<any>, unknown, any>)(
            call.name,
            call.params
          ).pipe(
            Effect.map(({ encodedResult, isFailure }): ToolReply => ({ result: encodedResult, isFailure })),
            Effect.catchAll((error) => Effect.succeed<ToolReply>({ result: { error: describeFailure(error) }, isFailure: true }))
          )

      const callTool = (index: number, call: ToolCallRecord) =>
        Effect.gen(function*() {
          const requestHash = hashOf({ tool: call.name, params: call.params })
          const ref = { node: name, index: ctx.index, tool: call.name, call: index, callId: call.id }
          yield* push({ _tag: "ToolCalled", ...ref, input: call.params })
          const entry = yield* lookup(index, "tool", call.name, requestHash)
          if (entry !== undefined) {
            const reply = entry.response as ToolReply
            yield* push({
              _tag: "ToolReturned",
              ...ref,
              output: reply.result,
              error: reply.isFailure ? describeFailure(reply.result) : null,
              replayed: true
            })
            return reply
          }
          const started = yield* Clock.currentTimeMillis
          const reply = yield* runTool(call)
          const durationMs = (yield* Clock.currentTimeMillis) - started
          yield* record({ index, kind: "tool", name: call.name, requestHash, response: reply, usage: null })
          yield* push({
            _tag: "ToolReturned",
            ...ref,
            output: reply.result,
            error: reply.isFailure ? describeFailure(reply.result) : null,
            durationMs
          })
          return reply
        }).pipe(
          Effect.withSpan("fibergraph.tool", {
            attributes: {
              "gen_ai.operation.name": "execute_tool",
              "gen_ai.tool.name": call.name,
              "fibergraph.run_id": ctx.runId,
              "fibergraph.node": name,
              "fibergraph.call": index
            }
          })
        )

      const system = typeof options.system === "function" ? options.system(ctx.state, ctx.input) : options.system
      const turn = options.prompt?.(ctx.state, ctx.input)
      const added: Array<Message> = turn === undefined
        ? []
        : typeof turn === "string"
        ? [{ role: "user", content: turn }]
        : [...turn]
      const head: Array<Message> = [
        ...(system === undefined ? [] : [{ role: "system" as const, content: system }]),
        ...(options.history?.(ctx.state, ctx.input) ?? [])
      ]
      const usage = { inputTokens: 0, outputTokens: 0, usd: 0 }
      let index = 0
      let repaired = false
      for (let iteration = 1;; iteration++) {
        const reply = yield* callModel(index++, [...head, ...added])
        usage.inputTokens += reply.inputTokens
        usage.outputTokens += reply.outputTokens
        usage.usd += costOf(reply.inputTokens, reply.outputTokens)
        added.push(assistantMessage(reply))
        if (reply.toolCalls.length === 0) {
          const answer = (value: O): Answer<O> => ({
            text: reply.text,
            value,
            messages: added,
            iterations: iteration,
            usage,
            finishReason: reply.finishReason
          })
          if (decodeOutput === undefined) return options.update(answer(reply.text as O), ctx.state, ctx.input)
          const decoded = yield* Effect.either(decodeOutput(reply.text))
          if (decoded._tag === "Right") return options.update(answer(decoded.right), ctx.state, ctx.input)
          const detail = ParseResult.TreeFormatter.formatErrorSync(decoded.left)
          if (repaired || iteration >= maxIterations) {
            return yield* new AgentOutputError({ node: name, path: pathOf(decoded.left), detail })
          }
          repaired = true
          added.push({
            role: "user",
            content: `Your answer does not match the required JSON schema: ${detail}\nAnswer again with JSON only.`
          })
          continue
        }
        if (iteration >= maxIterations) {
          return yield* new AgentMaxIterationsError({
            node: name,
            maxIterations,
            pendingTools: reply.toolCalls.map((call) => call.name)
          })
        }
        const first = index
        index += reply.toolCalls.length
        const replies = yield* Effect.forEach(reply.toolCalls, (call, i) => callTool(first + i, call), {
          concurrency: options.toolConcurrency ?? 4
        })
        added.push(toolMessage(reply.toolCalls, replies))
      }
    }) as Effect.Effect<U, AgentError, any>
}
