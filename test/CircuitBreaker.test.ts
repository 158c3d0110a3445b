import { assert, describe, it } from "@effect/vitest"
import { Deferred, Effect, Exit, Fiber, Metric, Ref, TestClock } from "effect"
import { type BreakerState, CircuitBreakers } from "../src/CircuitBreaker.js"
import * as CircuitBreaker from "../src/CircuitBreaker.js"
import * as Errors from "../src/Errors.js"

const policy = { failureThreshold: 3, resetAfter: "30 seconds" } as const

const withBreakers = <A, E>(effect: Effect.Effect<A, E, CircuitBreakers>) =>
  Effect.provide(effect, CircuitBreaker.layer)

const stateOf = (key: string) =>
  Effect.flatMap(CircuitBreakers, (b) => b.snapshot).pipe(
    Effect.map((all): BreakerState | undefined => all.find((s) => s.key === key))
  )

const boom = Effect.fail("boom" as const)

describe("CircuitBreakers", () => {
  it.effect("opens after N consecutive failures and then refuses without running the effect", () =>
    withBreakers(Effect.gen(function*() {
      const breakers = yield* CircuitBreakers
      const calls = yield* Ref.make(0)
      const failing = Effect.zipRight(Ref.update(calls, (n) => n + 1), boom)
      for (let i = 0; i < 2; i++) assert.strictEqual(yield* Effect.flip(breakers.protect("k", policy, failing)), "boom")
      assert.strictEqual((yield* stateOf("k"))?.state, "closed")
      assert.strictEqual((yield* stateOf("k"))?.consecutiveFailures, 2)
      assert.strictEqual(yield* Effect.flip(breakers.protect("k", policy, failing)), "boom")
      const opened = yield* stateOf("k")
      assert.strictEqual(opened?.state, "open")
      assert.strictEqual(opened?.openedAt, yield* TestClock.currentTimeMillis)

      const refused = yield* Effect.flip(breakers.protect("k", policy, failing))
      assert.instanceOf(refused, Errors.CircuitOpenError)
      assert.strictEqual((refused as Errors.CircuitOpenError).key, "k")
      assert.strictEqual((refused as Errors.CircuitOpenError).retryAfterMillis, 30_000)
      assert.strictEqual(yield* Ref.get(calls), 3)
    })))

  it.effect("a success resets the count of consecutive failures", () =>
    withBreakers(Effect.gen(function*() {
      const breakers = yield* CircuitBreakers
      for (let round = 0; round < 3; round++) {
        yield* Effect.flip(breakers.protect("k", policy, boom))
        yield* Effect.flip(breakers.protect("k", policy, boom))
        assert.strictEqual(yield* breakers.protect("k", policy, Effect.succeed(1)), 1)
      }
      const s = yield* stateOf("k")
      assert.strictEqual(s?.state, "closed")
      assert.strictEqual(s?.consecutiveFailures, 0)
    })))

  it.effect("breakers with different keys are independent", () =>
    withBreakers(Effect.gen(function*() {
      const breakers = yield* CircuitBreakers
      for (let i = 0; i < 3; i++) yield* Effect.flip(breakers.protect("a", policy, boom))
      assert.strictEqual(yield* breakers.protect("b", policy, Effect.succeed("b ok")), "b ok")
      const all = yield* breakers.snapshot
      assert.deepStrictEqual(all.map((s) => [s.key, s.state]).sort(), [["a", "open"], ["b", "closed"]])
    })))

  it.effect("reports the time left while open", () =>
    withBreakers(Effect.gen(function*() {
      const breakers = yield* CircuitBreakers
      for (let i = 0; i < 3; i++) yield* Effect.flip(breakers.protect("k", policy, boom))
      yield* TestClock.adjust("10 seconds")
      const refused = yield* Effect.flip(breakers.protect("k", policy, Effect.succeed(1)))
      assert.instanceOf(refused, Errors.CircuitOpenError)
      assert.strictEqual((refused as Errors.CircuitOpenError).retryAfterMillis, 20_000)
    })))

  it.effect("after resetAfter lets one probe through, refuses a concurrent call, and closes when the probe succeeds", () =>
    withBreakers(Effect.gen(function*() {
      const breakers = yield* CircuitBreakers
      for (let i = 0; i < 3; i++) yield* Effect.flip(breakers.protect("k", policy, boom))
      yield* TestClock.adjust("29 seconds")
      assert.instanceOf(yield* Effect.flip(breakers.protect("k", policy, Effect.succeed(0))), Errors.CircuitOpenError)
      yield* TestClock.adjust("1 second")

      const gate = yield* Deferred.make<void>()
      const started = yield* Deferred.make<void>()
      const probe = yield* Effect.fork(
        breakers.protect("k", policy, Effect.zipRight(Deferred.succeed(started, undefined), Effect.as(Deferred.await(gate), "probed")))
      )
      yield* Deferred.await(started)
      assert.strictEqual((yield* stateOf("k"))?.state, "half_open")

      const calls = yield* Ref.make(0)
      const second = yield* Effect.flip(breakers.protect("k", policy, Effect.as(Ref.update(calls, (n) => n + 1), 2)))
      assert.instanceOf(second, Errors.CircuitOpenError)
      assert.strictEqual(yield* Ref.get(calls), 0)

      yield* Deferred.succeed(gate, undefined)
      assert.strictEqual(yield* Fiber.join(probe), "probed")
      const closed = yield* stateOf("k")
      assert.strictEqual(closed?.state, "closed")
      assert.strictEqual(closed?.consecutiveFailures, 0)
      assert.strictEqual(yield* breakers.protect("k", policy, Effect.succeed(3)), 3)
    })))

  it.effect("a failed probe opens the circuit again for another resetAfter", () =>
    withBreakers(Effect.gen(function*() {
      const breakers = yield* CircuitBreakers
      for (let i = 0; i < 3; i++) yield* Effect.flip(breakers.protect("k", policy, boom))
      yield* TestClock.adjust("30 seconds")
      assert.strictEqual(yield* Effect.flip(breakers.protect("k", policy, boom)), "boom")
      const reopened = yield* stateOf("k")
      assert.strictEqual(reopened?.state, "open")
      assert.strictEqual(reopened?.openedAt, yield* TestClock.currentTimeMillis)
      assert.instanceOf(yield* Effect.flip(breakers.protect("k", policy, Effect.succeed(1))), Errors.CircuitOpenError)
      yield* TestClock.adjust("30 seconds")
      assert.strictEqual(yield* breakers.protect("k", policy, Effect.succeed(1)), 1)
      assert.strictEqual((yield* stateOf("k"))?.state, "closed")
    })))

  it.effect("an interrupted probe does not leave the breaker stuck refusing every call", () =>
    withBreakers(Effect.gen(function*() {
      const breakers = yield* CircuitBreakers
      for (let i = 0; i < 3; i++) yield* Effect.flip(breakers.protect("k", policy, boom))
      yield* TestClock.adjust("30 seconds")
      const started = yield* Deferred.make<void>()
      const probe = yield* Effect.fork(
        breakers.protect("k", policy, Effect.zipRight(Deferred.succeed(started, undefined), Effect.never))
      )
      yield* Deferred.await(started)
      yield* Fiber.interrupt(probe)
      const exit = yield* Effect.exit(breakers.protect("k", policy, Effect.succeed("after")))
      assert.deepStrictEqual(exit, Exit.succeed("after"))
    })))

  it.effect("exports each breaker's state as the fibergraph_circuit_breaker_state gauge", () =>
    withBreakers(Effect.gen(function*() {
      const breakers = yield* CircuitBreakers
      const key = "CircuitBreaker.test/gauge"
      const gauge = () =>
        Effect.map(Metric.snapshot, (pairs) => {
          const pair = pairs.find((p) =>
            p.metricKey.name === "fibergraph_circuit_breaker_state" &&
            p.metricKey.tags.some((t) => t.key === "key" && t.value === key)
          )
          return pair === undefined ? undefined : (pair.metricState as unknown as { readonly value: number }).value
        })
      for (let i = 0; i < 3; i++) yield* Effect.flip(breakers.protect(key, policy, boom))
      assert.strictEqual(yield* gauge(), 2)
      yield* TestClock.adjust("30 seconds")
      yield* breakers.protect(key, policy, Effect.void)
      assert.strictEqual(yield* gauge(), 0)
    })))
})
