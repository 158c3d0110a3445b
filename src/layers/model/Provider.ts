/**
 * The model, chosen by configuration like the store: `@effect/ai`'s `LanguageModel` served by the kept
 * provider layers (`@effect/ai-openai`, `@effect/ai-anthropic`), unchanged, over `fetch`.
 *
 * A model spec is `<provider>:<model>`:
 * - `openai:gpt-4.1-mini`: key `OPENAI_API_KEY` (required), base URL `OPENAI_BASE_URL`
 *   (default `https://api.openai.com/v1`);
 * - `anthropic:claude-sonnet-4-5`: key `ANTHROPIC_API_KEY` (required), base URL `ANTHROPIC_BASE_URL`
 *   (default `https://api.anthropic.com`, without `/v1`);
 * - `openai-compatible:<model>` (vLLM, Ollama, LM Studio, … through the OpenAI responses API): base URL
 *   `FIBERGRAPH_MODEL_BASE_URL` (required, e.g. `http://localhost:11434/v1`), key `FIBERGRAPH_MODEL_API_KEY`
 *   (optional).
 * `FIBERGRAPH_MODEL` names the default model of `layerConfig`; a node can name its own spec through
 * `languageModel`. `FIBERGRAPH_EMBEDDING_MODEL` names the `EmbeddingModel` of `layerEmbeddingConfig`
 * (`openai:` or `openai-compatible:` specs, same keys and base URLs).
 *
 * Keys are read with `Config.redacted` and never appear in an error, a log or a span: the `fetch`
 * transport adds them (`FetchHttpClient.RequestInit`), so no `HttpClientRequest`, and hence nothing
 * `@effect/ai` derives from one, ever holds a key; its errors are `scrub`bed as well.
 */
import { AiError, EmbeddingModel, LanguageModel } from "@effect/ai"
import { AnthropicClient, AnthropicLanguageModel } from "@effect/ai-anthropic"
import { OpenAiClient, OpenAiEmbeddingModel, OpenAiLanguageModel } from "@effect/ai-openai"
import { FetchHttpClient, HttpClient } from "@effect/platform"
import { Config, ConfigError, Context, Effect, Either, Layer, Option, Redacted, Stream } from "effect"
import type { Scope } from "effect"
import { type ClassifyContext, keyVariables, ProviderConfigError, type ProviderName } from "./ProviderErrors.js"

/** A parsed model spec. */
export interface ModelSpec {
  readonly provider: ProviderName
  readonly model: string
}

/** Everything needed to talk to one model. */
export interface Options extends ModelSpec {
  /** Required for `openai` and `anthropic`. */
  readonly apiKey?: Redacted.Redacted<string> | undefined
  /** Default: the provider's public API (`defaults`); required for `openai-compatible`. */
  readonly baseUrl?: string | undefined
}

/** Defaults of the provider configuration. */
export const defaults = {
  baseUrl: {
    openai: "https://api.openai.com/v1",
    anthropic: "https://api.anthropic.com"
  },
  /** The variable that names the default model. */
  modelVariable: "FIBERGRAPH_MODEL",
  /** The variable that names the embedding model. */
  embeddingModelVariable: "FIBERGRAPH_EMBEDDING_MODEL"
} as const

/** The variable each provider's base URL is read from. */
export const baseUrlVariables: Record<ProviderName, string> = {
  openai: "OPENAI_BASE_URL",
  anthropic: "ANTHROPIC_BASE_URL",
  "openai-compatible": "FIBERGRAPH_MODEL_BASE_URL"
}

const providers: ReadonlyArray<ProviderName> = ["openai", "anthropic", "openai-compatible"]

const accepted =
  "write openai:<model> (e.g. openai:gpt-4.1-mini), anthropic:<model> (e.g. anthropic:claude-sonnet-4-5) " +
  "or openai-compatible:<model> with FIBERGRAPH_MODEL_BASE_URL"

/** Parses `<provider>:<model>` (the model may itself contain colons, as in `openai-compatible:llama3.1:8b`). */
export const parseSpec = (spec: string, variable?: string): Either.Either<ModelSpec, ProviderConfigError> => {
  const input = spec.trim()
  const fail = (reason: string) =>
    Either.left(new ProviderConfigError({ reason, spec: input, ...(variable === undefined ? {} : { variable }) }))
  if (input === "") return fail(`the model spec is empty; ${accepted}`)
  const colon = input.indexOf(":")
  if (colon === -1) {
    const guess = /^claude/i.test(input) ? "anthropic" : "openai"
    return fail(`it names no provider; write ${guess}:${input}, or ${accepted}`)
  }
  const provider = input.slice(0, colon).toLowerCase()
  const model = input.slice(colon + 1).trim()
  if (!(providers as ReadonlyArray<string>).includes(provider)) {
    return fail(`the provider "${provider}" is not supported; ${accepted}`)
  }
  if (model === "") return fail(`it names no model after "${provider}:"; ${accepted}`)
  return Either.right({ provider: provider as ProviderName, model })
}

const checkBaseUrl = (url: string, spec: string, variable: string) => {
  try {
    const parsed = new URL(url)
    if (parsed.protocol === "http:" || parsed.protocol === "https:") return Effect.succeed(url.replace(/\/+$/, ""))
  } catch {
    // reported below
  }
  return Effect.fail(
    new ProviderConfigError({
      spec,
      variable,
      reason: `the base URL ${JSON.stringify(url)} is not an http(s) URL; write e.g. http://localhost:8000/v1`
    })
  )
}

const secretHeaders = new Set([
  "authorization",
  "x-api-key",
  "openai-organization",
  "openai-project",
  "cookie",
  "set-cookie",
  "proxy-authorization"
])

const redactHeaders = (headers: Readonly<Record<string, string>>): Record<string, string> =>
  Object.fromEntries(
    Object.entries(headers).map(([name, value]) => [name, secretHeaders.has(name.toLowerCase()) ? "<redacted>" : value])
  )

const headerInText = /("?(?:authorization|x-api-key|openai-organization|openai-project|cookie)"?\s*[:=]\s*"?)(?:Bearer\s+)?[^"\s,}]+/gi

const redactText = (text: string, secrets: ReadonlyArray<string>): string =>
  secrets.reduce(
    (acc, secret) => secret === "" ? acc : acc.split(secret).join("<redacted>"),
    text.replace(headerInText, "$1<redacted>")
  )

/**
 * Removes credentials from a provider `AiError`: `@effect/ai` copies the request headers (the key among
 * them) into `HttpResponseError` and `HttpRequestError` (and, for an answer that is not JSON, the whole
 * request into `body`); `secrets` are also cut out of any text.
 */
export const scrub = <E>(error: E, secrets: ReadonlyArray<string> = []): E => {
  if (!AiError.isAiError(error)) return error
  const text = (value: string | undefined) => value === undefined ? undefined : redactText(value, secrets)
  const body = error._tag === "HttpResponseError" ? text(error.body) : undefined
  const description = "description" in error ? text(error.description) : undefined
  switch (error._tag) {
    case "HttpResponseError":
      return new AiError.HttpResponseError({
        module: error.module,
        method: error.method,
        reason: error.reason,
        request: { ...error.request, headers: redactHeaders(error.request.headers) },
        response: { ...error.response, headers: redactHeaders(error.response.headers) },
        ...(body === undefined ? {} : { body }),
        ...(description === undefined ? {} : { description })
      }, { disableValidation: true }) as E
    case "HttpRequestError":
      return new AiError.HttpRequestError({
        module: error.module,
        method: error.method,
        reason: error.reason,
        request: { ...error.request, headers: redactHeaders(error.request.headers) },
        ...(description === undefined ? {} : { description })
      }, { disableValidation: true }) as E
    case "MalformedOutput":
      return new AiError.MalformedOutput({
        module: error.module,
        method: error.method,
        ...(description === undefined ? {} : { description }),
        ...(error.cause === undefined ? {} : { cause: redactText(String(error.cause), secrets) })
      }, { disableValidation: true }) as E
    default:
      return error
  }
}

const streamFailure = (error: unknown, secrets: ReadonlyArray<string>): AiError.UnknownError => {
  const record = (typeof error === "object" && error !== null ? error : {}) as Record<string, unknown>
  const type = String(record.type === "error" ? record.code ?? "error" : record.type ?? "error")
  const message = redactText(String(record.message ?? "the provider reported an error mid-stream"), secrets)
  return new AiError.UnknownError({
    module: "Provider",
    method: "streamText",
    description: `the provider ended the stream with ${type}: ${message}`,
    cause: { providerErrorType: type, message }
  })
}

const scrubbing = (
  service: LanguageModel.Service,
  apiKey: Redacted.Redacted<string> | undefined
): LanguageModel.Service => {
  const secrets = apiKey === undefined ? [] : [Redacted.value(apiKey)]
  const clean = <E>(error: E) => scrub(error, secrets)
  return {
    generateText: ((options: Parameters<LanguageModel.Service["generateText"]>[0]) =>
      Effect.mapError(service.generateText(options), clean)) as LanguageModel.Service["generateText"],
    generateObject: ((options: Parameters<LanguageModel.Service["generateObject"]>[0]) =>
      Effect.mapError(service.generateObject(options), clean)) as LanguageModel.Service["generateObject"],
    streamText: ((options: Parameters<LanguageModel.Service["streamText"]>[0]) =>
      service.streamText(options).pipe(
        Stream.mapError(clean),
        Stream.mapEffect((part) => part.type === "error" ? Effect.fail(streamFailure(part.error, secrets)) : Effect.succeed(part))
      )) as LanguageModel.Service["streamText"]
  }
}

const transport = (provider: ProviderName, apiKey: Redacted.Redacted<string> | undefined) =>
  Effect.provide(
    HttpClient.HttpClient,
    apiKey === undefined ? FetchHttpClient.layer : FetchHttpClient.layer.pipe(
      Layer.provide(Layer.succeed(FetchHttpClient.RequestInit, {
        headers: provider === "anthropic"
          ? { "x-api-key": Redacted.value(apiKey) }
          : { authorization: `Bearer ${Redacted.value(apiKey)}` }
      }))
    )
  )

interface Checked {
  readonly spec: string
  readonly apiKey: Redacted.Redacted<string> | undefined
  readonly apiUrl: string
  readonly http: HttpClient.HttpClient
}

const check = (options: Options): Effect.Effect<Checked, ProviderConfigError> =>
  Effect.gen(function*() {
    const spec = `${options.provider}:${options.model}`
    const keyVariable = keyVariables[options.provider]
    const baseUrlVariable = baseUrlVariables[options.provider]
    if (options.model.trim() === "") {
      return yield* new ProviderConfigError({ spec, reason: `it names no model; ${accepted}` })
    }
    yield* Effect.annotateCurrentSpan({ "model.provider": options.provider, "model.name": options.model })
    const apiKey = options.apiKey === undefined || Redacted.value(options.apiKey) === "" ? undefined : options.apiKey
    if (apiKey === undefined && options.provider !== "openai-compatible") {
      return yield* new ProviderConfigError({
        spec,
        variable: keyVariable,
        reason: `no API key; set ${keyVariable} to your ${options.provider} API key`
      })
    }
    if (options.baseUrl === undefined && options.provider === "openai-compatible") {
      return yield* new ProviderConfigError({
        spec,
        variable: baseUrlVariable,
        reason: `an openai-compatible model needs its server's URL; set ${baseUrlVariable} ` +
          "(e.g. http://localhost:11434/v1 for Ollama, http://localhost:8000/v1 for vLLM)"
      })
    }
    const apiUrl = yield* checkBaseUrl(
      options.baseUrl ?? (options.provider === "anthropic" ? defaults.baseUrl.anthropic : defaults.baseUrl.openai),
      spec,
      baseUrlVariable
    )
    const http = yield* transport(options.provider, apiKey)
    return { spec, apiKey, apiUrl, http }
  })

const buildService = (options: Options): Effect.Effect<LanguageModel.Service, ProviderConfigError, Scope.Scope> =>
  Effect.gen(function*() {
    const { apiKey, apiUrl, http } = yield* check(options)
    if (options.provider === "anthropic") {
      const client = yield* Effect.provideService(AnthropicClient.make({ apiUrl }), HttpClient.HttpClient, http)
      return scrubbing(
        yield* Effect.provideService(
          AnthropicLanguageModel.make({ model: options.model }),
          AnthropicClient.AnthropicClient,
          client
        ),
        apiKey
      )
    }
    const client = yield* Effect.provideService(OpenAiClient.make({ apiUrl }), HttpClient.HttpClient, http)
    return scrubbing(
      yield* Effect.provideService(OpenAiLanguageModel.make({ model: options.model }), OpenAiClient.OpenAiClient, client),
      apiKey
    )
  })

const buildEmbedding = (options: Options): Effect.Effect<EmbeddingModel.Service, ProviderConfigError, Scope.Scope> =>
  Effect.gen(function*() {
    if (options.provider === "anthropic") {
      return yield* new ProviderConfigError({
        spec: `${options.provider}:${options.model}`,
        reason: "Anthropic has no embeddings API; write openai:<model> (e.g. openai:text-embedding-3-small) " +
          "or openai-compatible:<model> with FIBERGRAPH_MODEL_BASE_URL"
      })
    }
    const { apiKey, apiUrl, http } = yield* check(options)
    const client = yield* Effect.provideService(OpenAiClient.make({ apiUrl }), HttpClient.HttpClient, http)
    const context = yield* Layer.build(
      OpenAiEmbeddingModel.layerBatched({ model: options.model }).pipe(
        Layer.provide(Layer.succeed(OpenAiClient.OpenAiClient, client))
      )
    )
    const service = Context.get(context, EmbeddingModel.EmbeddingModel)
    const secrets = apiKey === undefined ? [] : [Redacted.value(apiKey)]
    return {
      embed: (input) => Effect.mapError(service.embed(input), (error) => scrub(error, secrets)),
      embedMany: (input, embedOptions) =>
        Effect.mapError(service.embedMany(input, embedOptions), (error) => scrub(error, secrets))
    }
  })

/** Builds the `LanguageModel` service for `options` (no configuration is read). */
export const make = Effect.fn("Provider.make")(function*(options: Options) {
  return yield* buildService(options)
})

const configFailure = (spec: string) => (error: ConfigError.ConfigError) =>
  new ProviderConfigError({ spec, reason: `the configuration cannot be read: ${String(error)}` })

/** The options of a spec's provider from configuration: its key and base URL variables. */
export const configFor = (spec: ModelSpec): Config.Config<Options> =>
  Config.all({
    apiKey: Config.option(Config.redacted(keyVariables[spec.provider])),
    baseUrl: Config.option(Config.string(baseUrlVariables[spec.provider]))
  }).pipe(Config.map(({ apiKey, baseUrl }): Options => ({
    ...spec,
    ...(Option.isSome(apiKey) ? { apiKey: apiKey.value } : {}),
    ...(Option.isSome(baseUrl) && baseUrl.value.trim() !== "" ? { baseUrl: baseUrl.value.trim() } : {})
  })))

const optionsFromSpec = (spec: string, variable?: string) =>
  Effect.gen(function*() {
    const parsed = yield* parseSpec(spec, variable)
    return yield* Effect.mapError(configFor(parsed), configFailure(spec))
  })

const fromSpec = (spec: string, variable?: string) => Effect.flatMap(optionsFromSpec(spec, variable), buildService)

/**
 * A `LanguageModel` service for one model spec (`"openai:gpt-4.1"`), its key and base URL read from
 * configuration, or for explicit `Options`: what a graph or a node that names its own model uses.
 */
export const languageModel = Effect.fn("Provider.languageModel")(function*(spec: string | Options) {
  return yield* Effect.scoped(typeof spec === "string" ? fromSpec(spec) : buildService(spec))
})

/** What `ProviderErrors.classify` needs to know about a call to this model: provider, model, key variable. */
export const classifyContext = (spec: ModelSpec): ClassifyContext => ({
  provider: spec.provider,
  model: spec.model,
  keyVariable: keyVariables[spec.provider]
})

/** Provides `LanguageModel` for `options`, over its own `fetch` client. */
export const layer = (options: Options): Layer.Layer<LanguageModel.LanguageModel, ProviderConfigError> =>
  Layer.scoped(LanguageModel.LanguageModel, make(options))

/**
 * An `EmbeddingModel` service for one spec (`"openai:text-embedding-3-small"`, or `openai-compatible:<model>`),
 * its key and base URL read from configuration, or for explicit `Options`; Anthropic has no embeddings API.
 */
export const embeddingModel = Effect.fn("Provider.embeddingModel")(function*(spec: string | Options) {
  return yield* Effect.scoped(
    typeof spec === "string"
      ? Effect.flatMap(optionsFromSpec(spec), buildEmbedding)
      : buildEmbedding(spec)
  )
})

/** Provides `EmbeddingModel` for `options`, over its own `fetch` client. */
export const layerEmbedding = (options: Options): Layer.Layer<EmbeddingModel.EmbeddingModel, ProviderConfigError> =>
  Layer.effect(EmbeddingModel.EmbeddingModel, embeddingModel(options))

/** Provides `EmbeddingModel` for the spec in `FIBERGRAPH_EMBEDDING_MODEL`, like `layerConfig`. */
export const layerEmbeddingConfig: Layer.Layer<EmbeddingModel.EmbeddingModel, ProviderConfigError> = Layer.effect(
  EmbeddingModel.EmbeddingModel,
  Effect.gen(function*() {
    const variable = defaults.embeddingModelVariable
    const spec = yield* Effect.mapError(Config.option(Config.string(variable)), configFailure(""))
    if (Option.isNone(spec)) {
      return yield* new ProviderConfigError({
        variable,
        reason: `no embedding model is configured; set ${variable}, e.g. ${variable}=openai:text-embedding-3-small`
      })
    }
    return yield* Effect.scoped(Effect.flatMap(optionsFromSpec(spec.value, variable), buildEmbedding))
  }).pipe(Effect.withSpan("Provider.layerEmbeddingConfig"))
)

/** The default model spec from `FIBERGRAPH_MODEL`. */
export const modelConfig: Config.Config<Option.Option<string>> = Config.option(Config.string(defaults.modelVariable))

/**
 * Provides `LanguageModel` for the spec in `FIBERGRAPH_MODEL`, its key and base URL from the provider's
 * variables; a missing or bad spec, key or URL is a `ProviderConfigError` naming the variable to set.
 */
export const layerConfig: Layer.Layer<LanguageModel.LanguageModel, ProviderConfigError> = Layer.scoped(
  LanguageModel.LanguageModel,
  Effect.gen(function*() {
    const spec = yield* Effect.mapError(modelConfig, configFailure(""))
    if (Option.isNone(spec)) {
      return yield* new ProviderConfigError({
        variable: defaults.modelVariable,
        reason: `no model is configured; set ${defaults.modelVariable}: ${accepted}`
      })
    }
    return yield* fromSpec(spec.value, defaults.modelVariable)
  }).pipe(Effect.withSpan("Provider.layerConfig"))
)
