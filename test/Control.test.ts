/**
 * Control commands and taking up runs at the edges, on the in-memory store, the embedded engine
 * and the Postgres server: a response or cancel that arrives as a run ends is refused (never lost),
 * two control commands at once have exactly one winner, nothing is appended after a terminal event,
 * a stale claim is reported as a lost claim (never as corruption), and a writer whose lease ran out
 * starts no node.
 */
import { assert, describe, it } from "@effect/vitest"
import { Deferred, Effect, Either, Exit, Layer, Schema } from "effect"
import * as CircuitBreaker from "../src/CircuitBreaker.js"
import { StaleClaimError } from "../src/Errors.js"
import { isTerminal } from "../src/Events.js"
import * as Graph from "../src/Graph.js"
import * as RunStoreMemory from "../src/layers/memory/RunStoreMemory.js"
import * as RunStoreSql from "../src/layers/sql/RunStoreSql.js"
import { RunStore } from "../src/services/RunStore.js"
import * as State from "../src/State.js"
import { migratedClone } from "./support/Pglite.js"
import * as Postgres from "./support/Postgres.js"
import { openRunner, tags } from "./util.js"

const S = State.define({
  topic: State.channel(Schema.String),
  notes: State.list(Schema.String),
  approved: State.channel(Schema.Boolean, { initial: () => false })
})

let executions: Array<string> = []

const graph = Graph.make({ id: "control", version: 1, state: S })
  .node("research", { writes: ["notes"] }, (ctx) =>
    Effect.sync(() => {
      executions.push(`${ctx.runId} research`)
      return { notes: [`about ${ctx.state.topic}`] }
    }))
  .node("review", { writes: ["approved"] }, (ctx) =>
    Effect.map(ctx.interrupt({ notes: ctx.state.notes }), (r) => ({ approved: r._tag === "approve" })))
  .node("publish", { writes: ["notes"] }, (ctx) =>
    Effect.sync(() => {
      executions.push(`${ctx.runId} publish`)
      return { notes: ["published"] }
    }))
  .edge(Graph.START, "research")
  .edge("research", "review")
  .edge("review", "publish")
  .edge("publish", Graph.END)
  .compile

/** A hang shows as a failure, not as a test timeout. */
const within = <A, E, R>(self: Effect.Effect<A, E, R>, what: string) =>
  Effect.timeoutFail(self, { duration: "10 seconds", onTimeout: () => new Error(`${what} never returned`) })

const engines = [
  { name: "memory", layer: RunStoreMemory.layer(), run: true },
  { name: "embedded", layer: RunStoreSql.layer().pipe(Layer.provide(migratedClone)), run: true },
  { name: "server", layer: RunStoreSql.layer().pipe(Layer.provide(Postgres.migratedDatabase())), run: Postgres.available }
] as const

/** Starts a run in a runner of its own, waits until it waits for the review, and stops that runner (the run stays waiting). */
const parkedRun = (topic: string) =>
  Effect.gen(function*() {
    const store = yield* RunStore
    const first = yield* openRunner(store)
    const handle = yield* first.runner.start(yield* graph, { topic })
    assert.strictEqual((yield* handle.result).status, "waiting")
    yield* first.stop
    return handle.runId
  })

for (const engine of engines) {
  describe.runIf(engine.run)(`control at the edges (${engine.name})`, () => {
    it.layer(Layer.merge(engine.layer, CircuitBreaker.layer), { timeout: 120_000 })((it) => {
      it.effect("a response or cancel sent just after the run completed fails with RunStatusError instead of hanging", () =>
        Effect.gen(function*() {
          const store = yield* RunStore
          const g = yield* graph
          const { runner, stop } = yield* openRunner(store)
          for (let round = 0; round < 5; round++) {
            const handle = yield* runner.start(g, { topic: `t${round}` })
            assert.strictEqual((yield* handle.result).status, "waiting")
            const both = yield* within(
              Effect.all([
                runner.respond(g, handle.runId, { _tag: "approve" }),
                runner.respond(g, handle.runId, { _tag: "approve" })
              ].map(Effect.either), { concurrency: "unbounded" }),
              "two responds at once"
            )
            assert.strictEqual(both.filter(Either.isRight).length, 1, "one of two responds at once wins")
            assert.strictEqual((yield* handle.result).status, "completed")
            const late = yield* within(Effect.either(runner.respond(g, handle.runId, { _tag: "approve" })), "a late respond")
            const cancel = yield* within(Effect.either(runner.cancel(handle.runId)), "a late cancel")
            const again = yield* within(Effect.either(runner.answer(g, handle.runId, { _tag: "reject" })), "a late answer")
            const refused: ReadonlyArray<Either.Either<unknown, { readonly _tag: string }>> = [
              ...both.filter(Either.isLeft),
              late,
              cancel,
              again
            ]
            for (const outcome of refused) {
              assert.isTrue(Either.isLeft(outcome), "a command on a run that moved on is refused")
              if (Either.isLeft(outcome)) assert.strictEqual(outcome.left._tag, "RunStatusError")
            }
            const events = yield* store.events(handle.runId, 0)
            assert.strictEqual(events.filter(isTerminal).length, 1)
            assert.isTrue(isTerminal(events.at(-1)!), "nothing follows the terminal event")
          }
          yield* stop
        }))

      it.effect("a response or cancel sent the moment the run's final commit lands is refused, never lost in a stopping mailbox", () =>
        Effect.gen(function*() {
          const base = yield* RunStore
          const g = yield* graph
          for (const command of ["respond", "cancel"] as const) {
            const ended = yield* Deferred.make<void>()
            const store = RunStore.of({
              ...base,
              commit: (c) =>
                Effect.tap(base.commit(c), () => c.status === "completed" ? Deferred.succeed(ended, undefined) : Effect.void)
            })
            const { runner, stop } = yield* openRunner(store)
            const handle = yield* runner.start(g, { topic: command })
            assert.strictEqual((yield* handle.result).status, "waiting")
            yield* runner.respond(g, handle.runId, { _tag: "approve" })
            yield* Deferred.await(ended)
            const late = yield* within(
              Effect.either(command === "respond" ? runner.respond(g, handle.runId, { _tag: "approve" }) : runner.cancel(handle.runId)),
              `a ${command} as the run ends`
            )
            yield* stop
            assert.isTrue(Either.isLeft(late) && late.left._tag === "RunStatusError", `the late ${command} is refused`)
          }
        }))

      it.effect("two cancels of one waiting run from two runners at once: exactly one wins, one RunCancelled", () =>
        Effect.gen(function*() {
          const store = yield* RunStore
          for (let round = 0; round < 6; round++) {
            const runId = yield* parkedRun(`c${round}`)
            const a = yield* openRunner(store)
            const b = yield* openRunner(store)
            const outcomes = yield* within(
              Effect.all([a.runner.cancel(runId, "from a"), b.runner.cancel(runId, "from b")].map(Effect.either), {
                concurrency: "unbounded"
              }),
              "two cancels"
            )
            yield* a.stop
            yield* b.stop
            const won = outcomes.filter(Either.isRight).length
            assert.strictEqual(won, 1, `exactly one cancel wins (round ${round})`)
            for (const o of outcomes) if (Either.isLeft(o)) assert.strictEqual(o.left._tag, "RunStatusError")
            const events = yield* store.events(runId, 0)
            assert.strictEqual(tags(events).filter((t) => t === "RunCancelled").length, 1)
            assert.strictEqual((yield* store.get(runId)).status, "cancelled")
          }
        }))

      it.effect("an approve and a reject of one waiting run at once: one wins, the loser gets RunStatusError, never corruption", () =>
        Effect.gen(function*() {
          const store = yield* RunStore
          const g = yield* graph
          for (let round = 0; round < 6; round++) {
            const runId = yield* parkedRun(`r${round}`)
            const a = yield* openRunner(store)
            const b = yield* openRunner(store)
            const outcomes = yield* within(
              Effect.all([
                a.runner.answer(g, runId, { _tag: "approve" }),
                b.runner.answer(g, runId, { _tag: "reject", reason: "no" })
              ].map(Effect.either), { concurrency: "unbounded" }),
              "two answers"
            )
            yield* a.stop
            yield* b.stop
            assert.strictEqual(outcomes.filter(Either.isRight).length, 1, `exactly one answer wins (round ${round})`)
            for (const o of outcomes) if (Either.isLeft(o)) assert.strictEqual(o.left._tag, "RunStatusError")
            const events = yield* store.events(runId, 0)
            assert.strictEqual(tags(events).filter((t) => t === "RunResumed").length, 1)
            assert.deepStrictEqual(events.map((e) => e.seq), events.map((_, i) => i + 1))
          }
        }))

      it.effect("a run whose row says running after its log ended is refused as corrupt; nothing more is appended", () =>
        Effect.gen(function*() {
          const store = yield* RunStore
          const g = yield* graph
          const { runner, stop } = yield* openRunner(store)
          const handle = yield* runner.start(g, { topic: "ended" })
          assert.strictEqual((yield* handle.result).status, "waiting")
          yield* runner.respond(g, handle.runId, { _tag: "approve" })
          assert.strictEqual((yield* handle.result).status, "completed")
          yield* stop
          const ended = yield* store.acquire(handle.runId)
          const row = yield* store.commit({
            runId: ended.runId,
            epoch: ended.claimEpoch,
            expectedStep: ended.step,
            step: ended.step,
            status: "running",
            events: [],
            checkpoint: undefined,
            usage: ended.usage,
            waitUntil: null,
            error: null,
            at: ended.updatedAt
          })
          const before = yield* store.events(handle.runId, 0)
          const worker = yield* openRunner(store)
          const error = yield* Effect.flip(worker.runner.adopt(g, yield* store.acquire(row.runId)))
          yield* worker.stop
          assert.strictEqual(error._tag, "EventLogCorruptionError")
          assert.include(error.message, "RunCompleted")
          assert.deepStrictEqual(yield* store.events(handle.runId, 0), before)
        }))

      it.effect("a claim taken over before the run is loaded is reported as a lost claim, not as corruption", () =>
        Effect.gen(function*() {
          const store = yield* RunStore
          const g = yield* graph
          executions = []
          const runId = yield* parkedRun("taken")
          const stale = yield* store.acquire(runId)
          const rescuer = yield* openRunner(store)
          yield* rescuer.runner.respond(g, runId, { _tag: "approve" })
          assert.strictEqual((yield* rescuer.runner.result(g, runId)).status, "completed")
          yield* rescuer.stop

          const zombie = yield* openRunner(store)
          const exit = yield* Effect.exit(zombie.runner.adopt(g, stale))
          yield* zombie.stop
          assert.isTrue(Exit.isFailure(exit))
          const error = yield* Effect.flip(exit)
          assert.instanceOf(error, StaleClaimError, "a lost claim")
          assert.deepStrictEqual(executions.filter((e) => e.endsWith("publish")), [`${runId} publish`], "publish ran once")
        }))

      it.effect("a writer whose guard fails (its lease ran out) starts no node and reports the lost claim", () =>
        Effect.gen(function*() {
          const store = yield* RunStore
          const g = yield* graph
          executions = []
          const { runner, stop } = yield* openRunner(store)
          const admitted = yield* runner.prepare(g, { topic: "guarded" })
          yield* store.create(admitted.run, admitted.events, admitted.checkpoint)
          const claimed = yield* store.acquire(admitted.run.runId)
          const guard = Effect.fail(
            new StaleClaimError({
              runId: claimed.runId,
              epoch: claimed.claimEpoch,
              currentEpoch: claimed.claimEpoch,
              expectedStep: claimed.step,
              currentStep: claimed.step,
              reason: "the lease ran out before the step started"
            })
          )
          yield* runner.adopt(g, claimed, { guard })
          const result = yield* runner.result(g, claimed.runId)
          yield* stop
          assert.deepStrictEqual(executions, [], "no node started")
          assert.strictEqual(result.claimLost, true)
          assert.include(result.stopped ?? "", "lease ran out")
          assert.deepStrictEqual(tags(yield* store.events(claimed.runId, 0)), ["RunStarted"], "nothing was written")
        }))
    })
  })
}
