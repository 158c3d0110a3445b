/**
 * A local HTTP server that speaks the model providers' wire formats (OpenAI responses and chat
 * completions, Anthropic messages; JSON and SSE streaming) and answers from a script, so the real
 * `@effect/ai-openai` and `@effect/ai-anthropic` layers run unchanged against it with only the
 * base URL changed. Every request is recorded (secrets removed) and counted.
 */
import type { LanguageModel } from "@effect/ai"
import { Context, Effect, Layer, Redacted } from "effect"
import type { Scope } from "effect"
import * as Http from "node:http"
import type { AddressInfo } from "node:net"
import * as Provider from "../../src/layers/model/Provider.js"
import type { ProviderConfigError, ProviderName } from "../../src/layers/model/ProviderErrors.js"

/** A tool call a reply makes: the tool's name and its arguments (any JSON value, sent as the provider encodes it). */
export interface FakeToolCall {
  readonly name: string
  readonly arguments: unknown
  /** Defaults to `call_<request index>_<position>` (OpenAI) or `toolu_<request index>_<position>` (Anthropic). */
  readonly id?: string
}

/** What one request is answered with. Everything is optional: `{}` is an empty text answer. */
export interface FakeReply {
  readonly text?: string
  readonly toolCalls?: ReadonlyArray<FakeToolCall>
  /** Reported usage; default 10 input and 5 output tokens. */
  readonly usage?: { readonly inputTokens: number; readonly outputTokens: number }
  /** Default `"tool-calls"` when the reply calls tools, else `"stop"`; encoded in each provider's vocabulary. */
  readonly finishReason?: "stop" | "tool-calls" | "length"
  /** An HTTP status; 4xx/5xx answers with the provider's error body (`errorMessage` in it). */
  readonly status?: number
  readonly errorMessage?: string
  /** Extra response headers, e.g. `{ "retry-after": "2" }`. */
  readonly headers?: Readonly<Record<string, string>>
  /** Milliseconds to wait before answering. */
  readonly delayMillis?: number
  /** Milliseconds between streamed events. */
  readonly streamDelayMillis?: number
  /**
   * Ends a streamed answer with the provider's `error` event after its content (and no completion):
   * `type` is the provider's error type (default `server_error` for OpenAI, `overloaded_error` for Anthropic).
   */
  readonly streamError?: { readonly type?: string; readonly message?: string }
  /** The vectors of an embeddings request, one per input (default: 8 numbers derived from each input text). */
  readonly embeddings?: ReadonlyArray<ReadonlyArray<number>>
  /** A raw body sent as is (with `status`, default 200, and `contentType`, default JSON): a malformed answer. */
  readonly body?: string
  readonly contentType?: string
}

/** Which wire format a request used, from its path. */
export type FakeApi = "openai.responses" | "openai.chat" | "openai.embeddings" | "anthropic.messages" | "unknown"

/** How a request authenticated; the key itself is never recorded. */
export interface FakeAuth {
  /** The header that carried a key: `authorization` (Bearer) or `x-api-key`; `none` when neither did. */
  readonly header: "authorization" | "x-api-key" | "none"
  /** Whether the key equals the server's `apiKey` (always `true` when the server expects none). */
  readonly matched: boolean
}

/** One request the server received. */
export interface FakeRequest {
  /** 0-based, in arrival order, over all paths. */
  readonly index: number
  readonly method: string
  /** The path with its query string. */
  readonly path: string
  readonly api: FakeApi
  /** The request headers, with `authorization`, `x-api-key` and other credentials replaced by `<redacted>`. */
  readonly headers: Readonly<Record<string, string>>
  readonly auth: FakeAuth
  /** The parsed JSON body (`undefined` when the body was not JSON). */
  readonly body: unknown
  readonly stream: boolean
  readonly model: string | undefined
  /** How many tool results the request's conversation carries: which turn of an agent loop it is. */
  readonly toolResults: number
}

/** The script of a server: replies by request index, or a function of the request and its index. */
export type FakeScript =
  | ReadonlyArray<FakeReply>
  | ((request: FakeRequest, index: number) => FakeReply | undefined)

/** A rule that answers every request past the listed replies with a tool call, `times` times, then `final`. */
export interface FakeLoop {
  readonly toolCall: FakeToolCall
  readonly times: number
  /**
   * What counts toward `times` (and fills `{{index}}`): `"requests"` (default) counts requests past the
   * listed replies; `"toolResults"` counts the tool results in the request's conversation, so a call sent
   * again after a crash or a retry gets the same answer as the first time.
   */
  readonly countBy?: "requests" | "toolResults"
  /** Default `{ text: "done" }`. */
  readonly final?: FakeReply
}

/** A script as JSON (for the standalone process): `replies` by index, then the optional `loop`. */
export interface FakeScriptJson {
  readonly replies?: ReadonlyArray<FakeReply>
  readonly loop?: FakeLoop
  /** The key the server accepts; other keys get a 401. */
  readonly apiKey?: string
}

/** Options of the server. */
export interface FakeOptions {
  /** The key the server accepts (as Bearer token or `x-api-key`); any other key gets a 401. Default: any key. */
  readonly apiKey?: string
  /** Called with each request as it is received, before it is answered. */
  readonly onRequest?: (request: FakeRequest) => void
}

/** A running fake provider. */
export interface FakeProviderService {
  /** `http://127.0.0.1:<port>`: the Anthropic base URL. */
  readonly url: string
  /** `<url>/v1`: the OpenAI (and OpenAI-compatible) base URL. */
  readonly openaiUrl: string
  /** Same as `url`. */
  readonly anthropicUrl: string
  /** Every request received so far, in order. */
  readonly requests: Effect.Effect<ReadonlyArray<FakeRequest>>
  /** How many requests were received so far. */
  readonly count: Effect.Effect<number>
}

/** The fake provider of a test, provided by `layer`. */
export class FakeProvider extends Context.Tag("fibergraph/test/FakeProvider")<FakeProvider, FakeProviderService>() {}

const defaultUsage = { inputTokens: 10, outputTokens: 5 }
const secretHeaders = new Set([
  "authorization",
  "x-api-key",
  "openai-organization",
  "openai-project",
  "cookie",
  "proxy-authorization"
])

/** A script from its JSON form: `replies[i]` for the first requests, then the loop's tool calls, then its final reply. */
export const fromJson = (json: FakeScriptJson): FakeScript => {
  const replies = json.replies ?? []
  return (request, index) => {
    if (json.loop?.countBy === "toolResults") {
      const step = request.toolResults
      return step < json.loop.times ? loopReply(json.loop.toolCall, step) : json.loop.final ?? { text: "done" }
    }
    if (index < replies.length) return replies[index]
    if (json.loop === undefined) return undefined
    const step = index - replies.length
    return step < json.loop.times ? loopReply(json.loop.toolCall, index) : json.loop.final ?? { text: "done" }
  }
}

const fillIndex = (value: unknown, index: number): unknown =>
  typeof value === "string"
    ? value.replaceAll("{{index}}", String(index))
    : Array.isArray(value)
    ? value.map((item) => fillIndex(item, index))
    : typeof value === "object" && value !== null
    ? Object.fromEntries(Object.entries(value).map(([key, item]) => [key, fillIndex(item, index)]))
    : value

const loopReply = (toolCall: FakeToolCall, index: number): FakeReply => ({
  toolCalls: [{ ...toolCall, arguments: fillIndex(toolCall.arguments, index) }]
})

/**
 * A script that answers with the same tool call (`{{index}}` in its string arguments replaced by the
 * request index, or the turn with `countBy: "toolResults"`) `times` times, then with `final`: a ten-call agent loop.
 */
export const toolLoop = (loop: FakeLoop): FakeScript => fromJson({ loop })

const items = (value: unknown): ReadonlyArray<unknown> => Array.isArray(value) ? value : []

/** How many tool results a provider request body carries (OpenAI responses or chat, Anthropic messages). */
export const toolResultsIn = (body: unknown): number =>
  items(field(body, "input")).filter((item) => field(item, "type") === "function_call_output").length +
  items(field(body, "messages")).reduce<number>(
    (count, message) =>
      count + (field(message, "role") === "tool" ? 1 : 0) +
      items(field(message, "content")).filter((part) => field(part, "type") === "tool_result").length,
    0
  )

const apiOf = (path: string): FakeApi => {
  const pathname = path.split("?")[0]!
  if (/\/responses$/.test(pathname)) return "openai.responses"
  if (/\/chat\/completions$/.test(pathname)) return "openai.chat"
  if (/\/embeddings$/.test(pathname)) return "openai.embeddings"
  if (/\/messages$/.test(pathname)) return "anthropic.messages"
  return "unknown"
}

const authOf = (headers: Http.IncomingHttpHeaders, apiKey: string | undefined): FakeAuth => {
  const bearer = typeof headers.authorization === "string" ? /^Bearer (.*)$/i.exec(headers.authorization)?.[1] : undefined
  const xApiKey = typeof headers["x-api-key"] === "string" ? headers["x-api-key"] : undefined
  const key = bearer ?? xApiKey
  return {
    header: bearer !== undefined ? "authorization" : xApiKey !== undefined ? "x-api-key" : "none",
    matched: apiKey === undefined || key === apiKey
  }
}

const recordHeaders = (headers: Http.IncomingHttpHeaders): Record<string, string> =>
  Object.fromEntries(
    Object.entries(headers).flatMap(([name, value]) =>
      value === undefined
        ? []
        : [[name, secretHeaders.has(name) ? "<redacted>" : Array.isArray(value) ? value.join(", ") : value]]
    )
  )

const parseJson = (text: string): unknown => {
  try {
    return JSON.parse(text)
  } catch {
    return undefined
  }
}

const field = (body: unknown, name: string): unknown =>
  typeof body === "object" && body !== null ? (body as Record<string, unknown>)[name] : undefined

const sleep = (millis: number | undefined) =>
  millis === undefined || millis <= 0 ? Promise.resolve() : new Promise((resolve) => setTimeout(resolve, millis))

const finishOf = (reply: FakeReply) =>
  reply.finishReason ?? ((reply.toolCalls?.length ?? 0) > 0 ? "tool-calls" : "stop")

const argumentsJson = (call: FakeToolCall) =>
  typeof call.arguments === "string" ? call.arguments : JSON.stringify(call.arguments ?? {})

const chunks = (text: string): Array<string> => text.match(/\S+\s*|\s+/g) ?? []

const halves = (text: string): Array<string> => {
  const half = Math.ceil(text.length / 2)
  return [text.slice(0, half), text.slice(half)].filter((part) => part !== "")
}

interface Encoded {
  readonly status: number
  readonly headers: Record<string, string>
  readonly body?: string
  readonly events?: ReadonlyArray<{ readonly event?: string; readonly data: string }>
}

// --- Errors ---

const openaiErrorType = (status: number) =>
  status === 401
    ? ["invalid_request_error", "invalid_api_key"]
    : status === 429
    ? ["rate_limit_error", "rate_limit_exceeded"]
    : status >= 500
    ? ["server_error", "server_error"]
    : ["invalid_request_error", null]

const anthropicErrorType = (status: number) =>
  status === 401
    ? "authentication_error"
    : status === 403
    ? "permission_error"
    : status === 404
    ? "not_found_error"
    : status === 429
    ? "rate_limit_error"
    : status === 529 || status === 503
    ? "overloaded_error"
    : status >= 500
    ? "api_error"
    : "invalid_request_error"

const defaultErrorMessage = (status: number) =>
  status === 401
    ? "Incorrect API key provided. You can find your API key in your account settings."
    : status === 429
    ? "Rate limit reached. Please try again later."
    : status >= 500
    ? "The server had an error while processing your request."
    : "Invalid request."

const errorBody = (api: FakeApi, status: number, message: string, index: number) => {
  if (api === "anthropic.messages") {
    return { type: "error", error: { type: anthropicErrorType(status), message }, request_id: `req_fake_${index}` }
  }
  const [type, code] = openaiErrorType(status)
  return { error: { message, type, param: null, code } }
}

// --- OpenAI responses ---

const responsesUsage = (usage: FakeReply["usage"]) => {
  const { inputTokens, outputTokens } = usage ?? defaultUsage
  return {
    input_tokens: inputTokens,
    input_tokens_details: { cached_tokens: 0 },
    output_tokens: outputTokens,
    output_tokens_details: { reasoning_tokens: 0 },
    total_tokens: inputTokens + outputTokens
  }
}

const responsesEnvelope = (reply: FakeReply, request: FakeRequest, status: string, output: Array<unknown>) => {
  const finish = finishOf(reply)
  return {
    id: `resp_fake_${request.index}`,
    object: "response",
    status,
    created_at: Math.floor(Date.now() / 1000),
    error: null,
    incomplete_details: finish === "length" && status !== "in_progress" ? { reason: "max_output_tokens" } : null,
    output,
    instructions: null,
    model: request.model ?? "fake-model",
    parallel_tool_calls: true,
    tools: [],
    tool_choice: "auto",
    metadata: null,
    temperature: null,
    top_p: null,
    ...(status === "in_progress" ? {} : { usage: responsesUsage(reply.usage) })
  }
}

const responsesItems = (reply: FakeReply, request: FakeRequest) => {
  const items: Array<Record<string, unknown>> = []
  if (reply.text !== undefined || (reply.toolCalls ?? []).length === 0) {
    items.push({
      type: "message",
      id: `msg_fake_${request.index}`,
      role: "assistant",
      status: "completed",
      content: [{ type: "output_text", text: reply.text ?? "", annotations: [] }]
    })
  }
  ;(reply.toolCalls ?? []).forEach((call, position) =>
    items.push({
      type: "function_call",
      id: `fc_fake_${request.index}_${position}`,
      call_id: call.id ?? `call_${request.index}_${position}`,
      name: call.name,
      arguments: argumentsJson(call),
      status: "completed"
    })
  )
  return items
}

const responsesFinalStatus = (reply: FakeReply) => finishOf(reply) === "length" ? "incomplete" : "completed"

const responsesJson = (reply: FakeReply, request: FakeRequest) =>
  responsesEnvelope(reply, request, responsesFinalStatus(reply), responsesItems(reply, request))

const responsesEvents = (reply: FakeReply, request: FakeRequest) => {
  const events: Array<Record<string, unknown>> = []
  const push = (event: Record<string, unknown>) => events.push({ ...event, sequence_number: events.length })
  push({ type: "response.created", response: responsesEnvelope(reply, request, "in_progress", []) })
  const items = responsesItems(reply, request)
  items.forEach((item, outputIndex) => {
    if (item.type === "message") {
      const text = reply.text ?? ""
      push({
        type: "response.output_item.added",
        output_index: outputIndex,
        item: { ...item, status: "in_progress", content: [] }
      })
      push({
        type: "response.content_part.added",
        output_index: outputIndex,
        content_index: 0,
        item_id: item.id,
        part: { type: "output_text", text: "", annotations: [] }
      })
      for (const delta of chunks(text)) {
        push({
          type: "response.output_text.delta",
          output_index: outputIndex,
          content_index: 0,
          item_id: item.id,
          delta,
          logprobs: []
        })
      }
      push({
        type: "response.output_text.done",
        output_index: outputIndex,
        content_index: 0,
        item_id: item.id,
        text,
        logprobs: []
      })
      push({
        type: "response.content_part.done",
        output_index: outputIndex,
        content_index: 0,
        item_id: item.id,
        part: { type: "output_text", text, annotations: [] }
      })
    } else {
      const args = item.arguments as string
      push({
        type: "response.output_item.added",
        output_index: outputIndex,
        item: { ...item, arguments: "", status: "in_progress" }
      })
      for (const delta of halves(args)) {
        push({ type: "response.function_call_arguments.delta", output_index: outputIndex, item_id: item.id, delta })
      }
      push({ type: "response.function_call_arguments.done", output_index: outputIndex, item_id: item.id, arguments: args })
    }
    push({ type: "response.output_item.done", output_index: outputIndex, item })
  })
  if (reply.streamError !== undefined) {
    push({
      type: "error",
      code: reply.streamError.type ?? "server_error",
      message: reply.streamError.message ?? "The server had an error while processing your request.",
      param: null
    })
    return events.map((event) => ({ event: event.type as string, data: JSON.stringify(event) }))
  }
  const status = responsesFinalStatus(reply)
  push({
    type: status === "incomplete" ? "response.incomplete" : "response.completed",
    response: responsesEnvelope(reply, request, status, items)
  })
  return events.map((event) => ({ event: event.type as string, data: JSON.stringify(event) }))
}

// --- OpenAI chat completions ---

const chatFinish = (reply: FakeReply) => ({ stop: "stop", "tool-calls": "tool_calls", length: "length" })[finishOf(reply)]

const chatUsage = (usage: FakeReply["usage"]) => {
  const { inputTokens, outputTokens } = usage ?? defaultUsage
  return { prompt_tokens: inputTokens, completion_tokens: outputTokens, total_tokens: inputTokens + outputTokens }
}

const chatToolCalls = (reply: FakeReply, request: FakeRequest) =>
  (reply.toolCalls ?? []).map((call, position) => ({
    id: call.id ?? `call_${request.index}_${position}`,
    type: "function",
    function: { name: call.name, arguments: argumentsJson(call) }
  }))

const chatJson = (reply: FakeReply, request: FakeRequest) => {
  const toolCalls = chatToolCalls(reply, request)
  return {
    id: `chatcmpl-fake-${request.index}`,
    object: "chat.completion",
    created: Math.floor(Date.now() / 1000),
    model: request.model ?? "fake-model",
    choices: [{
      index: 0,
      message: {
        role: "assistant",
        content: reply.text ?? (toolCalls.length > 0 ? null : ""),
        refusal: null,
        ...(toolCalls.length > 0 ? { tool_calls: toolCalls } : {})
      },
      logprobs: null,
      finish_reason: chatFinish(reply)
    }],
    usage: chatUsage(reply.usage)
  }
}

const chatEvents = (reply: FakeReply, request: FakeRequest) => {
  const base = {
    id: `chatcmpl-fake-${request.index}`,
    object: "chat.completion.chunk",
    created: Math.floor(Date.now() / 1000),
    model: request.model ?? "fake-model"
  }
  const chunk = (delta: Record<string, unknown>, finish: string | null = null) =>
    ({ ...base, choices: [{ index: 0, delta, logprobs: null, finish_reason: finish }] })
  const events: Array<unknown> = [chunk({ role: "assistant", content: "" })]
  for (const delta of chunks(reply.text ?? "")) events.push(chunk({ content: delta }))
  chatToolCalls(reply, request).forEach((call, position) => {
    events.push(chunk({ tool_calls: [{ index: position, id: call.id, type: "function", function: { name: call.function.name, arguments: "" } }] }))
    events.push(chunk({ tool_calls: [{ index: position, function: { arguments: call.function.arguments } }] }))
  })
  events.push(chunk({}, chatFinish(reply)))
  const includeUsage = field(field(request.body, "stream_options"), "include_usage") === true
  if (includeUsage) events.push({ ...base, choices: [], usage: chatUsage(reply.usage) })
  return [...events.map((event) => ({ data: JSON.stringify(event) })), { data: "[DONE]" }]
}

// --- OpenAI embeddings ---

const vectorOf = (text: string): Array<number> =>
  Array.from({ length: 8 }, (_, position) => {
    let hash = 2166136261 ^ position
    for (const char of text) hash = Math.imul(hash ^ char.charCodeAt(0), 16777619)
    return ((hash >>> 0) % 2000) / 1000 - 1
  })

const embeddingsJson = (reply: FakeReply, request: FakeRequest) => {
  const raw = field(request.body, "input")
  const inputs = Array.isArray(raw) ? raw.map(String) : [String(raw ?? "")]
  const tokens = reply.usage?.inputTokens ?? inputs.reduce((sum, input) => sum + chunks(input).length, 0)
  return {
    object: "list",
    data: inputs.map((input, index) => ({ object: "embedding", index, embedding: reply.embeddings?.[index] ?? vectorOf(input) })),
    model: request.model ?? "fake-embedding",
    usage: { prompt_tokens: tokens, total_tokens: tokens }
  }
}

// --- Anthropic messages ---

const anthropicStop = (reply: FakeReply) => ({ stop: "end_turn", "tool-calls": "tool_use", length: "max_tokens" })[finishOf(reply)]

const anthropicUsage = (usage: FakeReply["usage"], outputTokens?: number) => {
  const { inputTokens, outputTokens: output } = usage ?? defaultUsage
  return {
    input_tokens: inputTokens,
    output_tokens: outputTokens ?? output,
    cache_creation_input_tokens: 0,
    cache_read_input_tokens: 0
  }
}

const anthropicBlocks = (reply: FakeReply, request: FakeRequest) => [
  ...(reply.text !== undefined || (reply.toolCalls ?? []).length === 0
    ? [{ type: "text", text: reply.text ?? "", citations: null }]
    : []),
  ...(reply.toolCalls ?? []).map((call, position) => ({
    type: "tool_use",
    id: call.id ?? `toolu_${request.index}_${position}`,
    name: call.name,
    input: call.arguments ?? {}
  }))
]

const anthropicMessage = (reply: FakeReply, request: FakeRequest, content: Array<unknown>, final: boolean) => ({
  id: `msg_fake_${request.index}`,
  type: "message",
  role: "assistant",
  model: request.model ?? "fake-model",
  content,
  stop_reason: final ? anthropicStop(reply) : null,
  stop_sequence: null,
  usage: anthropicUsage(reply.usage, final ? undefined : 1)
})

const anthropicJson = (reply: FakeReply, request: FakeRequest) =>
  anthropicMessage(reply, request, anthropicBlocks(reply, request), true)

const anthropicEvents = (reply: FakeReply, request: FakeRequest) => {
  const events: Array<Record<string, unknown>> = [
    { type: "message_start", message: anthropicMessage(reply, request, [], false) },
    { type: "ping" }
  ]
  anthropicBlocks(reply, request).forEach((block, index) => {
    if (block.type === "text") {
      events.push({ type: "content_block_start", index, content_block: { type: "text", text: "", citations: null } })
      for (const text of chunks(reply.text ?? "")) {
        events.push({ type: "content_block_delta", index, delta: { type: "text_delta", text } })
      }
    } else {
      const input = JSON.stringify((block as { input: unknown }).input)
      events.push({ type: "content_block_start", index, content_block: { ...block, input: {} } })
      for (const partial of halves(input)) {
        events.push({ type: "content_block_delta", index, delta: { type: "input_json_delta", partial_json: partial } })
      }
    }
    events.push({ type: "content_block_stop", index })
  })
  if (reply.streamError !== undefined) {
    events.push({
      type: "error",
      error: { type: reply.streamError.type ?? "overloaded_error", message: reply.streamError.message ?? "Overloaded" }
    })
    return events.map((event) => ({ event: event.type as string, data: JSON.stringify(event) }))
  }
  events.push({
    type: "message_delta",
    delta: { stop_reason: anthropicStop(reply), stop_sequence: null },
    usage: { output_tokens: (reply.usage ?? defaultUsage).outputTokens }
  })
  events.push({ type: "message_stop" })
  return events.map((event) => ({ event: event.type as string, data: JSON.stringify(event) }))
}

// --- Dispatch ---

const json = (status: number, value: unknown, headers: Record<string, string> = {}): Encoded => ({
  status,
  headers: { "content-type": "application/json", ...headers },
  body: JSON.stringify(value)
})

const encode = (request: FakeRequest, reply: FakeReply | undefined): Encoded => {
  const extra = { ...reply?.headers }
  if (request.api === "unknown") {
    return json(404, { error: { message: `fake provider: no endpoint ${request.method} ${request.path}` } })
  }
  if (!request.auth.matched) {
    const message = request.api === "anthropic.messages" ? "invalid x-api-key" : defaultErrorMessage(401)
    return json(401, errorBody(request.api, 401, message, request.index), extra)
  }
  if (reply === undefined) {
    return json(
      500,
      errorBody(request.api, 500, `fake provider: the script has no reply for request ${request.index}`, request.index)
    )
  }
  if (reply.body !== undefined) {
    return {
      status: reply.status ?? 200,
      headers: { "content-type": reply.contentType ?? "application/json", ...extra },
      body: reply.body
    }
  }
  if (reply.status !== undefined && reply.status >= 400) {
    return json(
      reply.status,
      errorBody(request.api, reply.status, reply.errorMessage ?? defaultErrorMessage(reply.status), request.index),
      extra
    )
  }
  const status = reply.status ?? 200
  if (request.api === "openai.embeddings") return json(status, embeddingsJson(reply, request), extra)
  if (request.stream) {
    const events = request.api === "openai.responses"
      ? responsesEvents(reply, request)
      : request.api === "openai.chat"
      ? chatEvents(reply, request)
      : anthropicEvents(reply, request)
    return {
      status,
      headers: { "content-type": "text/event-stream", "cache-control": "no-cache", ...extra },
      events
    }
  }
  const value = request.api === "openai.responses"
    ? responsesJson(reply, request)
    : request.api === "openai.chat"
    ? chatJson(reply, request)
    : anthropicJson(reply, request)
  return json(status, value, extra)
}

const readBody = (incoming: Http.IncomingMessage): Promise<string> =>
  new Promise((resolve, reject) => {
    const parts: Array<Buffer> = []
    incoming.on("data", (chunk: Buffer) => parts.push(chunk))
    incoming.on("end", () => resolve(Buffer.concat(parts).toString("utf8")))
    incoming.on("error", reject)
  })

const pickReply = (script: FakeScript, request: FakeRequest): FakeReply | undefined => {
  if (typeof script === "function") return script(request, request.index)
  return script[request.index]
}

/** Starts a fake provider on 127.0.0.1 (a free port) in the current scope; closing the scope stops it. */
export const start = (script: FakeScript, options: FakeOptions = {}): Effect.Effect<FakeProviderService, never, Scope.Scope> =>
  Effect.gen(function*() {
    const received: Array<FakeRequest> = []
    const handle = async (incoming: Http.IncomingMessage, outgoing: Http.ServerResponse) => {
      const text = await readBody(incoming)
      const body = parseJson(text)
      const path = incoming.url ?? "/"
      const request: FakeRequest = {
        index: received.length,
        method: incoming.method ?? "GET",
        path,
        api: apiOf(path),
        headers: recordHeaders(incoming.headers),
        auth: authOf(incoming.headers, options.apiKey),
        body,
        stream: field(body, "stream") === true,
        model: typeof field(body, "model") === "string" ? field(body, "model") as string : undefined,
        toolResults: toolResultsIn(body)
      }
      received.push(request)
      options.onRequest?.(request)
      const reply = request.auth.matched && request.api !== "unknown" ? pickReply(script, request) : undefined
      const encoded = encode(request, reply)
      await sleep(reply?.delayMillis)
      outgoing.writeHead(encoded.status, encoded.headers)
      if (encoded.events === undefined) {
        outgoing.end(encoded.body ?? "")
        return
      }
      for (const event of encoded.events) {
        if (outgoing.destroyed) return
        outgoing.write(`${event.event === undefined ? "" : `event: ${event.event}\n`}data: ${event.data}\n\n`)
        await sleep(reply?.streamDelayMillis)
      }
      outgoing.end()
    }
    const server = yield* Effect.acquireRelease(
      Effect.async<Http.Server>((resume) => {
        const server = Http.createServer((incoming, outgoing) => {
          handle(incoming, outgoing).catch((error) => {
            if (!outgoing.headersSent) outgoing.writeHead(500, { "content-type": "text/plain" })
            outgoing.end(`fake provider failed: ${String(error)}`)
          })
        })
        server.listen(0, "127.0.0.1", () => resume(Effect.succeed(server)))
      }),
      (server) =>
        Effect.async<void>((resume) => {
          server.closeAllConnections()
          server.close(() => resume(Effect.void))
        })
    )
    const { port } = server.address() as AddressInfo
    const url = `http://127.0.0.1:${port}`
    return {
      url,
      openaiUrl: `${url}/v1`,
      anthropicUrl: url,
      requests: Effect.sync(() => [...received]),
      count: Effect.sync(() => received.length)
    }
  })

/** Provides `FakeProvider`: a server answering from `script`, started with the layer and stopped with it. */
export const layer = (script: FakeScript, options: FakeOptions = {}): Layer.Layer<FakeProvider> =>
  Layer.scoped(FakeProvider, start(script, options))

/** The key `languageModel` sends unless told otherwise. */
export const defaultKey = "sk-fake-provider-key"

/**
 * `Provider.layer` (the real provider layers) pointed at the `FakeProvider` of the context:
 * `Layer.provideMerge(FakeProvider.languageModel("openai", "gpt-4.1-mini"), FakeProvider.layer(script))`.
 */
export const languageModel = (
  provider: ProviderName,
  model: string,
  apiKey: string = defaultKey
): Layer.Layer<LanguageModel.LanguageModel, ProviderConfigError, FakeProvider> =>
  Layer.unwrapEffect(
    Effect.map(FakeProvider, (fake) =>
      Provider.layer({
        provider,
        model,
        apiKey: Redacted.make(apiKey),
        baseUrl: provider === "anthropic" ? fake.anthropicUrl : fake.openaiUrl
      }))
  )
