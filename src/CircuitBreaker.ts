/**
 * Circuit breakers shared by every run of a process, keyed by graph and node (or server and
 * tool): closed, open, then half-open with a single probe. Their state is readable and exported
 * as the `fibergraph_circuit_breaker_state` gauge (0 closed, 1 half-open, 2 open).
 */
import { Clock, Context, Duration, Effect, Exit, Layer, Metric } from "effect"
import { CircuitOpenError } from "./Errors.js"
import type { BreakerPolicy } from "./Node.js"

/** The state of one breaker. */
export interface BreakerState {
  readonly key: string
  readonly state: "closed" | "open" | "half_open"
  readonly consecutiveFailures: number
  readonly openedAt: number | null
}

const stateGauge = Metric.gauge("fibergraph_circuit_breaker_state", {
  description: "Circuit breaker state per key: 0 closed, 1 half-open, 2 open"
})

interface Mutable {
  state: BreakerState["state"]
  consecutiveFailures: number
  openedAt: number | null
  probing: boolean
}

/** The process-wide registry of circuit breakers. */
export class CircuitBreakers extends Context.Tag("fibergraph/CircuitBreakers")<CircuitBreakers, {
  /** Runs `effect` through the breaker `key`; fails with `CircuitOpenError` while it is open. */
  readonly protect: <A, E, R>(
    key: string,
    policy: BreakerPolicy,
    effect: Effect.Effect<A, E, R>
  ) => Effect.Effect<A, E | CircuitOpenError, R>
  readonly snapshot: Effect.Effect<ReadonlyArray<BreakerState>>
}>() {}

/** Builds an empty registry. */
export const make = Effect.sync(() => {
  const breakers = new Map<string, Mutable>()
  const report = (key: string, b: Mutable) =>
    Metric.set(Metric.tagged(stateGauge, "key", key), b.state === "closed" ? 0 : b.state === "half_open" ? 1 : 2)

  const protect = <A, E, R>(key: string, policy: BreakerPolicy, effect: Effect.Effect<A, E, R>) =>
    Effect.flatMap(Clock.currentTimeMillis, (now): Effect.Effect<A, E | CircuitOpenError, R> => {
      const resetAfter = Duration.toMillis(policy.resetAfter ?? "30 seconds")
      const threshold = policy.failureThreshold ?? 5
      let b = breakers.get(key)
      if (b === undefined) {
        b = { state: "closed", consecutiveFailures: 0, openedAt: null, probing: false }
        breakers.set(key, b)
      }
      const breaker = b
      if (breaker.state === "open") {
        const elapsed = now - (breaker.openedAt ?? now)
        if (elapsed < resetAfter) {
          return Effect.fail(new CircuitOpenError({ key, retryAfterMillis: resetAfter - elapsed }))
        }
        breaker.state = "half_open"
        breaker.probing = false
      }
      if (breaker.state === "half_open") {
        if (breaker.probing) return Effect.fail(new CircuitOpenError({ key, retryAfterMillis: resetAfter }))
        breaker.probing = true
      }
      const probe = breaker.state === "half_open"
      return Effect.onExit(effect, (exit) =>
        Effect.flatMap(Clock.currentTimeMillis, (at) => {
          if (probe) breaker.probing = false
          if (Exit.isSuccess(exit)) {
            breaker.state = "closed"
            breaker.consecutiveFailures = 0
            breaker.openedAt = null
          } else if (Exit.isInterrupted(exit)) {
            return Effect.void
          } else {
            breaker.consecutiveFailures++
            if (probe || breaker.consecutiveFailures >= threshold) {
              breaker.state = "open"
              breaker.openedAt = at
            }
          }
          return report(key, breaker)
        }))
    })

  return CircuitBreakers.of({
    protect,
    snapshot: Effect.sync(() =>
      [...breakers].map(([key, b]) => ({
        key,
        state: b.state,
        consecutiveFailures: b.consecutiveFailures,
        openedAt: b.openedAt
      }))
    )
  })
})

/** A fresh registry for the process (build it once, at the edge). */
export const layer: Layer.Layer<CircuitBreakers> = Layer.effect(CircuitBreakers, make)
