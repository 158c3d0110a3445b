import { AiError, EmbeddingModel, LanguageModel, Tool, Toolkit } from "@effect/ai"
import { assert, describe, it } from "@effect/vitest"
import {
  Cause,
  Chunk,
  ConfigProvider,
  Duration,
  Effect,
  Either,
  Layer,
  Logger,
  Option,
  Redacted,
  Schema,
  Stream,
  Tracer
} from "effect"
import * as ChildProcess from "node:child_process"
import * as NodeFs from "node:fs"
import * as NodeOs from "node:os"
import * as NodePath from "node:path"
import * as Provider from "../../../src/layers/model/Provider.js"
import * as ProviderErrors from "../../../src/layers/model/ProviderErrors.js"
import * as FakeProvider from "../../support/FakeProvider.js"

const Lookup = Tool.make("lookup", {
  parameters: { q: Schema.String, limit: Schema.Number },
  success: Schema.String
})
const Tools = Toolkit.make(Lookup)
const handlers = Tools.toLayer({ lookup: ({ q }) => Effect.succeed(`found ${q}`) })

const key = "sk-fibergraph-SECRET-7f3a9c1e55d24b"

type Kind = "openai" | "anthropic"

const cases: ReadonlyArray<{ readonly kind: Kind; readonly model: string; readonly header: string }> = [
  { kind: "openai", model: "gpt-4.1-mini", header: "authorization" },
  { kind: "anthropic", model: "claude-sonnet-4-5", header: "x-api-key" }
]

const baseUrl = (fake: FakeProvider.FakeProviderService, kind: Kind) =>
  kind === "openai" ? fake.openaiUrl : fake.anthropicUrl

const modelLayer = (fake: FakeProvider.FakeProviderService, kind: Kind, model: string, apiKey = key) =>
  Provider.layer({ provider: kind, model, apiKey: Redacted.make(apiKey), baseUrl: baseUrl(fake, kind) })

const withConfig = (entries: Record<string, string>) =>
  Effect.withConfigProvider(ConfigProvider.fromMap(new Map(Object.entries(entries))))

const leaks = (value: unknown): boolean => {
  const texts = [String(value)]
  try {
    texts.push(JSON.stringify(value))
  } catch {
    texts.push("<not JSON>")
  }
  if (value instanceof Error) texts.push(value.message, value.stack ?? "")
  texts.push(Cause.pretty(Cause.fail(value)))
  return texts.some((text) => text.includes(key) || text.includes(key.slice(3)))
}

const recordingTracer = () => {
  const seen: Array<string> = []
  const tracer = Tracer.make({
    span: (name, parent, context, links, startTime, kind) => {
      const attributes = new Map<string, unknown>()
      let status: Tracer.SpanStatus = { _tag: "Started", startTime }
      const span: Tracer.Span = {
        _tag: "Span",
        name,
        spanId: `span-${seen.length}-${Math.random().toString(16).slice(2)}`,
        traceId: "trace",
        parent,
        context,
        get status() {
          return status
        },
        attributes,
        links,
        sampled: true,
        kind,
        end: (endTime, exit) => {
          status = { _tag: "Ended", startTime, endTime, exit }
          seen.push(`${name} ${JSON.stringify([...attributes])} ${String(exit)}`)
        },
        attribute: (k, v) => {
          attributes.set(k, v)
        },
        event: (eventName, _time, eventAttributes) => {
          seen.push(`${eventName} ${JSON.stringify(eventAttributes ?? {})}`)
        },
        addLinks: () => {}
      }
      return span
    },
    context: (f) => f()
  })
  return { tracer, seen }
}

const captureLogs = () => {
  const lines: Array<string> = []
  const logger = Logger.make(({ annotations, cause, message }) => {
    lines.push(`${JSON.stringify(message)} ${Cause.pretty(cause)} ${JSON.stringify([...annotations])}`)
  })
  return { layer: Logger.replace(Logger.defaultLogger, logger), lines }
}

const classifyFailure = (kind: Kind, model: string) => <A, R>(effect: Effect.Effect<A, AiError.AiError, R>) =>
  Effect.flip(effect).pipe(
    Effect.map((error) => ({ raw: error, typed: ProviderErrors.classify(error, { provider: kind, model }) }))
  )

const using = (fake: FakeProvider.FakeProviderService, kind: Kind, model: string, apiKey = key) =>
  <A, E, R>(effect: Effect.Effect<A, E, R>) =>
    effect.pipe(Effect.provide(Layer.merge(modelLayer(fake, kind, model, apiKey), handlers)))

for (const { header, kind, model } of cases) {
  describe(`${kind} through the real provider layer`, () => {
    it.scoped("generateText: a tool call with decoded params and usage, then text; the key went in its header, not into the log", () =>
      Effect.gen(function*() {
        const fake = yield* FakeProvider.start([
          {
            toolCalls: [{ name: "lookup", arguments: { q: "water", limit: 3 } }],
            usage: { inputTokens: 21, outputTokens: 8 }
          },
          { text: "Water is wet.", usage: { inputTokens: 40, outputTokens: 4 } }
        ], { apiKey: key })
        const [first, second] = yield* Effect.all([
          LanguageModel.generateText({ prompt: "what is water?", toolkit: Tools }),
          LanguageModel.generateText({ prompt: "and then?" })
        ]).pipe(using(fake, kind, model))
        assert.strictEqual(first.toolCalls.length, 1)
        assert.strictEqual(first.toolCalls[0]!.name, "lookup")
        assert.deepStrictEqual(first.toolCalls[0]!.params, { q: "water", limit: 3 })
        assert.deepStrictEqual(first.toolResults.map((result) => result.result), ["found water"])
        assert.strictEqual(first.finishReason, "tool-calls")
        assert.strictEqual(first.usage.inputTokens, 21)
        assert.strictEqual(first.usage.outputTokens, 8)
        assert.strictEqual(second.text, "Water is wet.")
        assert.strictEqual(second.finishReason, "stop")
        assert.strictEqual(second.usage.inputTokens, 40)
        assert.strictEqual(second.usage.outputTokens, 4)

        const requests = yield* fake.requests
        assert.strictEqual(yield* fake.count, 2)
        assert.deepStrictEqual(requests.map((request) => request.auth), [
          { header, matched: true },
          { header, matched: true }
        ])
        assert.deepStrictEqual(requests.map((request) => request.model), [model, model])
        assert.deepStrictEqual(requests.map((request) => request.stream), [false, false])
        assert.strictEqual(requests[0]!.headers[header], "<redacted>")
        assert.isFalse(JSON.stringify(requests).includes(key))
        assert.include(JSON.stringify((requests[0]!.body as { tools: unknown }).tools), "lookup")
      }))

    it.scoped("streamText: text deltas, a tool call whose params decode, usage and finish reason", () =>
      Effect.gen(function*() {
        const fake = yield* FakeProvider.start([
          {
            toolCalls: [{ name: "lookup", arguments: { q: "fire", limit: 1 } }],
            usage: { inputTokens: 12, outputTokens: 6 }
          },
          { text: "Fire is hot and bright.", usage: { inputTokens: 30, outputTokens: 7 } }
        ], { apiKey: key })
        const [toolParts, textParts] = yield* Effect.all([
          LanguageModel.streamText({ prompt: "fire?", toolkit: Tools }).pipe(Stream.runCollect),
          LanguageModel.streamText({ prompt: "tell me" }).pipe(Stream.runCollect)
        ]).pipe(using(fake, kind, model))
        const tools = Chunk.toArray(toolParts)
        const call = tools.find((part) => part.type === "tool-call")
        assert.isDefined(call)
        if (call?.type === "tool-call") {
          assert.strictEqual(call.name, "lookup")
          assert.deepStrictEqual(call.params, { q: "fire", limit: 1 })
        }
        assert.isTrue(tools.some((part) => part.type === "tool-params-delta"))
        const toolFinish = tools.find((part) => part.type === "finish")
        assert.strictEqual(toolFinish?.type === "finish" ? toolFinish.reason : undefined, "tool-calls")
        assert.strictEqual(toolFinish?.type === "finish" ? toolFinish.usage.outputTokens : undefined, 6)

        const texts = Chunk.toArray(textParts)
        const deltas = texts.flatMap((part) => part.type === "text-delta" ? [part.delta] : [])
        assert.isAbove(deltas.length, 1)
        assert.strictEqual(deltas.join(""), "Fire is hot and bright.")
        const finish = texts.find((part) => part.type === "finish")
        assert.strictEqual(finish?.type === "finish" ? finish.reason : undefined, "stop")
        assert.strictEqual(finish?.type === "finish" ? finish.usage.inputTokens : undefined, 30)
        assert.strictEqual(finish?.type === "finish" ? finish.usage.outputTokens : undefined, 7)
        assert.deepStrictEqual((yield* fake.requests).map((request) => request.stream), [true, true])
      }))

    it.scoped("a rejected key is a ModelAuthError naming the variable; never retried", () =>
      Effect.gen(function*() {
        const fake = yield* FakeProvider.start([{ text: "unreachable" }], { apiKey: "another-key" })
        const { raw, typed } = yield* LanguageModel.generateText({ prompt: "hi" }).pipe(
          classifyFailure(kind, model),
          using(fake, kind, model)
        )
        assert.instanceOf(typed, ProviderErrors.ModelAuthError)
        if (typed instanceof ProviderErrors.ModelAuthError) {
          assert.strictEqual(typed.status, 401)
          assert.strictEqual(typed.variable, kind === "openai" ? "OPENAI_API_KEY" : "ANTHROPIC_API_KEY")
          assert.include(typed.message, typed.variable)
        }
        assert.isFalse(ProviderErrors.retryable(typed))
        assert.isFalse(ProviderErrors.retryable(raw))
        assert.isFalse(leaks(raw))
        assert.isFalse(leaks(typed))
        assert.strictEqual(yield* fake.count, 1)
      }))

    it.scoped("429 with Retry-After in seconds is a ModelRateLimitedError with retryAfterMillis; retryable, with the delay", () =>
      Effect.gen(function*() {
        const fake = yield* FakeProvider.start([
          { status: 429, headers: { "retry-after": "7" }, errorMessage: "Rate limit reached for requests" }
        ])
        const { raw, typed } = yield* LanguageModel.generateText({ prompt: "hi" }).pipe(
          classifyFailure(kind, model),
          using(fake, kind, model)
        )
        assert.instanceOf(typed, ProviderErrors.ModelRateLimitedError)
        if (typed instanceof ProviderErrors.ModelRateLimitedError) {
          assert.strictEqual(typed.retryAfterMillis, 7000)
          assert.strictEqual(typed.providerMessage, "Rate limit reached for requests")
          assert.strictEqual(typed.model, model)
        }
        assert.isTrue(ProviderErrors.retryable(typed))
        assert.isTrue(ProviderErrors.retryable(raw))
        assert.deepStrictEqual(ProviderErrors.retryDelay(typed), Option.some(Duration.seconds(7)))
        assert.deepStrictEqual(ProviderErrors.retryDelay(raw), Option.some(Duration.seconds(7)))
      }))

    it.scoped("429 with an HTTP-date Retry-After counts from the given time", () =>
      Effect.gen(function*() {
        const now = Date.UTC(2026, 0, 1, 12, 0, 0)
        const fake = yield* FakeProvider.start([
          { status: 429, headers: { "retry-after": new Date(now + 90_000).toUTCString() } },
          { status: 429 }
        ])
        const [dated, bare] = yield* Effect.all([
          Effect.flip(LanguageModel.generateText({ prompt: "hi" })),
          Effect.flip(LanguageModel.generateText({ prompt: "hi" }))
        ]).pipe(using(fake, kind, model))
        const typed = ProviderErrors.classify(dated, { now })
        assert.strictEqual(typed instanceof ProviderErrors.ModelRateLimitedError ? typed.retryAfterMillis : -1, 90_000)
        const untimed = ProviderErrors.classify(bare)
        assert.instanceOf(untimed, ProviderErrors.ModelRateLimitedError)
        assert.isTrue(Option.isNone(ProviderErrors.retryDelay(untimed)))
        assert.isTrue(ProviderErrors.retryable(untimed))
      }))

    it.scoped("500 and 503 are ModelUnavailableError with the status; retryable", () =>
      Effect.gen(function*() {
        const fake = yield* FakeProvider.start([{ status: 500 }, { status: 503, errorMessage: "Overloaded" }])
        const errors = yield* Effect.all([
          Effect.flip(LanguageModel.generateText({ prompt: "hi" })),
          Effect.flip(LanguageModel.generateText({ prompt: "hi" }))
        ]).pipe(using(fake, kind, model))
        const typed = errors.map((error) => ProviderErrors.classify(error, { provider: kind }))
        assert.deepStrictEqual(
          typed.map((error) => error instanceof ProviderErrors.ModelUnavailableError ? error.status : error._tag),
          [500, 503]
        )
        assert.isTrue(typed.every(ProviderErrors.retryable))
        assert.include(typed[1]!.message, "Overloaded")
      }))

    it.scoped("a body that does not parse (not JSON, or not the API's shape) is a ModelResponseError; not retried", () =>
      Effect.gen(function*() {
        const fake = yield* FakeProvider.start([
          { body: "<html>gateway</html>" },
          { body: JSON.stringify({ unexpected: true }) }
        ])
        const errors = yield* Effect.all([
          Effect.flip(LanguageModel.generateText({ prompt: "hi" })),
          Effect.flip(LanguageModel.generateText({ prompt: "hi" }))
        ]).pipe(using(fake, kind, model))
        const typed = errors.map((error) => ProviderErrors.classify(error, { provider: kind, model }))
        assert.deepStrictEqual(typed.map((error) => error._tag), ["ModelResponseError", "ModelResponseError"])
        assert.isFalse(typed.some(ProviderErrors.retryable))
      }))

    it.scoped("an error status with a body that is not the provider's (a proxy's HTML page) is still typed by its status", () =>
      Effect.gen(function*() {
        const fake = yield* FakeProvider.start([
          { status: 429, body: "<html>slow down</html>", contentType: "text/html", headers: { "retry-after": "3" } },
          { status: 502, body: "<html>bad gateway</html>", contentType: "text/html" }
        ])
        const errors = yield* Effect.all([
          Effect.flip(LanguageModel.generateText({ prompt: "hi" })),
          Effect.flip(LanguageModel.generateText({ prompt: "hi" }))
        ]).pipe(using(fake, kind, model))
        const [limited, gateway] = errors.map((error) => ProviderErrors.classify(error, { provider: kind, model }))
        assert.instanceOf(limited, ProviderErrors.ModelRateLimitedError)
        assert.deepStrictEqual(ProviderErrors.retryDelay(limited!), Option.some(Duration.seconds(3)))
        assert.instanceOf(gateway, ProviderErrors.ModelUnavailableError)
        assert.strictEqual(gateway instanceof ProviderErrors.ModelUnavailableError ? gateway.status : 0, 502)
      }))

    it.scoped("404 (an unknown model at the provider) is a ModelRequestError; not retried", () =>
      Effect.gen(function*() {
        const fake = yield* FakeProvider.start([{ status: 404, errorMessage: "The model `nope` does not exist" }])
        const error = yield* Effect.flip(LanguageModel.generateText({ prompt: "hi" })).pipe(using(fake, kind, "nope"))
        const typed = ProviderErrors.classify(error, { provider: kind, model: "nope" })
        assert.instanceOf(typed, ProviderErrors.ModelRequestError)
        assert.include(typed.message, "does not exist")
        assert.isFalse(ProviderErrors.retryable(typed))
      }))
  })
}

describe("the key never leaks", () => {
  it.scoped("not in any error's message, String, JSON or pretty cause, nor in logs or span attributes", () =>
    Effect.gen(function*() {
      const { seen, tracer } = recordingTracer()
      const logs = captureLogs()
      for (const { kind, model } of cases) {
        const fake = yield* FakeProvider.start([
          { status: 401 },
          { status: 429, headers: { "retry-after": "1" } },
          { status: 500 },
          { body: "not json" },
          { text: "fine" }
        ])
        const outcomes = yield* Effect.all(
          Array.from({ length: 5 }, () =>
            LanguageModel.generateText({ prompt: `key is not ${"here"}` }).pipe(
              Effect.tapErrorCause((cause) => Effect.logError("model call failed", cause)),
              Effect.either
            ))
        ).pipe(using(fake, kind, model), Effect.withTracer(tracer), Effect.provide(logs.layer))
        const errors = outcomes.flatMap((outcome) => Either.isLeft(outcome) ? [outcome.left] : [])
        assert.strictEqual(errors.length, 4)
        for (const error of errors) {
          assert.isFalse(leaks(error), `raw ${error._tag} leaks the key: ${JSON.stringify(error).slice(0, 1500)}`)
          const typed = ProviderErrors.classify(error, { provider: kind, model })
          assert.isFalse(leaks(typed), `${typed._tag} leaks the key`)
        }
        assert.isFalse(JSON.stringify(yield* fake.requests).includes(key))
      }
      assert.isAbove(logs.lines.length, 0)
      assert.isFalse(logs.lines.some((line) => line.includes(key)))
      assert.isAbove(seen.length, 0)
      assert.deepStrictEqual(seen.filter((line) => line.includes(key)).map((line) => line.slice(0, 40) + " … " + line.slice(line.indexOf(key) - 200, line.indexOf(key) + 40)), [])
    }))

  it("a key-like string in a provider message is scrubbed from the typed error", () => {
    const error = new AiError.HttpResponseError({
      module: "OpenAiClient",
      method: "createResponse",
      reason: "StatusCode",
      request: { method: "POST", url: "http://x/v1/responses", urlParams: [], hash: Option.none(), headers: {} },
      response: { status: 500, headers: {} },
      body: JSON.stringify({ error: { message: `broke while using ${key}` } })
    })
    const typed = ProviderErrors.classify(error)
    assert.instanceOf(typed, ProviderErrors.ModelUnavailableError)
    assert.isFalse(leaks(typed))
  })
})

describe("configuration", () => {
  const generate = LanguageModel.generateText({ prompt: "hi" })

  it.scoped("FIBERGRAPH_MODEL picks the provider; keys and base URLs come from the provider's variables", () =>
    Effect.gen(function*() {
      const fake = yield* FakeProvider.start(() => ({ text: "configured" }), { apiKey: key })
      const openai = yield* generate.pipe(
        Effect.provide(Provider.layerConfig),
        withConfig({ FIBERGRAPH_MODEL: "openai:gpt-4.1-mini", OPENAI_API_KEY: key, OPENAI_BASE_URL: fake.openaiUrl })
      )
      const anthropic = yield* generate.pipe(
        Effect.provide(Provider.layerConfig),
        withConfig({
          FIBERGRAPH_MODEL: "anthropic:claude-sonnet-4-5",
          ANTHROPIC_API_KEY: key,
          ANTHROPIC_BASE_URL: fake.anthropicUrl
        })
      )
      assert.deepStrictEqual([openai.text, anthropic.text], ["configured", "configured"])
      const requests = yield* fake.requests
      assert.deepStrictEqual(requests.map((request) => [request.api, request.model, request.auth.header]), [
        ["openai.responses", "gpt-4.1-mini", "authorization"],
        ["anthropic.messages", "claude-sonnet-4-5", "x-api-key"]
      ])
    }))

  it.scoped("openai-compatible:<model> (the model may contain colons) talks to FIBERGRAPH_MODEL_BASE_URL, with no key", () =>
    Effect.gen(function*() {
      const fake = yield* FakeProvider.start(() => ({ text: "local" }))
      const result = yield* generate.pipe(
        Effect.provide(Provider.layerConfig),
        withConfig({ FIBERGRAPH_MODEL: "openai-compatible:llama3.1:8b", FIBERGRAPH_MODEL_BASE_URL: fake.openaiUrl })
      )
      assert.strictEqual(result.text, "local")
      const [request] = yield* fake.requests
      assert.strictEqual(request!.model, "llama3.1:8b")
      assert.strictEqual(request!.auth.header, "none")
    }))

  it.scoped("openai-compatible with FIBERGRAPH_MODEL_API_KEY sends it as a Bearer token; a rejection names that variable", () =>
    Effect.gen(function*() {
      const fake = yield* FakeProvider.start(() => ({ text: "ok" }), { apiKey: "the-server-key" })
      const spec = { provider: "openai-compatible", model: "qwen2.5" } as const
      const error = yield* Effect.flip(generate).pipe(
        Effect.provide(Provider.layerConfig),
        withConfig({ FIBERGRAPH_MODEL: "openai-compatible:qwen2.5", FIBERGRAPH_MODEL_BASE_URL: fake.openaiUrl, FIBERGRAPH_MODEL_API_KEY: key })
      )
      const typed = ProviderErrors.classify(error, Provider.classifyContext(spec))
      assert.instanceOf(typed, ProviderErrors.ModelAuthError)
      assert.include(typed.message, "set FIBERGRAPH_MODEL_API_KEY")
      assert.deepStrictEqual((yield* fake.requests).map((request) => request.auth), [{ header: "authorization", matched: false }])
    }))

  it.scoped("Provider.languageModel(spec) gives a node its own model beside the default one", () =>
    Effect.gen(function*() {
      const fake = yield* FakeProvider.start(() => ({ text: "per node" }), { apiKey: key })
      const service = yield* Provider.languageModel("anthropic:claude-haiku-4-5").pipe(
        withConfig({ ANTHROPIC_API_KEY: key, ANTHROPIC_BASE_URL: fake.anthropicUrl })
      )
      const result = yield* service.generateText({ prompt: "hi" })
      assert.strictEqual(result.text, "per node")
      assert.deepStrictEqual((yield* fake.requests).map((request) => request.model), ["claude-haiku-4-5"])
    }))

  const configError = (entries: Record<string, string>) =>
    generate.pipe(Effect.provide(Provider.layerConfig), withConfig(entries), Effect.flip)

  it.effect("a missing key is a ProviderConfigError naming the variable to set", () =>
    Effect.gen(function*() {
      const openai = yield* configError({ FIBERGRAPH_MODEL: "openai:gpt-4.1-mini" })
      assert.instanceOf(openai, ProviderErrors.ProviderConfigError)
      assert.strictEqual(openai._tag === "ProviderConfigError" ? openai.variable : undefined, "OPENAI_API_KEY")
      assert.include(openai.message, "set OPENAI_API_KEY")
      const anthropic = yield* configError({ FIBERGRAPH_MODEL: "anthropic:claude-sonnet-4-5", ANTHROPIC_API_KEY: "" })
      assert.include(anthropic.message, "set ANTHROPIC_API_KEY")
    }))

  it.effect("a bad spec is a ProviderConfigError naming the accepted forms", () =>
    Effect.gen(function*() {
      const bogus = yield* configError({ FIBERGRAPH_MODEL: "bogus" })
      assert.instanceOf(bogus, ProviderErrors.ProviderConfigError)
      assert.include(bogus.message, "FIBERGRAPH_MODEL")
      assert.include(bogus.message, "openai:bogus")
      assert.include(bogus.message, "anthropic:<model>")
      const empty = yield* configError({ FIBERGRAPH_MODEL: "openai:", OPENAI_API_KEY: key })
      assert.include(empty.message, "names no model")
      const unknown = yield* configError({ FIBERGRAPH_MODEL: "mistral:large" })
      assert.include(unknown.message, `provider "mistral" is not supported`)
      const none = yield* configError({})
      assert.include(none.message, "set FIBERGRAPH_MODEL")
      const noUrl = yield* configError({ FIBERGRAPH_MODEL: "openai-compatible:qwen" })
      assert.include(noUrl.message, "FIBERGRAPH_MODEL_BASE_URL")
      const badUrl = yield* configError({ FIBERGRAPH_MODEL: "openai:gpt-4.1", OPENAI_API_KEY: key, OPENAI_BASE_URL: "localhost" })
      assert.include(badUrl.message, "OPENAI_BASE_URL")
      for (const error of [bogus, empty, unknown, none, noUrl, badUrl]) assert.isFalse(leaks(error))
    }))

  it.effect("a server that cannot be reached is a ModelUnavailableError", () =>
    Effect.gen(function*() {
      const url = yield* Effect.scoped(Effect.map(FakeProvider.start([]), (fake) => fake.openaiUrl))
      const error = yield* Effect.flip(generate).pipe(
        Effect.provide(Provider.layer({ provider: "openai", model: "gpt-4.1-mini", apiKey: Redacted.make(key), baseUrl: url }))
      )
      const typed = ProviderErrors.classify(error)
      assert.instanceOf(typed, ProviderErrors.ModelUnavailableError)
      assert.isTrue(ProviderErrors.retryable(typed))
      assert.isFalse(leaks(typed))
    }))
})

describe("embeddings", () => {
  it.scoped("FIBERGRAPH_EMBEDDING_MODEL gives an EmbeddingModel over the OpenAI embeddings API; one request per batch", () =>
    Effect.gen(function*() {
      const fake = yield* FakeProvider.start([{ embeddings: [[1, 0], [0, 1]] }, { status: 429, headers: { "retry-after": "2" } }], {
        apiKey: key
      })
      const [vectors, failure] = yield* Effect.all([
        EmbeddingModel.EmbeddingModel.pipe(Effect.flatMap((model) => model.embedMany(["north", "east"]))),
        EmbeddingModel.EmbeddingModel.pipe(Effect.flatMap((model) => Effect.flip(model.embed("south"))))
      ]).pipe(
        Effect.provide(Provider.layerEmbeddingConfig),
        withConfig({
          FIBERGRAPH_EMBEDDING_MODEL: "openai:text-embedding-3-small",
          OPENAI_API_KEY: key,
          OPENAI_BASE_URL: fake.openaiUrl
        })
      )
      assert.deepStrictEqual(vectors, [[1, 0], [0, 1]])
      const typed = ProviderErrors.classify(failure, { provider: "openai" })
      assert.instanceOf(typed, ProviderErrors.ModelRateLimitedError)
      assert.isFalse(leaks(failure))
      const requests = yield* fake.requests
      assert.deepStrictEqual(requests.map((request) => [request.api, request.model, request.auth.matched]), [
        ["openai.embeddings", "text-embedding-3-small", true],
        ["openai.embeddings", "text-embedding-3-small", true]
      ])
      assert.deepStrictEqual((requests[0]!.body as { input: unknown }).input, ["north", "east"])
    }))

  it.effect("an Anthropic embedding spec is a ProviderConfigError that names the accepted forms", () =>
    Effect.gen(function*() {
      const error = yield* Effect.flip(Provider.embeddingModel("anthropic:claude-sonnet-4-5")).pipe(
        withConfig({ ANTHROPIC_API_KEY: key })
      )
      assert.instanceOf(error, ProviderErrors.ProviderConfigError)
      assert.include(error.message, "openai:text-embedding-3-small")
    }))
})

describe("streamed failures", () => {
  for (const { kind, model } of cases) {
    it.scoped(`${kind}: a 429 on a streamed call is a ModelRateLimitedError with its Retry-After`, () =>
      Effect.gen(function*() {
        const fake = yield* FakeProvider.start([{ status: 429, headers: { "retry-after-ms": "1500" } }])
        const error = yield* LanguageModel.streamText({ prompt: "hi" }).pipe(
          Stream.runDrain,
          Effect.flip,
          using(fake, kind, model)
        )
        const typed = ProviderErrors.classify(error, { provider: kind, model })
        assert.instanceOf(typed, ProviderErrors.ModelRateLimitedError)
        assert.deepStrictEqual(ProviderErrors.retryDelay(typed), Option.some(Duration.millis(1500)))
        assert.isFalse(leaks(error))
      }))
  }
})

describe("an error event in the middle of a stream", () => {
  for (const { kind, model } of cases) {
    it.scoped(`${kind}: fails the stream after the text so far; an overload is a ModelUnavailableError, a rate limit a ModelRateLimitedError`, () =>
      Effect.gen(function*() {
        const fake = yield* FakeProvider.start([
          { text: "partial answer", streamError: {} },
          { text: "x", streamError: { type: kind === "openai" ? "rate_limit_exceeded" : "rate_limit_error", message: "slow down" } }
        ])
        const deltas: Array<string> = []
        const [overloaded, limited] = yield* Effect.all([
          LanguageModel.streamText({ prompt: "hi" }).pipe(
            Stream.runForEach((part) => Effect.sync(() => part.type === "text-delta" && deltas.push(part.delta))),
            Effect.flip
          ),
          LanguageModel.streamText({ prompt: "hi" }).pipe(Stream.runDrain, Effect.flip)
        ]).pipe(using(fake, kind, model))
        assert.strictEqual(deltas.join(""), "partial answer")
        const unavailable = ProviderErrors.classify(overloaded, { provider: kind, model })
        assert.instanceOf(unavailable, ProviderErrors.ModelUnavailableError)
        assert.isTrue(ProviderErrors.retryable(unavailable))
        const rate = ProviderErrors.classify(limited, { provider: kind, model })
        assert.instanceOf(rate, ProviderErrors.ModelRateLimitedError)
        assert.include(rate.message, "slow down")
      }))
  }
})

describe("the fake provider", () => {
  const post = (url: string, body: unknown) =>
    Effect.promise(() =>
      fetch(url, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) })
        .then(async (response) => ({ status: response.status, text: await response.text() }))
    )

  it.scoped("speaks chat completions, JSON and SSE with usage", () =>
    Effect.gen(function*() {
      const fake = yield* FakeProvider.start([
        { toolCalls: [{ name: "lookup", arguments: { q: "a", limit: 1 } }] },
        { text: "two words", usage: { inputTokens: 2, outputTokens: 3 } }
      ])
      const json = yield* post(`${fake.openaiUrl}/chat/completions`, { model: "m", messages: [] })
      const completion = JSON.parse(json.text)
      assert.strictEqual(completion.choices[0].finish_reason, "tool_calls")
      assert.deepStrictEqual(JSON.parse(completion.choices[0].message.tool_calls[0].function.arguments), { q: "a", limit: 1 })
      const sse = yield* post(`${fake.openaiUrl}/chat/completions`, {
        model: "m",
        messages: [],
        stream: true,
        stream_options: { include_usage: true }
      })
      const events = sse.text.split("\n\n").filter((frame) => frame.startsWith("data: ")).map((frame) => frame.slice(6))
      assert.strictEqual(events.at(-1), "[DONE]")
      const chunks = events.slice(0, -1).map((data) => JSON.parse(data))
      assert.strictEqual(chunks.map((chunk) => chunk.choices[0]?.delta?.content ?? "").join(""), "two words")
      assert.deepStrictEqual(chunks.at(-1).usage, { prompt_tokens: 2, completion_tokens: 3, total_tokens: 5 })
    }))

  it.scoped("a loop counted by tool results answers a call sent again the same way", () =>
    Effect.gen(function*() {
      const fake = yield* FakeProvider.start(FakeProvider.fromJson({
        loop: { toolCall: { name: "step", arguments: { n: "{{index}}" } }, times: 2, countBy: "toolResults", final: { text: "end" } }
      }))
      const turn = (results: number) =>
        post(`${fake.openaiUrl}/responses`, {
          model: "m",
          input: [
            { role: "user", content: "go" },
            ...Array.from({ length: results }, (_, i) => ({ type: "function_call_output", call_id: `c${i}`, output: "ok" }))
          ]
        }).pipe(Effect.map(({ text }) => JSON.parse(text).output[0]))
      const answers = yield* Effect.all([turn(0), turn(1), turn(1), turn(2)])
      assert.deepStrictEqual(answers.map((item) => item.type === "function_call" ? JSON.parse(item.arguments).n : item.content[0].text), [
        "0",
        "1",
        "1",
        "end"
      ])
      assert.deepStrictEqual((yield* fake.requests).map((request) => request.toolResults), [0, 1, 1, 2])
    }))

  it.scoped("runs as its own process: prints its URL, answers the real client, logs every request without the key", () =>
    Effect.gen(function*() {
      const dir = NodeFs.mkdtempSync(NodePath.join(NodeOs.tmpdir(), "fibergraph-fake-provider-"))
      yield* Effect.addFinalizer(() => Effect.sync(() => NodeFs.rmSync(dir, { recursive: true, force: true })))
      const script = NodePath.join(dir, "script.json")
      const log = NodePath.join(dir, "requests.jsonl")
      NodeFs.writeFileSync(script, JSON.stringify({
        replies: [{ text: "first" }],
        loop: { toolCall: { name: "lookup", arguments: { q: "n{{index}}", limit: 1 } }, times: 1, final: { text: "last" } },
        apiKey: key
      }))
      const { openaiUrl } = yield* Effect.acquireRelease(
        Effect.async<{ readonly child: ChildProcess.ChildProcess; readonly openaiUrl: string }>((resume) => {
          const child = ChildProcess.spawn(process.execPath, ["--import", "tsx", "test/support/fake-provider-main.ts", script, log], {
            stdio: ["ignore", "pipe", "inherit"]
          })
          let out = ""
          child.stdout!.setEncoding("utf8").on("data", (chunk: string) => {
            out += chunk
            const line = out.split("\n").find((candidate) => candidate.startsWith("{"))
            if (line !== undefined) resume(Effect.succeed({ child, openaiUrl: JSON.parse(line).openaiUrl as string }))
          })
        }),
        ({ child }) => Effect.sync(() => child.kill("SIGTERM"))
      )
      const layer = Layer.merge(
        Provider.layer({ provider: "openai", model: "gpt-4.1-mini", apiKey: Redacted.make(key), baseUrl: openaiUrl }),
        handlers
      )
      const results = yield* Effect.all([
        LanguageModel.generateText({ prompt: "1" }),
        LanguageModel.generateText({ prompt: "2", toolkit: Tools }),
        LanguageModel.generateText({ prompt: "3" })
      ]).pipe(Effect.provide(layer))
      assert.deepStrictEqual(results.map((result) => result.text), ["first", "", "last"])
      assert.deepStrictEqual(results[1]!.toolCalls.map((call) => call.params), [{ q: "n1", limit: 1 }])
      const text = NodeFs.readFileSync(log, "utf8")
      const logged = text.trim().split("\n").map((line) => JSON.parse(line) as FakeProvider.FakeRequest)
      assert.deepStrictEqual(logged.map((request) => [request.index, request.auth.matched]), [[0, true], [1, true], [2, true]])
      assert.isFalse(text.includes(key))
    }))
})

describe("FakeProvider.layer with FakeProvider.languageModel", () => {
  it.layer(
    Layer.provideMerge(
      FakeProvider.languageModel("anthropic", "claude-haiku-4-5"),
      FakeProvider.layer(FakeProvider.toolLoop({
        toolCall: { name: "lookup", arguments: { q: "turn {{index}}", limit: 1 } },
        times: 2,
        countBy: "toolResults",
        final: { text: "finished" }
      }))
    )
  )((it) => {
    it.effect("serves the script to the real Anthropic layer and counts the calls", () =>
      Effect.gen(function*() {
        const fake = yield* FakeProvider.FakeProvider
        const first = yield* LanguageModel.generateText({ prompt: "go", toolkit: Tools }).pipe(Effect.provide(handlers))
        assert.deepStrictEqual(first.toolCalls.map((call) => call.params), [{ q: "turn 0", limit: 1 }])
        assert.strictEqual(yield* fake.count, 1)
        const [request] = yield* fake.requests
        assert.deepStrictEqual(request!.auth, { header: "x-api-key", matched: true })
      }))
  })
})
