/**
 * Spans that cost nothing when nobody records them: under Effect's built-in tracer (which exports
 * nothing) the span is skipped; with a real tracer installed (OpenTelemetry) it is made, without
 * capturing a stack trace. For hot paths (every step, every store call).
 */
import { Context, DefaultServices, Effect, Tracer } from "effect"

const nativeTracer = Context.get(DefaultServices.liveServices, Tracer.Tracer)

/** Runs `self` in a span named `name` when a tracer that records spans is installed. */
export const spanned = (name: string, attributes?: Record<string, unknown>) =>
<A, E, R>(self: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> =>
  Effect.tracerWith((tracer) =>
    tracer === nativeTracer
      ? self
      : Effect.withSpan(self, name, attributes === undefined ? { captureStackTrace: false } : { attributes, captureStackTrace: false })
  )

/** Like `spanned`, for a hot path: the attributes are built only when the span is made. */
export const traced = <A, E, R>(
  self: Effect.Effect<A, E, R>,
  name: string,
  attributes: () => Record<string, unknown>
): Effect.Effect<A, E, R> =>
  Effect.tracerWith((tracer) =>
    tracer === nativeTracer ? self : Effect.withSpan(self, name, { attributes: attributes(), captureStackTrace: false })
  )

/**
 * Annotates the current span when a tracer that records spans is installed (the span made by
 * `spanned`); otherwise does nothing (and, unlike `Effect.annotateCurrentSpan` outside any span,
 * allocates no error).
 */
export const annotate: {
  (key: string, value: unknown): Effect.Effect<void>
  (values: Record<string, unknown>): Effect.Effect<void>
} = (keyOrValues: string | Record<string, unknown>, value?: unknown): Effect.Effect<void> =>
  Effect.tracerWith((tracer) =>
    tracer === nativeTracer
      ? Effect.void
      : typeof keyOrValues === "string"
      ? Effect.annotateCurrentSpan(keyOrValues, value)
      : Effect.annotateCurrentSpan(keyOrValues)
  )
