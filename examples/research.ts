/**
 * A research assistant graph, run against a scripted language model (no network):
 *
 *   START ─┬─ plan ──(fan-out: one `search` per query)── search ─┐
 *          └─ background ─────────────────────────────────────────┴─(join)─ draft ─ critique ─┐
 *                                                                  ▲                          │
 *                                                                  └──── revise (loop) ◄──────┤
 *                                                                                  approve ◄──┘ ─ END
 *
 * `plan` and `background` run in parallel; `search` fans out; `draft` waits for both branches;
 * `critique` loops back through `revise` until the draft is good enough; `approve` parks the run
 * for a human, and this script answers as the human would. Events print as they commit.
 *
 * The graph and its scripted model live in `examples/graphs.ts`, the module a worker loads.
 *
 * The run is durable: it is stored in the embedded Postgres in ./.fibergraph (or wherever
 * FIBERGRAPH_STORE / DATABASE_URL point: `postgres://…`, `pglite://<dir>`, `memory://`).
 */
import { Effect, Layer, Stream } from "effect"
import { CircuitBreaker, EventSinkConsole, Runner, ScriptedModel, Store } from "../src/index.js"
import { research as graph, script } from "./graphs.js"

const program = Effect.gen(function*() {
  const compiled = yield* graph
  const store = yield* Store.Store
  yield* Effect.log(`store: ${store.url}`)
  const runner = yield* Runner.Runner
  const run = yield* runner.start(compiled, { question: "Why are there tides?" }, {
    budget: { usd: 0.5 },
    timeout: "10 minutes"
  })

  const waiting = yield* run.result
  yield* Effect.log(`run ${run.runId} is ${waiting.status}; a human is asked: ${JSON.stringify(waiting.interrupts[0]?.payload)}`)
  yield* runner.respond(compiled, run.runId, { _tag: "approve", value: { reviewer: "ada" } })

  const done = yield* run.result
  const tags = yield* runner.events(run.runId).pipe(Stream.runFold(0, (n) => n + 1))
  yield* Effect.log(`run ${run.runId} ${done.status} after ${done.step} steps and ${tags} events; ` +
    `${done.usage.total.tokens} tokens, $${done.usage.total.usd.toFixed(4)}`)
  console.log(JSON.stringify(done.state, null, 2))
  if (done.status !== "completed") return yield* Effect.fail(new Error(`run ended ${done.status}`))
})

const MainLayer = Runner.layer().pipe(
  Layer.provideMerge(Layer.mergeAll(Store.layerConfig, CircuitBreaker.layer, EventSinkConsole.layer()))
)

Effect.runPromise(
  program.pipe(Effect.provide(Layer.merge(MainLayer, ScriptedModel.layer(script))), Effect.scoped)
).catch((error) => {
  console.error(error)
  process.exitCode = 1
})
