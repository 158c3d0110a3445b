/**
 * A deterministic `@effect/ai` `LanguageModel` for tests and examples: it answers from a script
 * instead of the network, records every request it receives, and can simulate latency (on the
 * `Clock`, so `TestClock` drives it) and failures (to exercise retries).
 */
import { AiError, LanguageModel, type Prompt, type Response } from "@effect/ai"
import { Context, type Duration, Effect, Layer, Ref, Stream } from "effect"

/** A tool call the scripted model makes; the request must offer a tool of that name (through a toolkit). */
export interface ScriptedToolCall {
  readonly name: string
  readonly params: unknown
  /** Defaults to `call_<call index>_<position>`. */
  readonly id?: string
}

/** A scripted answer: text and/or tool calls, with the usage the provider would report. */
export interface ScriptedReply {
  readonly _tag?: "Reply"
  readonly text?: string
  readonly toolCalls?: ReadonlyArray<ScriptedToolCall>
  /** Reported usage (default: zero tokens). */
  readonly usage?: { readonly inputTokens: number; readonly outputTokens: number }
  /** Default: `"tool-calls"` when the reply calls tools, else `"stop"`. */
  readonly finishReason?: Response.FinishReason
  /** How long this call takes, overriding the layer's `latency`. */
  readonly latency?: Duration.DurationInput
}

/** A scripted failure of one call (build it with `fail`). */
export interface ScriptedFailure {
  readonly _tag: "Failure"
  readonly error: AiError.AiError
  /** How long the call takes before it fails, overriding the layer's `latency`. */
  readonly latency?: Duration.DurationInput
}

/** What one call of the scripted model does. */
export type ScriptedResponse = ScriptedReply | ScriptedFailure

/**
 * The script: the responses of successive calls, or a function of the prompt and the 0-based call
 * index that returns `undefined` once it has nothing more to say.
 */
export type Script =
  | ReadonlyArray<ScriptedResponse>
  | ((prompt: Prompt.Prompt, callIndex: number) => ScriptedResponse | undefined)

/** Options of the scripted model. */
export interface Options {
  /** How long every call takes (default: no delay). */
  readonly latency?: Duration.DurationInput
}

/** One request the scripted model received. */
export interface ScriptedCall {
  /** 0-based, in the order the calls arrived. */
  readonly index: number
  readonly method: "generateText" | "streamText"
  readonly prompt: Prompt.Prompt
  /** The names of the tools the request offered. */
  readonly tools: ReadonlyArray<string>
  readonly toolChoice: LanguageModel.ToolChoice<string>
  readonly responseFormat: "text" | "json"
}

/** What a scripted model was asked: every request, including those the script could not answer. */
export class ScriptedModelLog extends Context.Tag("fibergraph/ScriptedModelLog")<ScriptedModelLog, {
  readonly calls: Effect.Effect<ReadonlyArray<ScriptedCall>>
  readonly count: Effect.Effect<number>
}>() {}

/** A scripted model and the log of its requests. */
export interface ScriptedModel {
  readonly model: LanguageModel.Service
  readonly log: ScriptedModelLog["Type"]
}

/** A scripted failure: an `AiError`, or a description that becomes an `AiError.UnknownError`. */
export const fail = (
  error: AiError.AiError | string,
  options: { readonly latency?: Duration.DurationInput } = {}
): ScriptedFailure => ({
  _tag: "Failure",
  error: typeof error === "string"
    ? new AiError.UnknownError({ module: "ScriptedModel", method: "generateText", description: error })
    : error,
  ...options
})

const isFailure = (response: ScriptedResponse): response is ScriptedFailure => response._tag === "Failure"

const finishOf = (reply: ScriptedReply): Response.FinishPartEncoded => {
  const inputTokens = reply.usage?.inputTokens ?? 0
  const outputTokens = reply.usage?.outputTokens ?? 0
  const calls = reply.toolCalls?.length ?? 0
  return {
    type: "finish",
    reason: reply.finishReason ?? (calls > 0 ? "tool-calls" : "stop"),
    usage: { inputTokens, outputTokens, totalTokens: inputTokens + outputTokens }
  }
}

const toolCallsOf = (reply: ScriptedReply, index: number): Array<Response.ToolCallPartEncoded> =>
  (reply.toolCalls ?? []).map((call, i) => ({
    type: "tool-call",
    id: call.id ?? `call_${index}_${i}`,
    name: call.name,
    params: call.params,
    providerExecuted: false
  }))

const partsOf = (reply: ScriptedReply, index: number): Array<Response.PartEncoded> => [
  ...(reply.text === undefined ? [] : [{ type: "text" as const, text: reply.text }]),
  ...toolCallsOf(reply, index),
  finishOf(reply)
]

const streamPartsOf = (reply: ScriptedReply, index: number): Array<Response.StreamPartEncoded> => {
  const id = `text_${index}`
  return [
    ...(reply.text === undefined ? [] : [
      { type: "text-start" as const, id },
      { type: "text-delta" as const, id, delta: reply.text },
      { type: "text-end" as const, id }
    ]),
    ...toolCallsOf(reply, index),
    finishOf(reply)
  ]
}

/** Builds a scripted `LanguageModel` service and the log of the requests it receives. */
export const make = (script: Script, options: Options = {}): Effect.Effect<ScriptedModel> =>
  Effect.gen(function*() {
    const calls = yield* Ref.make<ReadonlyArray<ScriptedCall>>([])

    const answer = (method: ScriptedCall["method"], request: LanguageModel.ProviderOptions) =>
      Effect.gen(function*() {
        const tools = request.tools.map((tool) => tool.name)
        const index = yield* Ref.modify(calls, (log): [number, ReadonlyArray<ScriptedCall>] => [log.length, [...log, {
          index: log.length,
          method,
          prompt: request.prompt,
          tools,
          toolChoice: request.toolChoice,
          responseFormat: request.responseFormat.type
        }]])
        const response = typeof script === "function" ? script(request.prompt, index) : script[index]
        if (response === undefined) {
          const description = typeof script === "function"
            ? `script exhausted: the script function returned no response for call ${index + 1}; make it answer this call`
            : `script exhausted: call ${index + 1} has no scripted response (the script has ${script.length}); add responses to the script`
          return yield* new AiError.UnknownError({ module: "ScriptedModel", method, description })
        }
        const latency = response.latency ?? options.latency
        if (latency !== undefined) yield* Effect.sleep(latency)
        if (isFailure(response)) return yield* Effect.fail(response.error)
        const unknown = (response.toolCalls ?? []).find((call) => !tools.includes(call.name))
        if (unknown !== undefined) {
          return yield* new AiError.MalformedOutput({
            module: "ScriptedModel",
            method,
            description: `call ${index + 1} scripts a call of tool "${unknown.name}", but the request offered ` +
              `[${tools.join(", ")}]; pass a toolkit with that tool`
          })
        }
        return { index, reply: response }
      })

    const model = yield* LanguageModel.make({
      generateText: (request) =>
        Effect.map(answer("generateText", request), ({ index, reply }) => partsOf(reply, index)),
      streamText: (request) =>
        Stream.unwrap(
          Effect.map(answer("streamText", request), ({ index, reply }) => Stream.fromIterable(streamPartsOf(reply, index)))
        )
    })

    const log = ScriptedModelLog.of({
      calls: Ref.get(calls),
      count: Effect.map(Ref.get(calls), (log) => log.length)
    })
    return { model, log }
  })

/** A scripted `LanguageModel` layer, with its `ScriptedModelLog`; each build starts the script afresh. */
export const layer = (
  script: Script,
  options: Options = {}
): Layer.Layer<LanguageModel.LanguageModel | ScriptedModelLog> =>
  Layer.effectContext(
    Effect.map(make(script, options), ({ log, model }) =>
      Context.make(LanguageModel.LanguageModel, model).pipe(Context.add(ScriptedModelLog, log)))
  )
