/**
 * The graph of the chaos and partition tests, and the probes they install in the database.
 *
 * The graph: `prepare` → (`work` × 3 ‖ `audit`) → `merge` → `refine` × `limit` → `finish`. Every
 * node sleeps a little (times `pace`) and records a side effect under its idempotency key, outside
 * the step commit, in a table without a unique constraint, so a re-executed node instance shows up
 * as a second row. Each row also names the claim epoch the executing worker held (the worker
 * program sets `ClaimEpoch` around `Runner.adopt`, and the run's fibers inherit it), the process
 * and its connection's `application_name`.
 *
 * The probes: an `AFTER UPDATE` trigger on `fibergraph.runs` that appends every change of a run row
 * (a claim bumping the epoch, or a step commit) to `chaos_audit`, in the writer's own transaction,
 * with the writer's `application_name`; and the `chaos_stale` counter of rejected (stale) commits.
 */
import * as SqlClient from "@effect/sql/SqlClient"
import { Effect, FiberRef, Random, Schema } from "effect"
import * as Graph from "../../src/Graph.js"
import * as State from "../../src/State.js"

/** The claim epoch under which the current fiber runs a run (-1: unknown, a defect of the harness). */
export const ClaimEpoch = FiberRef.unsafeMake<number>(-1)

/** How many `work` instances `prepare` fans out. */
export const fanOut = 3

/** The state of the chaos graph; `limit` (loop rounds) and `pace` (sleep factor) come with the input. */
export const ChaosState = State.define({
  items: State.channel(Schema.Array(Schema.Number), { initial: () => [] }),
  log: State.list(Schema.String),
  total: State.counter(),
  audit: State.channel(Schema.String, { initial: () => "" }),
  rounds: State.counter(),
  limit: State.channel(Schema.Number, { initial: () => 2 }),
  pace: State.channel(Schema.Number, { initial: () => 1 }),
  summary: State.channel(Schema.String, { initial: () => "" })
})

/** Creates the side-effect table, the audit table and trigger, and the stale-commit counter. */
export const installProbes = Effect.flatMap(SqlClient.SqlClient, (sql) =>
  Effect.all([
    sql`CREATE TABLE IF NOT EXISTS chaos_effects (
      key text NOT NULL,
      run_id text NOT NULL,
      node text NOT NULL,
      step int NOT NULL,
      epoch bigint NOT NULL,
      pid int NOT NULL,
      app text NOT NULL,
      at timestamptz NOT NULL DEFAULT clock_timestamp()
    )`,
    sql`CREATE TABLE IF NOT EXISTS chaos_audit (
      id bigserial PRIMARY KEY,
      run_id text NOT NULL,
      kind text NOT NULL,
      old_epoch bigint NOT NULL,
      new_epoch bigint NOT NULL,
      old_step int NOT NULL,
      new_step int NOT NULL,
      old_last_seq bigint NOT NULL,
      new_last_seq bigint NOT NULL,
      status text NOT NULL,
      app text NOT NULL,
      at timestamptz NOT NULL DEFAULT clock_timestamp()
    )`,
    sql`CREATE TABLE IF NOT EXISTS chaos_stale (app text PRIMARY KEY, n int NOT NULL)`,
    sql.unsafe(`CREATE OR REPLACE FUNCTION chaos_audit_run() RETURNS trigger LANGUAGE plpgsql AS $$
      BEGIN
        INSERT INTO chaos_audit (run_id, kind, old_epoch, new_epoch, old_step, new_step, old_last_seq, new_last_seq, status, app)
        VALUES (NEW.run_id, CASE WHEN NEW.claim_epoch <> OLD.claim_epoch THEN 'claim' ELSE 'commit' END,
                OLD.claim_epoch, NEW.claim_epoch, OLD.step, NEW.step, OLD.last_seq, NEW.last_seq, NEW.status,
                current_setting('application_name'));
        RETURN NEW;
      END $$`),
    sql`DROP TRIGGER IF EXISTS chaos_audit ON fibergraph.runs`,
    sql`CREATE TRIGGER chaos_audit AFTER UPDATE ON fibergraph.runs FOR EACH ROW EXECUTE FUNCTION chaos_audit_run()`
  ], { discard: true }))

/** Counts one rejected (stale) commit of this process's connection. */
export const countStale = Effect.flatMap(SqlClient.SqlClient, (sql) =>
  sql`INSERT INTO chaos_stale (app, n) VALUES (current_setting('application_name'), 1)
      ON CONFLICT (app) DO UPDATE SET n = chaos_stale.n + 1`)

const pause = (pace: number, min: number, max: number) =>
  Effect.flatMap(Random.nextIntBetween(min, max), (millis) => Effect.sleep(millis * pace))

/** A node's side effect: a pause, the row, another pause (a kill or a stop can land on either side). */
const sideEffect = (ctx: {
  readonly idempotencyKey: string
  readonly runId: string
  readonly node: string
  readonly step: number
  readonly state: { readonly pace: number }
}) =>
  Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    const epoch = yield* FiberRef.get(ClaimEpoch)
    yield* pause(ctx.state.pace, 5, 25)
    yield* sql`INSERT INTO chaos_effects (key, run_id, node, step, epoch, pid, app)
      VALUES (${ctx.idempotencyKey}, ${ctx.runId}, ${ctx.node}, ${ctx.step}, ${epoch}, ${process.pid},
              current_setting('application_name'))`
    yield* pause(ctx.state.pace, 5, 15)
  })

/** A lost connection is worth another attempt: the side effect is keyed, so a retry is safe. */
const policy = { retry: { maxAttempts: 10, initialDelay: "50 millis", maxDelay: "1 second" } } as const

/** The chaos graph: parallel branches (a fan-out beside an audit), a join, a loop and a final node. */
export const graph = Graph.make({ id: "chaos-test", version: 1, state: ChaosState })
  .node("prepare", { reads: ["pace"], writes: ["items", "log"], policy }, (ctx) =>
    Effect.as(sideEffect(ctx), { items: Array.from({ length: fanOut }, (_, i) => i + 1), log: ["prepare"] }))
  .node("work", { input: Schema.Number, reads: ["pace"], writes: ["log", "total"], policy }, (ctx) =>
    Effect.as(sideEffect(ctx), { log: [`work(${ctx.input})`], total: ctx.input * ctx.input }))
  .node("audit", { reads: ["items", "pace"], writes: ["audit", "log"], policy }, (ctx) =>
    Effect.as(sideEffect(ctx), { audit: `audited ${ctx.state.items.length} items`, log: ["audit"] }))
  .node("merge", { reads: ["total", "audit", "pace"], writes: ["summary", "log"], policy }, (ctx) =>
    Effect.as(sideEffect(ctx), { summary: `${ctx.state.audit}, total ${ctx.state.total}`, log: ["merge"] }))
  .node("refine", { reads: ["rounds", "summary", "pace"], writes: ["rounds", "summary", "log"], policy }, (ctx) =>
    Effect.as(sideEffect(ctx), {
      rounds: 1,
      summary: `${ctx.state.summary} / round ${ctx.state.rounds + 1}`,
      log: [`refine(${ctx.state.rounds + 1})`]
    }))
  .node("finish", { reads: ["summary", "pace"], writes: ["summary", "log"], policy }, (ctx) =>
    Effect.as(sideEffect(ctx), { summary: `${ctx.state.summary}: done`, log: ["finish"] }))
  .edge(Graph.START, "prepare")
  .fanOut("prepare", "work", (s) => s.items)
  .edge("prepare", "audit")
  .edge(["work", "audit"], "merge")
  .edge("merge", "refine")
  .route("refine", (s) => s.rounds < s.limit ? "refine" : "finish", ["refine", "finish"])
  .edge("finish", Graph.END)
  .compile

/** The node instances of each step of a run with `limit` rounds, as `node/index`, step by step. */
export const expectedSteps = (limit: number): ReadonlyArray<ReadonlyArray<string>> => [
  ["prepare/0"],
  [...Array.from({ length: fanOut }, (_, i) => `work/${i}`), "audit/0"],
  ["merge/0"],
  ...Array.from({ length: limit }, () => ["refine/0"]),
  ["finish/0"]
]

/** The final summary of a run with `limit` rounds. */
export const expectedSummary = (limit: number) => {
  let summary = `audited ${fanOut} items, total ${Array.from({ length: fanOut }, (_, i) => (i + 1) ** 2).reduce((a, b) => a + b, 0)}`
  for (let round = 1; round <= limit; round++) summary = `${summary} / round ${round}`
  return `${summary}: done`
}
