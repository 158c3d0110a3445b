/**
 * The crash test, with real processes: a child process runs a durable graph (a fan-out of four
 * beside a parallel branch, a join, a loop, side effects) on each engine and is SIGKILLed during
 * step commits, right after them and while nodes run; a new process resumes the run, sometimes
 * to be killed again. In the end every run has the state and the event sequence of an
 * uninterrupted run, a contiguous log, and its side-effect table shows that no node instance of a
 * committed step ran again, while instances of an uncommitted step ran again with the same key.
 */
import * as PgClient from "@effect/sql-pg/PgClient"
import * as SqlClient from "@effect/sql/SqlClient"
import { describe, expect, it } from "@effect/vitest"
import { Context, type Duration, Effect, Layer, Option, Random, Redacted } from "effect"
import * as NodeFs from "node:fs/promises"
import * as NodeOs from "node:os"
import * as NodePath from "node:path"
import type { RunEvent } from "../src/Events.js"
import * as PgliteClient from "../src/layers/sql/PgliteClient.js"
import * as RunStoreSql from "../src/layers/sql/RunStoreSql.js"
import { RunStore } from "../src/services/RunStore.js"
import { effectsOf, type EffectRow } from "./crash/CrashGraph.js"
import { type ChildOutcome, describeKill, type KillPoint, runChild } from "./crash/Process.js"
import type { Engine, Line, Mode } from "./crash/Protocol.js"
import * as Postgres from "./support/Postgres.js"

/** A kill point, or a random delay into the run chosen once the reference run's duration is known. */
type Planned = KillPoint | { readonly _tag: "RandomDelay" }

/** Where to kill the first process of a run, then each process that resumes it; the next one runs to the end. */
type Scenario = ReadonlyArray<Planned>

const during = (n: number): KillPoint => ({ _tag: "DuringCommit", n })
const after = (n: number): KillPoint => ({ _tag: "AfterCommit", n })
const random: Planned = { _tag: "RandomDelay" }

/** Embedded children pay seconds to open PGlite, so fewer kill points; each scenario still mixes the kinds. */
const embeddedScenarios: ReadonlyArray<Scenario> = [
  [during(1)],
  [after(3), during(2)],
  [random, random]
]

const serverScenarios: ReadonlyArray<Scenario> = [
  [during(1)],
  [during(2)],
  [during(4)],
  [during(7)],
  [after(3)],
  [after(5), during(1)],
  [random, random],
  [random]
]

/** One process of a run. */
interface Proc {
  readonly mode: Mode
  readonly kill: KillPoint | undefined
  readonly outcome: ChildOutcome
  /** The step the run was at when this process opened the store: the steps before it were committed. */
  readonly resumeStep: number
}

interface ScenarioRun {
  readonly runId: string
  readonly procs: ReadonlyArray<Proc>
}

interface Fixture {
  readonly engine: Engine
  /** The data directory (embedded) or the database URL (server) the children open. */
  readonly location: string
  /** The same database opened in this process, to read the runs back once every child has ended. */
  readonly open: Layer.Layer<SqlClient.SqlClient, unknown>
  /** Children running at once: an embedded data directory admits one process at a time. */
  readonly concurrency: number
  readonly childTimeout: Duration.DurationInput
}

const readyOf = (lines: ReadonlyArray<Line>) => {
  const ready = lines.find((l) => l._tag === "ready")
  return ready?._tag === "ready" ? ready : undefined
}

const resultOf = (lines: ReadonlyArray<Line>) => {
  const result = lines.find((l) => l._tag === "result")
  return result?._tag === "result" ? result : undefined
}

const explain = (proc: Proc) =>
  `${proc.mode} pid ${proc.outcome.pid}: exit ${proc.outcome.code ?? proc.outcome.signal}, ` +
  `last line ${JSON.stringify(proc.outcome.last)}\n${proc.outcome.stderr}${proc.outcome.noise.join("\n")}` +
  proc.outcome.lines.filter((l) => l._tag === "error").map((l) => (l as { message: string }).message).join("\n")

/** Runs one scenario: a starting process, then resuming ones, each killed at its point, until one runs to the end. */
const runScenario = (fixture: Fixture, runId: string, kills: ReadonlyArray<KillPoint>) =>
  Effect.gen(function*() {
    const procs: Array<Proc> = []
    for (let i = 0; i <= kills.length; i++) {
      const mode: Mode = i === 0 ? "start" : "resume"
      const kill = kills[i]
      const outcome = yield* runChild({
        engine: fixture.engine,
        location: fixture.location,
        runId,
        mode,
        kill,
        timeout: fixture.childTimeout
      })
      const proc: Proc = { mode, kill, outcome, resumeStep: readyOf(outcome.lines)?.stored?.step ?? 0 }
      procs.push(proc)
      if (!outcome.killed) break
    }
    return { runId, procs } satisfies ScenarioRun
  })

const withoutTime = (events: ReadonlyArray<RunEvent>) => events.map(({ at: _at, runId: _runId, ...rest }) => rest)

const keyOf = (runId: string, row: EffectRow) => row.key.slice(runId.length)

/** What a kill interrupted, from the last line the process printed and where the next process found the run. */
const killKind = (proc: Proc, next: Proc | undefined) => {
  const last = proc.outcome.last
  if (last?._tag === "commit") {
    return next !== undefined && next.resumeStep > last.step ? "during a commit (it landed)" : "during a commit (it did not land)"
  }
  if (proc.kill?._tag === "AfterCommit") return "right after a commit, between steps"
  if (last?._tag === "result") return "after the run ended, before the process exited"
  return "while nodes ran"
}

const readBack = (runId: string) =>
  Effect.gen(function*() {
    const store = yield* RunStore
    const run = yield* store.get(runId)
    const events = yield* store.events(runId, 0)
    const checkpoint = yield* store.latestCheckpoint(runId)
    const effects = yield* effectsOf(runId)
    return { run, events, checkpoint: Option.getOrThrow(checkpoint), effects }
  })

const crashTest = (fixture: Fixture, scenarios: ReadonlyArray<Scenario>) =>
  Effect.gen(function*() {
    const tag = `[crash ${fixture.engine}]`
    const reference = yield* runScenario(fixture, `crash-${fixture.engine}-reference`, [])
    const refProc = reference.procs[0]!
    const refResult = resultOf(refProc.outcome.lines)
    expect(refProc.outcome.code, explain(refProc)).toBe(0)
    expect(refResult?.status).toBe("completed")
    const refMillis = Math.round(refProc.outcome.runMillis ?? 500)
    const commits = refProc.outcome.lines.filter((l) => l._tag === "commit").length

    const plans = yield* Effect.forEach(scenarios, (scenario) =>
      Effect.forEach(scenario, (planned, i) =>
        planned._tag === "RandomDelay"
          ? Effect.map(
            Random.nextIntBetween(5, Math.max(10, Math.floor(refMillis * (i === 0 ? 0.7 : 0.35)))),
            (millis): KillPoint => ({ _tag: "AfterDelay", millis })
          )
          : Effect.succeed(planned)))
    const runs = yield* Effect.forEach(
      plans,
      (kills, i) => runScenario(fixture, `crash-${fixture.engine}-${i + 1}`, kills),
      { concurrency: fixture.concurrency }
    )

    const stored = yield* Effect.gen(function*() {
      const ref = yield* readBack(reference.runId)
      const others = yield* Effect.forEach(runs, (run) => readBack(run.runId))
      return { ref, others }
    }).pipe(Effect.provide(RunStoreSql.layer().pipe(Layer.provideMerge(fixture.open))))

    const ref = stored.ref
    expect(ref.run.status).toBe("completed")
    expect(ref.events.map((e) => e.seq)).toEqual(ref.events.map((_, i) => i + 1))
    const refKeys = ref.effects.map((row) => keyOf(reference.runId, row))
    expect(new Set(refKeys).size, "the reference run executes each node instance once").toBe(refKeys.length)
    expect(refKeys.length).toBe(11)

    let kills = 0
    let processes = 1
    const kinds = new Map<string, number>()
    let reexecuted = 0
    let extraExecutions = 0
    const lines: Array<string> = []

    runs.forEach((run, i) => {
      const { checkpoint, effects, events, run: record } = stored.others[i]!
      const final = run.procs.at(-1)!
      const plan = run.procs.map((p) => p.kill === undefined ? "to the end" : describeKill(p.kill)).join(" → ")
      processes += run.procs.length

      expect(final.outcome.killed, `${run.runId}: the last process runs to the end`).toBe(false)
      expect(final.outcome.code, `${run.runId}: ${explain(final)}`).toBe(0)
      const result = resultOf(final.outcome.lines)
      expect(result?.status, run.runId).toBe("completed")
      expect(result?.state, run.runId).toEqual(refResult?.state)

      run.procs.forEach((proc, j) => {
        const next = run.procs[j + 1]
        expect(proc.outcome.lines.some((l) => l._tag === "error"), `${run.runId}: ${explain(proc)}`).toBe(false)
        if (!proc.outcome.killed) return
        kills++
        expect(proc.outcome.signal, `${run.runId}: process ${j} died of the SIGKILL`).toBe("SIGKILL")
        if (proc.kill?._tag !== "AfterDelay") {
          expect(proc.outcome.last?._tag, `${run.runId}: killed at its commit marker`).toBe(
            proc.kill?._tag === "DuringCommit" ? "commit" : "committed"
          )
        }
        const kind = killKind(proc, next)
        kinds.set(kind, (kinds.get(kind) ?? 0) + 1)
        const acknowledged = proc.outcome.lines.flatMap((l) => l._tag === "committed" ? [l.step + 1] : [])
        const sent = proc.outcome.lines.flatMap((l) => l._tag === "commit" ? [l.step + 1] : [])
        const lower = Math.max(proc.resumeStep, ...acknowledged)
        const upper = Math.max(proc.resumeStep, ...sent)
        expect(next, `${run.runId}: a killed process is followed by a resuming one`).toBeDefined()
        expect(
          next!.resumeStep,
          `${run.runId}: after a kill the run is at a step between its last acknowledged and its last sent commit`
        ).toBeGreaterThanOrEqual(lower)
        expect(next!.resumeStep).toBeLessThanOrEqual(upper)
      })

      expect(record.status).toBe("completed")
      expect(events.map((e) => e.seq), `${run.runId}: the event log is contiguous from 1`).toEqual(
        events.map((_, k) => k + 1)
      )
      expect(events.every((e) => e.runId === run.runId)).toBe(true)
      expect(withoutTime(events), `${run.runId}: the events equal the reference's`).toEqual(withoutTime(ref.events))
      expect(record.lastSeq).toBe(ref.run.lastSeq)
      expect(checkpoint.state, `${run.runId}: the final checkpoint's state`).toEqual(ref.checkpoint.state)
      expect(checkpoint.step).toBe(ref.checkpoint.step)

      const resumeStepOf = new Map(run.procs.map((p, j) => [p.outcome.pid, { step: p.resumeStep, index: j }]))
      const byKey = new Map<string, Array<EffectRow>>()
      for (const row of effects) {
        const key = keyOf(run.runId, row)
        expect(refKeys, `${run.runId}: a re-execution reuses a key of the reference run`).toContain(key)
        const proc = resumeStepOf.get(row.pid)
        expect(proc, `${run.runId}: side effect ${row.key} comes from one of this run's processes`).toBeDefined()
        expect(
          row.step,
          `${run.runId}: ${row.key} ran in pid ${row.pid}, which took the run up at step ${proc!.step} (a committed step ran again)`
        ).toBeGreaterThanOrEqual(proc!.step)
        byKey.set(key, [...(byKey.get(key) ?? []), row])
      }
      expect([...byKey.keys()].sort(), `${run.runId}: every node instance ran`).toEqual([...refKeys].sort())
      for (const [key, rows] of byKey) {
        expect(new Set(rows.map((r) => r.pid)).size, `${run.runId}: ${key} ran twice in one process`).toBe(rows.length)
        if (rows.length === 1) continue
        reexecuted++
        extraExecutions += rows.length - 1
        for (const row of rows.slice(0, -1)) {
          const { index } = resumeStepOf.get(row.pid)!
          const successor = run.procs[index + 1]
          expect(run.procs[index]!.outcome.killed, `${run.runId}: ${key} ran again after a process that was not killed`).toBe(true)
          expect(
            successor!.resumeStep,
            `${run.runId}: ${key} ran again although its step ${row.step} was committed when pid ${row.pid} died`
          ).toBeLessThanOrEqual(row.step)
        }
      }
      const dupes = [...byKey].filter(([, rows]) => rows.length > 1).map(([key]) => key.slice(1))
      lines.push(
        `${tag}   ${run.runId}: ${plan}; resumed at steps ${run.procs.slice(1).map((p) => p.resumeStep).join(", ") || "-"}; ` +
          `re-executed: ${dupes.join(", ") || "none"}`
      )
    })

    const opens = runs.flatMap((run) => run.procs.flatMap((p) => p.outcome.openMillis ?? []))
    const meanOpen = opens.reduce((a, b) => a + b, 0) / Math.max(1, opens.length)
    console.log(
      `${tag} reference: ${commits} step commits, ${ref.events.length} events, ${refKeys.length} side effects, ` +
        `run took ${refMillis} ms; a child takes ${(meanOpen / 1000).toFixed(1)} s on average to open the store\n` +
        lines.join("\n") + "\n" +
        `${tag} ${runs.length} runs, ${processes} processes, ${kills} SIGKILLs (` +
        [...kinds].map(([kind, n]) => `${n} ${kind}`).join(", ") +
        `); ${reexecuted} node instances re-executed with their key (${extraExecutions} extra executions), ` +
        `none of a committed step`
    )
    expect(kills).toBeGreaterThanOrEqual(scenarios.length)
  })

const tempDir = Effect.acquireRelease(
  Effect.promise(() => NodeFs.mkdtemp(NodePath.join(NodeOs.tmpdir(), "fibergraph-crash-"))),
  (dir) => Effect.promise(() => NodeFs.rm(dir, { recursive: true, force: true }))
)

describe.concurrent("crash with real processes", () => {
  it.live("embedded: SIGKILLed and resumed runs end as an uninterrupted run", () =>
    Effect.gen(function*() {
      const dir = yield* tempDir
      const dataDir = NodePath.join(dir, "store")
      yield* crashTest({
        engine: "embedded",
        location: dataDir,
        open: PgliteClient.layer({ dataDir }),
        concurrency: 1,
        childTimeout: "90 seconds"
      }, embeddedScenarios)
    }).pipe(Effect.scoped), 240_000)

  it.live.runIf(Postgres.available)("server: SIGKILLed and resumed runs end as an uninterrupted run", () =>
    Effect.gen(function*() {
      const database = yield* Layer.build(Postgres.freshDatabase("fg_crash"))
      const url = Context.get(database, PgClient.PgClient).config.url
      if (url === undefined) return yield* Effect.dieMessage("the fresh database has no URL")
      yield* crashTest({
        engine: "server",
        location: Redacted.value(url),
        open: Layer.succeedContext(database),
        concurrency: 3,
        childTimeout: "60 seconds"
      }, serverScenarios)
    }).pipe(Effect.scoped), 240_000)
})
