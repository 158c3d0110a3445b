/**
 * The typed failures of the model providers: a configuration that names no usable model or key
 * (`ProviderConfigError`), and what a provider's HTTP answer means for the caller (`ModelAuthError`,
 * `ModelRateLimitedError`, `ModelUnavailableError`, `ModelRequestError`, `ModelResponseError`).
 * `classify` maps the `AiError` the `@effect/ai` provider layers fail with into these; `retryable`
 * and `retryDelay` tell a node's retry policy what to retry and how long a `Retry-After` asks to wait.
 * No error here carries an API key, a request header or a raw response body.
 */
import { AiError } from "@effect/ai"
import { Clock, Duration, Effect, Option, Predicate, Schema } from "effect"

/** The model providers fibergraph configures. */
export const ProviderName = Schema.Literal("openai", "anthropic", "openai-compatible")

/** A model provider's name. */
export type ProviderName = typeof ProviderName.Type

/** The model configuration cannot be used: a missing key, a malformed or unknown model spec, a bad base URL. */
export class ProviderConfigError extends Schema.TaggedError<ProviderConfigError>()("ProviderConfigError", {
  /** What was wrong and what to write instead. */
  reason: Schema.String,
  /** The configuration variable at fault, when it came from configuration (e.g. `OPENAI_API_KEY`). */
  variable: Schema.optional(Schema.String),
  /** The model spec that was being configured (never a key). */
  spec: Schema.optional(Schema.String)
}) {
  override get message() {
    const spec = this.spec === undefined ? "" : ` ${JSON.stringify(this.spec)}`
    const from = this.variable === undefined ? "" : ` (${this.variable})`
    return `cannot configure the model${spec}${from}: ${this.reason}`
  }
}

const context = {
  provider: Schema.String,
  model: Schema.optional(Schema.String),
  status: Schema.Number
}

/** The provider rejected the API key (401) or denied it the model (403). */
export class ModelAuthError extends Schema.TaggedError<ModelAuthError>()("ModelAuthError", {
  ...context,
  /** The variable the key is read from, e.g. `OPENAI_API_KEY`. */
  variable: Schema.String
}) {
  override get message() {
    const what = this.status === 403 ? "denied the key access" : "rejected the API key"
    const model = this.model === undefined ? "" : ` for model ${this.model}`
    return `${this.provider} ${what} (HTTP ${this.status})${model}; set ${this.variable} to a valid key ` +
      (this.status === 403 ? "with access to this model" : "(check that it is not revoked or for another provider)")
  }
}

/** The provider is rate limiting (429); `retryAfterMillis` is what its `Retry-After` asked for, when it said. */
export class ModelRateLimitedError extends Schema.TaggedError<ModelRateLimitedError>()("ModelRateLimitedError", {
  ...context,
  retryAfterMillis: Schema.optional(Schema.Number),
  /** The provider's explanation (quota or rate), without secrets. */
  providerMessage: Schema.optional(Schema.String)
}) {
  override get message() {
    const model = this.model === undefined ? "" : ` for model ${this.model}`
    const after = this.retryAfterMillis === undefined
      ? "retry with backoff"
      : `retry after ${Duration.format(Duration.millis(this.retryAfterMillis))}`
    const detail = this.providerMessage === undefined ? "" : ` (${this.providerMessage})`
    return `${this.provider} rate limited the request (HTTP 429)${model}${detail}; ${after}, ` +
      "or lower the concurrency or raise the account's limits"
  }
}

/** The provider failed or is overloaded (5xx, 408, 529) or could not be reached; worth retrying later. */
export class ModelUnavailableError extends Schema.TaggedError<ModelUnavailableError>()("ModelUnavailableError", {
  provider: Schema.String,
  model: Schema.optional(Schema.String),
  /** The HTTP status; absent when no answer arrived (connection refused, reset, DNS). */
  status: Schema.optional(Schema.Number),
  providerMessage: Schema.optional(Schema.String)
}) {
  override get message() {
    const model = this.model === undefined ? "" : ` for model ${this.model}`
    const what = this.status === undefined ? "could not be reached" : `failed (HTTP ${this.status})`
    const detail = this.providerMessage === undefined ? "" : ` (${this.providerMessage})`
    return `${this.provider} ${what}${model}${detail}; this is usually temporary: retry with backoff, ` +
      "and check the provider's status page or the base URL if it persists"
  }
}

/** The provider refused the request itself (400, 404, 422, …): a wrong model name, an unsupported option. */
export class ModelRequestError extends Schema.TaggedError<ModelRequestError>()("ModelRequestError", {
  ...context,
  providerMessage: Schema.optional(Schema.String)
}) {
  override get message() {
    const model = this.model === undefined ? "" : ` model ${this.model}`
    const hint = this.status === 404
      ? "check the model name in the spec and the base URL"
      : "check the model's supported options and the prompt"
    const detail = this.providerMessage === undefined ? "" : `: ${this.providerMessage}`
    return `${this.provider}${model} refused the request (HTTP ${this.status})${detail}; ${hint}; retrying will not help`
  }
}

/** The provider's answer does not parse as its API's format. */
export class ModelResponseError extends Schema.TaggedError<ModelResponseError>()("ModelResponseError", {
  provider: Schema.String,
  model: Schema.optional(Schema.String),
  status: Schema.optional(Schema.Number),
  /** What did not parse, shortened. */
  detail: Schema.String
}) {
  override get message() {
    const model = this.model === undefined ? "" : ` for model ${this.model}`
    return `${this.provider} answered${model} with a response that does not parse (${this.detail}); ` +
      "check that the base URL points at an API of this provider's format (an OpenAI-compatible server must " +
      "implement the responses API), or retry if the provider sent a truncated answer"
  }
}

/** A provider failure fibergraph has typed. */
export type ProviderError =
  | ModelAuthError
  | ModelRateLimitedError
  | ModelUnavailableError
  | ModelRequestError
  | ModelResponseError

/** What `classify` knows beyond the error: the provider, model and key variable of the call, and the time. */
export interface ClassifyContext {
  readonly provider?: ProviderName | undefined
  readonly model?: string | undefined
  /** The variable the key came from; default `OPENAI_API_KEY` / `ANTHROPIC_API_KEY` / `FIBERGRAPH_MODEL_API_KEY`. */
  readonly keyVariable?: string | undefined
  /** The current time in epoch milliseconds, for an HTTP-date `Retry-After` (default: the system clock). */
  readonly now?: number | undefined
}

/** The variable each provider's API key is read from. */
export const keyVariables: Record<ProviderName, string> = {
  openai: "OPENAI_API_KEY",
  anthropic: "ANTHROPIC_API_KEY",
  "openai-compatible": "FIBERGRAPH_MODEL_API_KEY"
}

const providerOf = (error: AiError.AiError, context: ClassifyContext): string =>
  context.provider ?? (/anthropic/i.test(error.module) ? "anthropic" : /openai/i.test(error.module) ? "openai" : error.module)

const keyPattern = /\b(sk|key|pk|rk)-[A-Za-z0-9_*.-]{6,}/gi

const clean = (text: string, limit = 300): string => {
  const scrubbed = text.replace(keyPattern, "<redacted>").replace(/\s+/g, " ").trim()
  return scrubbed.length > limit ? `${scrubbed.slice(0, limit)}…` : scrubbed
}

const messageIn = (value: unknown): string | undefined => {
  if (!Predicate.isRecord(value)) return undefined
  const error = value.error
  if (Predicate.isRecord(error) && typeof error.message === "string") return error.message
  if (typeof error === "string") return error
  return typeof value.message === "string" ? value.message : undefined
}

const providerMessage = (error: AiError.HttpResponseError): string | undefined => {
  for (const text of [error.body, error.description]) {
    if (text === undefined) continue
    try {
      const found = messageIn(JSON.parse(text))
      if (found !== undefined) return clean(found)
    } catch {
      continue
    }
  }
  return undefined
}

const header = (headers: Readonly<Record<string, unknown>>, name: string): string | undefined => {
  const key = Object.keys(headers).find((key) => key.toLowerCase() === name)
  const value = key === undefined ? undefined : headers[key]
  return typeof value === "string" ? value : undefined
}

/**
 * Parses a `Retry-After` value (delay in seconds, or an HTTP-date relative to `now`) into milliseconds;
 * `retry-after-ms` (sent by OpenAI) wins when present.
 */
export const parseRetryAfter = (
  headers: Readonly<Record<string, unknown>>,
  now: number
): number | undefined => {
  const millis = header(headers, "retry-after-ms")
  if (millis !== undefined && /^\d+(\.\d+)?$/.test(millis.trim())) return Math.ceil(Number(millis))
  const value = header(headers, "retry-after")?.trim()
  if (value === undefined || value === "") return undefined
  if (/^\d+(\.\d+)?$/.test(value)) return Math.ceil(Number(value) * 1000)
  const at = Date.parse(value)
  return Number.isNaN(at) ? undefined : Math.max(0, at - now)
}

const statusOf = (error: AiError.HttpResponseError) => error.response.status

/**
 * Types an `AiError` from a provider layer: 401/403 → `ModelAuthError`, 429 → `ModelRateLimitedError`
 * (with `Retry-After`), 5xx/408/529 and transport failures → `ModelUnavailableError`, other 4xx →
 * `ModelRequestError`, an unparsable answer → `ModelResponseError`, a provider `error` event that ended a
 * stream (rate limit, overload) → the same classes; anything else is returned unchanged.
 */
export const classify = (error: AiError.AiError, context: ClassifyContext = {}): ProviderError | AiError.AiError => {
  const provider = providerOf(error, context)
  const model = context.model === undefined ? {} : { model: context.model }
  switch (error._tag) {
    case "HttpRequestError":
      return error.reason === "Transport"
        ? new ModelUnavailableError({ provider, ...model, providerMessage: clean(error.description ?? "no answer") })
        : error
    case "MalformedOutput":
      return new ModelResponseError({
        provider,
        ...model,
        detail: clean(error.description ?? String(error.cause ?? "the answer does not match the API's schema"), 500)
      })
    case "HttpResponseError": {
      const status = statusOf(error)
      if (error.reason !== "StatusCode" && status < 400) {
        return new ModelResponseError({
          provider,
          ...model,
          status,
          detail: clean(error.reason === "EmptyBody" ? "the body is empty" : error.description ?? "the body is not JSON", 500)
        })
      }
      const message = providerMessage(error)
      const withMessage = message === undefined ? {} : { providerMessage: message }
      if (status === 401 || status === 403) {
        const keyVariable = context.keyVariable ??
          keyVariables[(provider in keyVariables ? provider : "openai") as ProviderName]
        return new ModelAuthError({ provider, ...model, status, variable: keyVariable })
      }
      if (status === 429) {
        const retryAfter = parseRetryAfter(error.response.headers, context.now ?? Date.now())
        return new ModelRateLimitedError({
          provider,
          ...model,
          status,
          ...(retryAfter === undefined ? {} : { retryAfterMillis: retryAfter }),
          ...withMessage
        })
      }
      if (status >= 500 || status === 408) {
        return new ModelUnavailableError({ provider, ...model, status, ...withMessage })
      }
      if (status >= 400) return new ModelRequestError({ provider, ...model, status, ...withMessage })
      return error
    }
    case "UnknownError":
      return classifyStreamError(error, provider, model)
    default:
      return error
  }
}

const classifyStreamError = (
  error: AiError.UnknownError,
  provider: string,
  model: { readonly model?: string }
): ProviderError | AiError.AiError => {
  const cause = error.cause
  if (error.module !== "Provider" || !Predicate.isRecord(cause) || typeof cause.providerErrorType !== "string") {
    return error
  }
  const type = cause.providerErrorType
  const message = typeof cause.message === "string" ? { providerMessage: clean(cause.message) } : {}
  if (/rate_limit/.test(type)) return new ModelRateLimitedError({ provider, ...model, status: 429, ...message })
  if (/overloaded|server_error|api_error|timeout/.test(type)) {
    return new ModelUnavailableError({ provider, ...model, ...message })
  }
  return error
}

/** `classify` with the time from the `Clock`, so `TestClock` drives HTTP-date `Retry-After` values. */
export const classifyNow = (
  error: AiError.AiError,
  context: Omit<ClassifyContext, "now"> = {}
): Effect.Effect<ProviderError | AiError.AiError> =>
  Effect.map(Clock.currentTimeMillis, (now) => classify(error, { ...context, now }))

/** Whether a value is one of the typed provider failures. */
export const isProviderError = (u: unknown): u is ProviderError =>
  Predicate.isTagged(u, "ModelAuthError") || Predicate.isTagged(u, "ModelRateLimitedError") ||
  Predicate.isTagged(u, "ModelUnavailableError") || Predicate.isTagged(u, "ModelRequestError") ||
  Predicate.isTagged(u, "ModelResponseError")

const typed = (error: unknown): unknown => AiError.isAiError(error) ? classify(error) : error

/**
 * Whether retrying may succeed: a rate limit or an unavailable provider (an `AiError` is classified
 * first). A rejected key, a refused request, a malformed answer or a configuration error is not.
 */
export const retryable = (error: unknown): boolean => {
  const value = typed(error)
  return Predicate.isTagged(value, "ModelRateLimitedError") || Predicate.isTagged(value, "ModelUnavailableError")
}

/** How long the provider asked to wait before the next attempt (`Retry-After` of a 429), if it said. */
export const retryDelay = (error: unknown): Option.Option<Duration.Duration> => {
  const value = typed(error)
  return value instanceof ModelRateLimitedError && value.retryAfterMillis !== undefined
    ? Option.some(Duration.millis(value.retryAfterMillis))
    : Option.none()
}
