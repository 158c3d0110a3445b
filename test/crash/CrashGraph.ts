/**
 * The durable graph of the crash test: a fan-out of four workers beside a parallel audit branch,
 * a join, a loop of three rounds and a final node. Every node is slow (20–80 ms on the live
 * clock) and records a side effect under its idempotency key in a table of its own, outside the
 * step commit, so a re-executed node instance shows up as a second row with the same key.
 */
import * as SqlClient from "@effect/sql/SqlClient"
import { Effect, Random, Schema } from "effect"
import * as Graph from "../../src/Graph.js"
import * as State from "../../src/State.js"

/** The side-effect table: no unique constraint, so duplicates stay visible. */
export const effectsTable = "fibergraph_test_effects"

/** Creates the side-effect table if it is missing. */
export const createEffectsTable = Effect.flatMap(SqlClient.SqlClient, (sql) =>
  sql`CREATE TABLE IF NOT EXISTS ${sql(effectsTable)} (
    key text NOT NULL,
    node text NOT NULL,
    step int NOT NULL,
    pid int NOT NULL,
    at timestamptz NOT NULL DEFAULT now()
  )`)

/** One row of the side-effect table. */
export interface EffectRow {
  readonly key: string
  readonly node: string
  readonly step: number
  readonly pid: number
}

/** The side-effect rows of one run (its keys start with the run id), in insertion order. */
export const effectsOf = (runId: string) =>
  Effect.flatMap(SqlClient.SqlClient, (sql) =>
    sql<EffectRow>`
      SELECT key, node, step, pid FROM ${sql(effectsTable)}
      WHERE key LIKE ${`${runId}/%`} ORDER BY at, ctid`.pipe(
      Effect.map((rows) => rows.map((r) => ({ ...r, step: Number(r.step), pid: Number(r.pid) })))
    ))

/** The state of the crash graph. */
export const CrashState = State.define({
  items: State.channel(Schema.Array(Schema.Number), { initial: () => [] }),
  log: State.list(Schema.String),
  total: State.counter(),
  audit: State.channel(Schema.String, { initial: () => "" }),
  rounds: State.counter(),
  summary: State.channel(Schema.String, { initial: () => "" })
})

/** How many times `refine` runs. */
export const rounds = 3

/** The side effect of one node instance: a pause, the row, another pause (a kill can land on either side). */
const sideEffect = (ctx: { readonly idempotencyKey: string; readonly node: string; readonly step: number }) =>
  Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    yield* Effect.sleep(yield* Random.nextIntBetween(10, 50))
    yield* sql`INSERT INTO ${sql(effectsTable)} (key, node, step, pid)
      VALUES (${ctx.idempotencyKey}, ${ctx.node}, ${ctx.step}, ${process.pid})`
    yield* Effect.sleep(yield* Random.nextIntBetween(10, 30))
  })

/** The crash graph: `prepare` → (`work` × 4 ‖ `audit`) → `merge` → `refine` × 3 → `finish`. */
export const graph = Graph.make({ id: "crash-test", version: 1, state: CrashState })
  .node("prepare", { writes: ["items", "log"] }, (ctx) =>
    Effect.as(sideEffect(ctx), { items: [1, 2, 3, 4], log: ["prepare"] }))
  .node("work", { input: Schema.Number, writes: ["log", "total"] }, (ctx) =>
    Effect.as(sideEffect(ctx), { log: [`work(${ctx.input})`], total: ctx.input * ctx.input }))
  .node("audit", { reads: ["items"], writes: ["audit", "log"] }, (ctx) =>
    Effect.as(sideEffect(ctx), { audit: `audited ${ctx.state.items.length} items`, log: ["audit"] }))
  .node("merge", { reads: ["total", "audit"], writes: ["summary", "log"] }, (ctx) =>
    Effect.as(sideEffect(ctx), { summary: `${ctx.state.audit}, total ${ctx.state.total}`, log: ["merge"] }))
  .node("refine", { reads: ["rounds", "summary"], writes: ["rounds", "summary", "log"] }, (ctx) =>
    Effect.as(sideEffect(ctx), {
      rounds: 1,
      summary: `${ctx.state.summary} / round ${ctx.state.rounds + 1}`,
      log: [`refine(${ctx.state.rounds + 1})`]
    }))
  .node("finish", { reads: ["summary"], writes: ["summary", "log"] }, (ctx) =>
    Effect.as(sideEffect(ctx), { summary: `${ctx.state.summary}: done`, log: ["finish"] }))
  .edge(Graph.START, "prepare")
  .fanOut("prepare", "work", (s) => s.items)
  .edge("prepare", "audit")
  .edge(["work", "audit"], "merge")
  .edge("merge", "refine")
  .route("refine", (s) => s.rounds < rounds ? "refine" : "finish", ["refine", "finish"])
  .edge("finish", Graph.END)
  .compile
