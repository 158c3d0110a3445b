/**
 * The command line end to end, with real processes against a fresh database on the Postgres
 * server: migrate; submit runs (and bad input); a `worker` process serving `/healthz`, `/readyz`
 * and `/metrics` runs them; `runs get | list | resume | approve | cancel` steer them, with the
 * documented exit codes; SIGTERM drains the worker, which releases its in-flight job and exits 0.
 */
import * as PgClient from "@effect/sql-pg/PgClient"
import * as SqlClient from "@effect/sql/SqlClient"
import { assert, describe, layer } from "@effect/vitest"
import { Context, Deferred, Duration, Effect, Layer, Option, Redacted, Scope } from "effect"
import * as Postgres from "../support/Postgres.js"
import { fibergraph, get, json, type Outcome, startWorker, type WorkerProcess } from "./Process.js"

const graphsModule = "test/cli/graphs.ts"
const grace = Duration.seconds(3)

class Fixture extends Context.Tag("test/cli/Fixture")<Fixture, {
  readonly url: string
  readonly sql: SqlClient.SqlClient
  /** Where the worker process lives: closed (SIGKILL if needed) after the last test. */
  readonly scope: Scope.Scope
  /** Variables for every command (the fibergraph ones of this process are not inherited). */
  readonly env: Readonly<Record<string, string>>
  /** Filled by the tests as they go. */
  readonly runs: Record<string, string>
  worker: WorkerProcess | undefined
}>() {}

const FixtureLive = Layer.scoped(
  Fixture,
  Effect.gen(function*() {
    const database = yield* Layer.build(Postgres.freshDatabase("fg_cli"))
    const url = Context.get(database, PgClient.PgClient).config.url
    if (url === undefined) return yield* Effect.dieMessage("the fresh database has no URL")
    const scope = yield* Effect.scope
    return {
      url: Redacted.value(url),
      sql: Context.get(database, SqlClient.SqlClient),
      scope,
      env: {},
      runs: {},
      worker: undefined
    }
  })
)

const expectExit = (outcome: Outcome, code: number, what: string) =>
  assert.strictEqual(outcome.code, code, `${what}: exit ${outcome.code}\nstdout: ${outcome.stdout}\nstderr: ${outcome.stderr}`)

const statusOf = (sql: SqlClient.SqlClient, runId: string) =>
  Effect.map(
    sql<{ readonly status: string }>`SELECT status FROM fibergraph.runs WHERE run_id = ${runId}`,
    ([row]) => row?.status ?? "missing"
  ).pipe(Effect.orDie)

/** The status of the run's latest job. */
const jobStatusOf = (sql: SqlClient.SqlClient, runId: string) =>
  Effect.map(
    sql<{ readonly status: string }>`
      SELECT status FROM fibergraph.jobs WHERE run_id = ${runId} ORDER BY created_at DESC, job_id DESC LIMIT 1`,
    ([row]) => row?.status ?? "missing"
  ).pipe(Effect.orDie)

/** Polls `read` until it gives `expected`, failing with the last value after `timeout`. */
const poll = (what: string, read: Effect.Effect<string>, expected: string, timeout: Duration.DurationInput) =>
  Effect.gen(function*() {
    const deadline = Date.now() + Duration.toMillis(timeout)
    while (true) {
      const current = yield* read
      if (current === expected) return
      if (Date.now() > deadline) {
        return yield* Effect.dieMessage(`${what} is ${current}, not ${expected}, after ${Duration.format(Duration.decode(timeout))}`)
      }
      yield* Effect.sleep("100 millis")
    }
  })

/** Waits until the run has `status`. */
const until = (sql: SqlClient.SqlClient, runId: string, status: string, timeout: Duration.DurationInput = "60 seconds") =>
  poll(`run ${runId}`, statusOf(sql, runId), status, timeout)

/** Waits until the run's latest job has `status`. */
const untilJob = (sql: SqlClient.SqlClient, runId: string, status: string, timeout: Duration.DurationInput = "60 seconds") =>
  poll(`the job of run ${runId}`, jobStatusOf(sql, runId), status, timeout)

describe.runIf(Postgres.available)("fibergraph command line", () => {
  layer(FixtureLive, { excludeTestServices: true, timeout: "2 minutes" })((it) => {
    it.effect("migrate --check refuses an unmigrated database (exit 4); migrate applies the schema", () =>
      Effect.gen(function*() {
        const { env, url } = yield* Fixture
        const check = yield* fibergraph(["migrate", "--check", "--store", url], env)
        expectExit(check, 4, "migrate --check")
        assert.include(check.stderr, "run `fibergraph migrate`")
        const migrate = yield* fibergraph(["migrate", "--store", url, "--json"], env)
        expectExit(migrate, 0, "migrate")
        const result = json<{ version: number; applied: ReadonlyArray<unknown> }>(migrate)
        assert.isAbove(result.version, 0)
        assert.isAbove(result.applied.length, 0)
      }), 180_000)

    it.effect("submit --json queues runs; the same idempotency key returns the first run", () =>
      Effect.gen(function*() {
        const fixture = yield* Fixture
        const env = { ...fixture.env, FIBERGRAPH_STORE: fixture.url }
        const submit = (graph: string, input: unknown, ...more: ReadonlyArray<string>) =>
          fibergraph(["submit", graph, "--graphs", graphsModule, "--input", JSON.stringify(input), "--json", ...more], env)
        const [count, first, second, slow, keyed] = yield* Effect.all([
          submit("count", { target: 4 }),
          submit("approval", { title: "tides" }),
          submit("approval", { title: "moons" }),
          submit("slow", { millis: 3_600_000 }),
          submit("count", { target: 2 }, "--idempotency-key", "nightly", "--tenant", "acme", "--priority", "5")
        ], { concurrency: 3 })
        for (const [name, outcome] of Object.entries({ count, first, second, slow, keyed })) {
          expectExit(outcome!, 0, `submit ${name}`)
          const run = json<{ runId: string; status: string; created: boolean }>(outcome!)
          assert.match(run.runId, /^run_/)
          assert.strictEqual(run.status, "pending")
          assert.isTrue(run.created)
          fixture.runs[name] = run.runId
        }
        const again = yield* submit("count", { target: 2 }, "--idempotency-key", "nightly", "--tenant", "acme")
        expectExit(again, 0, "the second submit with the same key")
        assert.deepInclude(json<Record<string, unknown>>(again), { runId: fixture.runs["keyed"], created: false })
      }), 180_000)

    it.effect("submit rejects bad input (exit 2, naming the key), a missing graph module (2) and an unknown graph (3)", () =>
      Effect.gen(function*() {
        const fixture = yield* Fixture
        const env = { ...fixture.env, FIBERGRAPH_STORE: fixture.url }
        const [notJson, badKeys, noModule, unknownGraph] = yield* Effect.all([
          fibergraph(["submit", "count", "--graphs", graphsModule, "--input", "{\"target\": 4"], env),
          fibergraph(["submit", "count", "--graphs", graphsModule, "--input", "{\"target\": \"four\", \"colour\": 1}"], env),
          fibergraph(["submit", "count", "--input", "{}"], env),
          fibergraph(["submit", "nope", "--graphs", graphsModule], env)
        ], { concurrency: 2 })
        expectExit(notJson, 2, "invalid JSON")
        assert.include(notJson.stderr, "--input is not valid JSON")
        expectExit(badKeys, 2, "bad keys")
        assert.include(badKeys.stderr, "key \"target\": Expected")
        assert.include(badKeys.stderr, "unknown state key \"colour\"")
        expectExit(noModule, 2, "no graph module")
        assert.include(noModule.stderr, "--graphs")
        expectExit(unknownGraph, 3, "unknown graph")
        assert.include(unknownGraph.stderr, "graph \"nope\" is not registered")
        const [row] = yield* fixture.sql<{ readonly n: string }>`SELECT count(*) AS n FROM fibergraph.runs`
        assert.strictEqual(Number(row!.n), 5, "nothing is stored for rejected submissions")
      }), 180_000)

    it.effect("runs get of an unknown run exits 3; runs resume re-queues a run whose job was dead-lettered", () =>
      Effect.gen(function*() {
        const fixture = yield* Fixture
        const env = { ...fixture.env, FIBERGRAPH_STORE: fixture.url }
        const keyed = fixture.runs["keyed"]!
        yield* fixture.sql`UPDATE fibergraph.jobs SET status = 'dead', last_error = 'simulated' WHERE run_id = ${keyed}`
        const [unknown, resume] = yield* Effect.all([
          fibergraph(["runs", "get", "run_does_not_exist"], env),
          fibergraph(["runs", "resume", keyed, "--json"], env)
        ], { concurrency: 2 })
        expectExit(unknown, 3, "runs get of an unknown run")
        assert.include(unknown.stderr, "run run_does_not_exist not found")
        expectExit(resume, 0, "runs resume")
        assert.deepInclude(json<Record<string, unknown>>(resume), { runId: keyed, queued: true, jobStatus: "queued" })
        const jobs = yield* fixture.sql<{ readonly status: string }>`
          SELECT status FROM fibergraph.jobs WHERE run_id = ${keyed} ORDER BY created_at, job_id`
        assert.deepStrictEqual(jobs.map((j) => j.status).sort(), ["dead", "queued"])
      }), 180_000)

    it.effect("a worker serves /healthz, /readyz and /metrics and runs the queued runs", () =>
      Effect.gen(function*() {
        const fixture = yield* Fixture
        const env = { ...fixture.env, FIBERGRAPH_STORE: fixture.url, FIBERGRAPH_GRAPHS: graphsModule, FIBERGRAPH_CONCURRENCY: "4" }
        const worker = yield* startWorker(
          ["--port", "0", "--lease", "5s", "--heartbeat", "1s", "--grace", `${Duration.toSeconds(grace)}s`, "--poll", "500ms"],
          env
        ).pipe(Scope.extend(fixture.scope))
        fixture.worker = worker
        const health = yield* get(worker.port, "/healthz")
        assert.strictEqual(health.status, 200)
        let ready = yield* get(worker.port, "/readyz")
        for (let i = 0; ready.status !== 200 && i < 50; i++) {
          yield* Effect.sleep("100 millis")
          ready = yield* get(worker.port, "/readyz")
        }
        assert.strictEqual(ready.status, 200, ready.body)
        assert.deepInclude(JSON.parse(ready.body), { ready: true })
        assert.strictEqual(JSON.parse(ready.body).worker.draining, false)

        const { count, first, keyed, second, slow } = fixture.runs
        yield* Effect.all([
          until(fixture.sql, count!, "completed"),
          until(fixture.sql, keyed!, "completed"),
          until(fixture.sql, first!, "waiting"),
          until(fixture.sql, second!, "waiting"),
          untilJob(fixture.sql, slow!, "claimed")
        ], { concurrency: "unbounded" })

        const got = yield* fibergraph(["runs", "get", count!, "--json", "--events"], env)
        expectExit(got, 0, "runs get")
        const shown = json(got)
        assert.strictEqual(shown.run.status, "completed")
        assert.deepStrictEqual(shown.state, { target: 4, count: 4, log: ["a", "b", "tally 3", "tally 4"] })
        assert.deepStrictEqual(shown.jobs.map((j: { status: string }) => j.status), ["done"])
        assert.strictEqual(shown.events.at(-1)._tag, "RunCompleted")

        const metrics = yield* get(worker.port, "/metrics")
        assert.strictEqual(metrics.status, 200)
        assert.include(metrics.contentType ?? "", "text/plain")
        assert.match(metrics.body, /^fibergraph_worker_jobs_claimed_total [1-9]\d*$/m)
        assert.match(metrics.body, /^fibergraph_worker_active_runs 1$/m)
        assert.include(metrics.body, "# TYPE fibergraph_circuit_breaker_state gauge")
        assert.match(metrics.body, /^fibergraph_circuit_breaker_state\{key="count\/tally"\} 0$/m)
        assert.match(metrics.body, /^fibergraph_queue_jobs\{state="dead"\} 1$/m)
      }), 180_000)

    it.effect("approve continues a waiting run to its end; cancel ends one; answering a run that is not waiting exits 5", () =>
      Effect.gen(function*() {
        const fixture = yield* Fixture
        const env = { ...fixture.env, FIBERGRAPH_STORE: fixture.url }
        const { count, first, second } = fixture.runs
        const waiting = yield* fibergraph(["runs", "get", first!], env)
        expectExit(waiting, 0, "runs get of a waiting run")
        assert.match(waiting.stdout, /^waiting on\s+review \(node\): \{"draft":"A post about tides"\}$/m)
        const [approved, cancelled] = yield* Effect.all([
          fibergraph(["runs", "approve", first!, "--graphs", graphsModule, "--value", "{\"by\":\"test\"}", "--json"], env),
          fibergraph(["runs", "cancel", second!], env)
        ], { concurrency: 2 })
        expectExit(approved, 0, "runs approve")
        assert.deepStrictEqual(json(approved), { runId: first, response: "approve", status: "running" })
        expectExit(cancelled, 0, "runs cancel")
        assert.include(cancelled.stdout, `run ${second} cancelled`)
        yield* until(fixture.sql, first!, "completed")
        assert.strictEqual(yield* statusOf(fixture.sql, second!), "cancelled")

        const [done, rejectCompleted] = yield* Effect.all([
          fibergraph(["runs", "get", first!, "--json"], env),
          fibergraph(["runs", "reject", count!, "--graphs", graphsModule, "--reason", "late"], env)
        ], { concurrency: 2 })
        expectExit(done, 0, "runs get")
        assert.deepInclude(json<{ state: Record<string, unknown> }>(done).state, { decision: "approved", published: true })
        expectExit(rejectCompleted, 5, "rejecting a completed run")
        assert.include(rejectCompleted.stderr, "is completed; this needs a run that is waiting")
      }), 180_000)

    it.effect("runs list filters by graph, status and tenant, as JSON or a table", () =>
      Effect.gen(function*() {
        const fixture = yield* Fixture
        const env = { ...fixture.env, FIBERGRAPH_STORE: fixture.url }
        const [approvals, table] = yield* Effect.all([
          fibergraph(["runs", "list", "--graph", "approval", "--json"], env),
          fibergraph(["runs", "list", "--status", "completed", "--tenant", "acme"], env)
        ], { concurrency: 2 })
        expectExit(approvals, 0, "runs list --json")
        const listed = json<ReadonlyArray<{ runId: string; status: string }>>(approvals)
        assert.deepStrictEqual(
          listed.map((r) => [r.runId, r.status]).sort(),
          [[fixture.runs["first"], "completed"], [fixture.runs["second"], "cancelled"]].sort()
        )
        expectExit(table, 0, "runs list")
        const lines = table.stdout.trim().split("\n")
        assert.match(lines[0]!, /^RUN\s+GRAPH\s+STATUS\s+STEP\s+TENANT\s+TOKENS\s+CREATED$/)
        assert.strictEqual(lines.length, 2)
        assert.include(lines[1], fixture.runs["keyed"])
      }), 180_000)

    it.effect("SIGTERM: the worker reports draining, releases its in-flight job and exits 0 within the grace period", () =>
      Effect.gen(function*() {
        const fixture = yield* Fixture
        const worker = fixture.worker
        assert.isDefined(worker, "the worker test ran")
        const slow = fixture.runs["slow"]!
        assert.strictEqual(yield* jobStatusOf(fixture.sql, slow), "claimed")
        const started = Date.now()
        worker!.child.kill("SIGTERM")
        let sawDraining = false
        while (!sawDraining && Option.isNone(yield* Deferred.poll(worker!.exited))) {
          const ready = yield* Effect.either(get(worker!.port, "/readyz"))
          if (ready._tag === "Right" && ready.right.status === 503) {
            sawDraining = JSON.parse(ready.right.body).worker?.draining === true
          }
          yield* Effect.sleep("100 millis")
        }
        const exit = yield* Deferred.await(worker!.exited).pipe(
          Effect.timeout(Duration.sum(grace, "15 seconds")),
          Effect.option
        )
        const elapsed = Date.now() - started
        assert.isTrue(Option.isSome(exit), `the worker did not exit within ${elapsed} ms; stderr:\n${worker!.stderr()}`)
        assert.deepStrictEqual(Option.getOrThrow(exit), { code: 0, signal: null }, worker!.stderr())
        assert.isTrue(sawDraining, "/readyz answered 503 with draining: true during the drain")
        assert.include(worker!.stderr(), "released 1 job(s)")
        const jobs = yield* fixture.sql<{ readonly status: string; readonly claimed_by: string | null }>`
          SELECT status, claimed_by FROM fibergraph.jobs WHERE run_id = ${slow}`
        assert.deepStrictEqual(jobs.map((j) => [j.status, j.claimed_by]), [["queued", null]])
        assert.strictEqual(yield* statusOf(fixture.sql, slow), "pending", "the run is left for another worker")
      }), 180_000)
  })
})
