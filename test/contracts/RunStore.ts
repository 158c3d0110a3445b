/**
 * The contract every `RunStore` backend passes (memory, embedded PGlite, server Postgres).
 * It speaks only through the port, so it holds for any implementation; every test uses fresh
 * run ids, tenants and graph ids, so it can run against a database other suites share.
 */
import { assert, layer } from "@effect/vitest"
import { type Context, type Duration, Effect, Either, FastCheck as fc, type Layer, Option } from "effect"
import { randomUUID } from "node:crypto"
import {
  EventLogCorruptionError,
  EventSequenceConflictError,
  RunNotFoundError,
  StaleClaimError
} from "../../src/Errors.js"
import type { RunEvent } from "../../src/Events.js"
import {
  type Checkpoint,
  type RunConfig,
  type RunRecord,
  type RunStatus,
  RunStore,
  type StepCommit,
  type Usage
} from "../../src/services/RunStore.js"

/** Options of the contract suite. */
export interface RunStoreContractOptions {
  /** The `retainCheckpoints` the layer under test was configured with (default 3). */
  readonly retainCheckpoints?: number
  /** How long building (and closing) the layer may take, e.g. for migrations (default 60 seconds). */
  readonly timeout?: Duration.DurationInput
  /** How many random histories the property test tries (default 50). */
  readonly propertyRuns?: number
  /** How long the property test may take in all (default 120 seconds). */
  readonly propertyTimeoutMillis?: number
}

type Store = Context.Tag.Service<typeof RunStore>

/** An instant in epoch ms that all fixtures count from. */
const T0 = 1_767_225_600_000

/**
 * A fresh id. It comes from the OS rather than `Random` on purpose: it must not collide with
 * ids written by other processes (or earlier runs) into a shared database.
 */
export const uniqueId = (label: string): string => `${label}-${randomUUID()}`

/** A run's limits as a real run would carry them. */
export const makeConfig = (): RunConfig => ({
  maxSteps: 25,
  deadline: T0 + 3_600_000,
  budget: { tokens: 200_000, usd: 5 },
  nodeBudgets: { agent: { tokens: 50_000, usd: null } },
  interruptBefore: ["deploy"],
  interruptAfter: [],
  concurrency: 4
})

/** What a run has spent by a given step. */
export const makeUsage = (step: number): Usage => ({
  total: { tokens: 160 * step, usd: 0.0025 * step },
  byNode: step === 0 ? {} : { agent: { tokens: 120 * step, usd: 0.002 * step }, tools: { tokens: 40 * step, usd: 0.0005 * step } }
})

/** A freshly accepted run row; `runId` is required so no two tests share one by accident. */
export const makeRun = (overrides: Partial<RunRecord> & { readonly runId: string }): RunRecord => ({
  tenant: "contract-tenant",
  graphId: "contract-graph",
  graphVersion: "1.0.0",
  graphHash: "sha256:4f2a9c0d1e7b3a5c6d8e9f0a1b2c3d4e5f6a7b8c9d0e1f2a3b4c5d6e7f8a9b0c",
  status: "pending",
  step: 0,
  claimEpoch: 0,
  lastSeq: 1,
  config: makeConfig(),
  usage: makeUsage(0),
  waitUntil: null,
  parentRunId: null,
  forkedFrom: null,
  error: null,
  createdAt: T0,
  updatedAt: T0,
  ...overrides
})

/** The event that opens a run's log. */
export const runStarted = (run: RunRecord): RunEvent => ({
  _tag: "RunStarted",
  runId: run.runId,
  seq: 1,
  step: 0,
  at: run.createdAt,
  graphId: run.graphId,
  graphVersion: run.graphVersion,
  graphHash: run.graphHash
})

const makeEvent = (runId: string, seq: number, step: number, node: string): RunEvent => {
  const base = { runId, seq, step, at: T0 + seq * 10 }
  switch (seq % 7) {
    case 0:
      return { _tag: "StepStarted", ...base, nodes: [node, "tools"] }
    case 1:
      return { _tag: "NodeStarted", ...base, node, index: 0 }
    case 2:
      return {
        _tag: "ModelCalled",
        ...base,
        node,
        index: 0,
        model: "claude-test",
        inputTokens: 120 + seq,
        outputTokens: 40,
        usd: 0.0012
      }
    case 3:
      return {
        _tag: "ToolCalled",
        ...base,
        node,
        index: 0,
        tool: "weather",
        input: { query: `weather in Zürich #${seq}`, options: { units: "metric", days: [1, 2] } }
      }
    case 4:
      return {
        _tag: "ToolReturned",
        ...base,
        node,
        index: 0,
        tool: "weather",
        output: { temperatures: [12.5, -3, 0], summary: "☀️ then 🌧️", source: null },
        error: null
      }
    case 5:
      return { _tag: "NodeCompleted", ...base, node, index: 0, attempts: 1, keys: ["messages", "weather"] }
    default:
      return { _tag: "StepCommitted", ...base, next: [node] }
  }
}

/** `n` realistic events of one step with sequences `fromSeq…`; `node` tells writers apart. */
export const makeEvents = (runId: string, fromSeq: number, n: number, step: number, node = "agent"): Array<RunEvent> =>
  Array.from({ length: n }, (_, i) => makeEvent(runId, fromSeq + i, step, node))

/** A plain checkpoint at `seq`. */
export const makeCheckpoint = (
  runId: string,
  seq: number,
  step: number,
  overrides: Partial<Checkpoint> = {}
): Checkpoint => ({
  runId,
  seq,
  step,
  state: { messages: [{ role: "user", content: `step ${step}` }], counter: step, done: false },
  frontier: [{ node: "agent", index: 0, input: null }],
  pending: [],
  interrupts: [],
  barriers: {},
  createdAt: T0 + seq * 10,
  ...overrides
})

/** A checkpoint that uses every field, with values a careless encoding would mangle. */
export const makeRichCheckpoint = (runId: string, seq: number, step: number): Checkpoint => ({
  runId,
  seq,
  step,
  state: {
    messages: [
      { role: "user", content: "Résumé in 日本語, emoji 🚀👩‍👩‍👧, RTL עברית, quotes ' \" ` and \\ backslash, newline\nend" },
      { role: "assistant", content: "", toolCalls: [{ id: "call_1", args: { q: "x", nested: { deep: [1, [2, [3, null]]] } } }] }
    ],
    scores: [0, -1, 1.5, 1e-7, 123456789.125, Number.MAX_SAFE_INTEGER],
    flags: { on: true, off: false },
    nothing: null,
    empty: { list: [], record: {} },
    "key with spaces & symbols $.[]'": "value",
    "ключ": "значение"
  },
  frontier: [
    { node: "research", index: 0, input: { topic: "durable execution", depth: 2 } },
    { node: "research", index: 1, input: { topic: "fencing tokens ✓", depth: 3 } },
    { node: "summarize", index: 0, input: null },
    { node: "review", index: 0, input: ["a", 1, null, { x: [] }] }
  ],
  pending: [
    { node: "research", index: 2, update: { findings: ["one", "two"], confidence: 0.75 } },
    { node: "critic", index: 0, update: null }
  ],
  interrupts: [
    {
      kind: "node",
      node: "approve",
      index: 0,
      payload: { question: "Ship it?", draft: { title: "Ünïcödé" } },
      resumes: [
        { _tag: "approve", value: { note: "looks good" } },
        { _tag: "reject", reason: "typo in §2" },
        { _tag: "edit", update: { title: "Fixed", tags: ["x"] } },
        { _tag: "timeout" }
      ],
      answered: false
    },
    { kind: "before", node: "deploy", index: 0, payload: null, resumes: [], answered: false },
    { kind: "after", node: "review", index: 1, payload: "plain string", resumes: [{ _tag: "approve" }], answered: true }
  ],
  barriers: { join: ["research", "critic"], "join-2": [] },
  createdAt: T0 + 42
})

/** A step commit from `run`'s position by its current owner; override what a test varies. */
export const makeCommit = (
  run: RunRecord,
  fields: Partial<StepCommit> & { readonly events: ReadonlyArray<RunEvent> }
): StepCommit => ({
  runId: run.runId,
  epoch: run.claimEpoch,
  expectedStep: run.step,
  step: run.step + 1,
  status: "running",
  checkpoint: undefined,
  usage: makeUsage(run.step + 1),
  waitUntil: null,
  error: null,
  at: T0 + 1_000 * (run.step + 1),
  ...fields
})

interface Started {
  readonly run: RunRecord
  readonly events: ReadonlyArray<RunEvent>
  readonly checkpoint: Checkpoint
}

/** Creates a run (one `RunStarted` event, a checkpoint at seq 1). */
const createRun = (overrides: Partial<RunRecord> = {}) =>
  Effect.gen(function*() {
    const store = yield* RunStore
    const run = makeRun({ ...overrides, runId: overrides.runId ?? uniqueId("run"), lastSeq: 1 })
    const events = [runStarted(run)]
    const checkpoint = makeCheckpoint(run.runId, 1, run.step)
    const result = yield* store.create(run, events, checkpoint)
    assert.isTrue(result.created)
    return { run: result.run, events, checkpoint } satisfies Started
  })

/** Creates a run and claims it (epoch 1). */
const startRun = (overrides: Partial<RunRecord> = {}) =>
  Effect.gen(function*() {
    const store = yield* RunStore
    const started = yield* createRun(overrides)
    const run = yield* store.acquire(started.run.runId)
    return { ...started, run } satisfies Started
  })

/** Commits one valid step of `n` events from `run` (with a checkpoint unless told otherwise). */
const advance = (
  run: RunRecord,
  options: { readonly n?: number; readonly checkpoint?: boolean; readonly status?: RunStatus } = {}
) =>
  Effect.gen(function*() {
    const store = yield* RunStore
    const n = options.n ?? 3
    const step = run.step + 1
    const events = makeEvents(run.runId, run.lastSeq + 1, n, step)
    const checkpoint = options.checkpoint === false ? undefined : makeCheckpoint(run.runId, run.lastSeq + n, step)
    const next = yield* store.commit(makeCommit(run, { events, checkpoint, status: options.status ?? "running" }))
    return { run: next, events, checkpoint }
  })

/** Everything the store holds for a run (before any compaction). */
const snapshot = (store: Store, runId: string) =>
  Effect.all({
    run: store.get(runId),
    events: store.events(runId, 0),
    checkpoints: store.checkpoints(runId),
    latest: Effect.map(store.latestCheckpoint(runId), Option.getOrUndefined)
  })

/** The error `effect` fails with; an unexpected success fails the test, naming what was returned. */
const failure = <A, E, R>(effect: Effect.Effect<A, E, R>): Effect.Effect<E, never, R> =>
  Effect.matchEffect(effect, {
    onFailure: Effect.succeed,
    onSuccess: (value) => Effect.sync(() => assert.fail(`expected a failure, but it succeeded with ${preview(value)}`))
  })

const preview = (value: unknown): string => {
  try {
    return (JSON.stringify(value) ?? String(value)).slice(0, 400)
  } catch {
    return String(value)
  }
}

const seqs = (events: ReadonlyArray<RunEvent>) => events.map((e) => e.seq)
const range = (from: number, to: number) => Array.from({ length: Math.max(0, to - from + 1) }, (_, i) => from + i)
const renamed = (events: ReadonlyArray<RunEvent>, runId: string) => events.map((e) => ({ ...e, runId }))
const ids = (runs: ReadonlyArray<RunRecord>) => runs.map((r) => r.runId)

type PropertyOp =
  | { readonly kind: "valid"; readonly events: number; readonly checkpoint: boolean }
  | { readonly kind: "staleEpoch"; readonly events: number }
  | { readonly kind: "wrongStep"; readonly delta: number; readonly events: number }
  | { readonly kind: "duplicateSeq"; readonly events: number }
  | { readonly kind: "gapSeq"; readonly at: number; readonly events: number }
  | { readonly kind: "reacquire" }

const propertyOp: fc.Arbitrary<PropertyOp> = fc.oneof(
  fc.record({ kind: fc.constant("valid" as const), events: fc.integer({ min: 1, max: 4 }), checkpoint: fc.boolean() }),
  fc.record({ kind: fc.constant("staleEpoch" as const), events: fc.integer({ min: 1, max: 3 }) }),
  fc.record({
    kind: fc.constant("wrongStep" as const),
    delta: fc.constantFrom(-1, 1, 2),
    events: fc.integer({ min: 1, max: 3 })
  }),
  fc.record({ kind: fc.constant("duplicateSeq" as const), events: fc.integer({ min: 1, max: 3 }) }),
  fc.record({
    kind: fc.constant("gapSeq" as const),
    at: fc.integer({ min: 0, max: 2 }),
    events: fc.integer({ min: 3, max: 4 })
  }),
  fc.record({ kind: fc.constant("reacquire" as const) })
)

/**
 * Registers the `RunStore` contract as a `describe` block against `runStore`.
 *
 * The layer is built once for the block (`layer` from `@effect/vitest`), as a SQL backend is in
 * production: one pool over one migrated database, with runs of many tests side by side. Tests
 * therefore use fresh ids and scope every `list` to a fresh tenant. Every timestamp is passed
 * explicitly, so the block runs on the live clock (a database pool must see real time).
 */
export const runStoreContract = (
  name: string,
  runStore: Layer.Layer<RunStore, unknown>,
  options: RunStoreContractOptions = {}
): void => {
  const retain = options.retainCheckpoints ?? 3
  const propertyRuns = options.propertyRuns ?? 50

  layer(runStore, { excludeTestServices: true, timeout: options.timeout ?? "60 seconds" })(name, (it) => {
    it.effect("create stores the run, its first events and its checkpoint", () =>
      Effect.gen(function*() {
        const store = yield* RunStore
        const run = makeRun({ runId: uniqueId("run"), status: "running", usage: makeUsage(2) })
        const events = [runStarted(run)]
        const checkpoint = makeRichCheckpoint(run.runId, 1, 0)
        const result = yield* store.create(run, events, checkpoint)
        assert.isTrue(result.created)
        assert.deepStrictEqual(result.run, run)
        assert.deepStrictEqual(yield* snapshot(store, run.runId), {
          run,
          events,
          checkpoints: [checkpoint],
          latest: checkpoint
        })
      }))

    it.effect("create is idempotent: a second create returns the stored run and overwrites nothing", () =>
      Effect.gen(function*() {
        const store = yield* RunStore
        const first = yield* createRun({ status: "running" })
        const runId = first.run.runId
        const imposter = makeRun({ runId, tenant: "other", graphId: "other-graph", status: "completed", lastSeq: 3 })
        const imposterEvents = [runStarted(imposter), ...makeEvents(runId, 2, 2, 0, "imposter")]
        const again = yield* store.create(imposter, imposterEvents, makeCheckpoint(runId, 3, 0, { state: { x: 1 } }))
        assert.isFalse(again.created)
        assert.deepStrictEqual(again.run, first.run)
        assert.deepStrictEqual(yield* snapshot(store, runId), {
          run: first.run,
          events: first.events,
          checkpoints: [first.checkpoint],
          latest: first.checkpoint
        })

        const acquired = yield* store.acquire(runId)
        const advanced = yield* advance(acquired)
        const before = yield* snapshot(store, runId)
        const third = yield* store.create(first.run, first.events, first.checkpoint)
        assert.isFalse(third.created)
        assert.deepStrictEqual(third.run, advanced.run, "create returns the run as it is stored now")
        assert.deepStrictEqual(yield* snapshot(store, runId), before)
      }))

    it.effect("every operation on an unknown run fails with RunNotFoundError", () =>
      Effect.gen(function*() {
        const store = yield* RunStore
        const runId = uniqueId("missing")
        const ghost = makeRun({ runId, claimEpoch: 1 })
        const failures = [
          yield* failure(store.get(runId)),
          yield* failure(store.acquire(runId)),
          yield* failure(store.commit(makeCommit(ghost, { events: makeEvents(runId, 2, 1, 1) }))),
          yield* failure(store.events(runId, 0)),
          yield* failure(store.latestCheckpoint(runId)),
          yield* failure(store.checkpoints(runId)),
          yield* failure(store.fork(runId, { newRunId: uniqueId("fork"), at: T0 })),
          yield* failure(store.compact(runId, 10))
        ]
        for (const error of failures) {
          assert.instanceOf(error, RunNotFoundError)
          assert.strictEqual(error.runId, runId)
        }
        assert.instanceOf(yield* failure(store.get(runId)), RunNotFoundError, "nothing was created on the way")
      }))

    it.effect("acquire bumps the claim epoch by exactly one each time and keeps the run's position", () =>
      Effect.gen(function*() {
        const store = yield* RunStore
        const { run } = yield* createRun()
        assert.strictEqual(run.claimEpoch, 0)
        for (const expected of [1, 2, 3]) {
          const acquired = yield* store.acquire(run.runId)
          assert.strictEqual(acquired.claimEpoch, expected)
          assert.strictEqual(acquired.step, run.step)
          assert.strictEqual(acquired.lastSeq, run.lastSeq)
          assert.strictEqual((yield* store.get(run.runId)).claimEpoch, expected)
        }
      }))

    it.effect("concurrent acquires each get their own epoch", () =>
      Effect.gen(function*() {
        const store = yield* RunStore
        const { run } = yield* createRun()
        const n = 16
        const acquired = yield* Effect.all(Array.from({ length: n }, () => store.acquire(run.runId)), {
          concurrency: "unbounded"
        })
        assert.deepStrictEqual(acquired.map((r) => r.claimEpoch).sort((a, b) => a - b), range(1, n))
        assert.strictEqual((yield* store.get(run.runId)).claimEpoch, n)
      }))

    it.effect("a commit by the current owner at the expected step advances the row and appends events and checkpoint", () =>
      Effect.gen(function*() {
        const store = yield* RunStore
        const started = yield* startRun()
        const run = started.run
        const events = makeEvents(run.runId, 2, 4, 1)
        const checkpoint = makeCheckpoint(run.runId, 5, 1)
        const commit = makeCommit(run, {
          events,
          checkpoint,
          status: "waiting",
          usage: makeUsage(1),
          waitUntil: T0 + 86_400_000,
          at: T0 + 5_000
        })
        const committed = yield* store.commit(commit)
        const expected: RunRecord = {
          ...run,
          status: "waiting",
          step: 1,
          lastSeq: 5,
          usage: makeUsage(1),
          waitUntil: T0 + 86_400_000,
          error: null,
          updatedAt: T0 + 5_000
        }
        assert.deepStrictEqual(committed, expected)
        assert.deepStrictEqual(yield* snapshot(store, run.runId), {
          run: expected,
          events: [...started.events, ...events],
          checkpoints: [started.checkpoint, checkpoint],
          latest: checkpoint
        })

        const failedEvents = makeEvents(run.runId, 6, 2, 2)
        const failed = yield* store.commit(makeCommit(committed, {
          events: failedEvents,
          checkpoint: undefined,
          status: "failed",
          usage: makeUsage(2),
          waitUntil: null,
          error: { tag: "NodeFailedError", message: "node \"agent\" failed after 3 attempt(s): 'quota' exceeded" },
          at: T0 + 9_000
        }))
        const expectedFailed: RunRecord = {
          ...expected,
          status: "failed",
          step: 2,
          lastSeq: 7,
          usage: makeUsage(2),
          waitUntil: null,
          error: { tag: "NodeFailedError", message: "node \"agent\" failed after 3 attempt(s): 'quota' exceeded" },
          updatedAt: T0 + 9_000
        }
        assert.deepStrictEqual(failed, expectedFailed)
        assert.deepStrictEqual(yield* snapshot(store, run.runId), {
          run: expectedFailed,
          events: [...started.events, ...events, ...failedEvents],
          checkpoints: [started.checkpoint, checkpoint],
          latest: checkpoint
        }, "a commit without a checkpoint keeps the checkpoints")
      }))

    it.effect("a commit with a stale (or future) epoch fails with StaleClaimError and writes nothing", () =>
      Effect.gen(function*() {
        const store = yield* RunStore
        const started = yield* startRun()
        const current = yield* store.acquire(started.run.runId)
        assert.strictEqual(current.claimEpoch, 2)
        const before = yield* snapshot(store, current.runId)
        for (const epoch of [1, 0, 3]) {
          const error = yield* failure(store.commit(makeCommit(current, {
            epoch,
            events: makeEvents(current.runId, 2, 3, 1),
            checkpoint: makeCheckpoint(current.runId, 4, 1),
            status: "completed"
          })))
          assert.instanceOf(error, StaleClaimError)
          assert.strictEqual(error.runId, current.runId)
          assert.strictEqual(error.epoch, epoch)
          assert.strictEqual(error.currentEpoch, 2)
          assert.strictEqual(error.expectedStep, 0)
          assert.strictEqual(error.currentStep, 0)
          assert.deepStrictEqual(yield* snapshot(store, current.runId), before)
        }
      }))

    it.effect("a commit at the wrong expected step fails with StaleClaimError and writes nothing", () =>
      Effect.gen(function*() {
        const store = yield* RunStore
        const started = yield* startRun()
        const { run } = yield* advance(started.run)
        assert.strictEqual(run.step, 1)
        const before = yield* snapshot(store, run.runId)
        for (const expectedStep of [0, 2, 7]) {
          const error = yield* failure(store.commit(makeCommit(run, {
            expectedStep,
            step: expectedStep + 1,
            events: makeEvents(run.runId, run.lastSeq + 1, 2, expectedStep + 1),
            checkpoint: makeCheckpoint(run.runId, run.lastSeq + 2, expectedStep + 1)
          })))
          assert.instanceOf(error, StaleClaimError)
          assert.strictEqual(error.epoch, 1)
          assert.strictEqual(error.currentEpoch, 1)
          assert.strictEqual(error.expectedStep, expectedStep)
          assert.strictEqual(error.currentStep, 1)
          assert.deepStrictEqual(yield* snapshot(store, run.runId), before)
        }
      }))

    it.effect("events that do not continue the log fail with EventSequenceConflictError and write nothing", () =>
      Effect.gen(function*() {
        const store = yield* RunStore
        const started = yield* startRun()
        const { run } = yield* advance(started.run, { n: 3 })
        assert.strictEqual(run.lastSeq, 4)
        const before = yield* snapshot(store, run.runId)
        const event = (seq: number, node = "conflict") => makeEvents(run.runId, seq, 1, 2, node)[0]!
        const batches: ReadonlyArray<[string, ReadonlyArray<RunEvent>]> = [
          ["duplicates the last stored event", [event(4)]],
          ["duplicates an older stored event", [event(2), event(3), event(4), event(5)]],
          ["leaves a gap", [event(6)]],
          ["second event duplicates the first", [event(5), event(5, "again")]],
          ["second event leaves a gap", [event(5), event(7)]],
          ["third event goes backwards", [event(5), event(6), event(4)]]
        ]
        for (const [label, events] of batches) {
          const error = yield* failure(store.commit(makeCommit(run, {
            events,
            checkpoint: makeCheckpoint(run.runId, 6, 2),
            status: "completed"
          })))
          assert.instanceOf(error, EventSequenceConflictError, label)
          assert.strictEqual(error.runId, run.runId, label)
          assert.deepStrictEqual(yield* snapshot(store, run.runId), before, `${label}: nothing is written`)
        }
        const next = yield* advance(run, { n: 2 })
        assert.deepStrictEqual(seqs(yield* store.events(run.runId, 0)), range(1, 6), "a rejected commit leaves no trace")
        assert.strictEqual(next.run.lastSeq, 6)
      }))

    it.effect("after a re-acquire the previous owner can no longer write (fencing)", () =>
      Effect.gen(function*() {
        const store = yield* RunStore
        const started = yield* startRun()
        const ownerA = yield* advance(started.run)
        assert.strictEqual(ownerA.run.claimEpoch, 1)
        const ownerB = yield* store.acquire(ownerA.run.runId)
        assert.strictEqual(ownerB.claimEpoch, 2)
        const before = yield* snapshot(store, ownerB.runId)

        const lateEvents = makeEvents(ownerB.runId, ownerA.run.lastSeq + 1, 3, 2, "paused-owner")
        const late = makeCommit(ownerA.run, {
          events: lateEvents,
          checkpoint: makeCheckpoint(ownerB.runId, ownerA.run.lastSeq + 3, 2),
          status: "completed"
        })
        const error = yield* failure(store.commit(late))
        assert.instanceOf(error, StaleClaimError)
        assert.strictEqual(error.epoch, 1)
        assert.strictEqual(error.currentEpoch, 2)
        assert.deepStrictEqual(yield* snapshot(store, ownerB.runId), before)

        const ownerBEvents = makeEvents(ownerB.runId, ownerB.lastSeq + 1, 3, 2, "new-owner")
        const committed = yield* store.commit(makeCommit(ownerB, { events: ownerBEvents }))
        assert.strictEqual(committed.claimEpoch, 2)
        assert.instanceOf(yield* failure(store.commit(late)), StaleClaimError)
        const lateAgain = makeCommit(committed, {
          epoch: 1,
          events: makeEvents(ownerB.runId, committed.lastSeq + 1, 2, committed.step + 1, "paused-owner")
        })
        assert.instanceOf(
          yield* failure(store.commit(lateAgain)),
          StaleClaimError,
          "the old epoch stays fenced even at the current step"
        )
        assert.deepStrictEqual(yield* store.events(ownerB.runId, ownerA.run.lastSeq), ownerBEvents)
      }))

    it.effect("events returns the events strictly after a sequence, in order, from any point", () =>
      Effect.gen(function*() {
        const store = yield* RunStore
        const started = yield* startRun()
        const one = yield* advance(started.run, { n: 4 })
        const two = yield* advance(one.run, { n: 1, checkpoint: false })
        const three = yield* advance(two.run, { n: 5 })
        const all = [...started.events, ...one.events, ...two.events, ...three.events]
        assert.deepStrictEqual(seqs(all), range(1, 11))
        for (let afterSeq = 0; afterSeq <= 11; afterSeq++) {
          assert.deepStrictEqual(yield* store.events(three.run.runId, afterSeq), all.slice(afterSeq), `after ${afterSeq}`)
        }
        assert.deepStrictEqual(yield* store.events(three.run.runId, 50), [])
      }))

    it.effect(`latestCheckpoint is the newest and only the last ${retain} checkpoints are retained`, () =>
      Effect.gen(function*() {
        const store = yield* RunStore
        const started = yield* startRun()
        const written: Array<Checkpoint> = [started.checkpoint]
        let run = started.run
        for (let i = 0; i < retain + 3; i++) {
          const next = yield* advance(run, { n: 1 + (i % 3) })
          run = next.run
          written.push(next.checkpoint!)
          assert.deepStrictEqual(Option.getOrUndefined(yield* store.latestCheckpoint(run.runId)), next.checkpoint)
          assert.deepStrictEqual(yield* store.checkpoints(run.runId), written.slice(-retain), "oldest first")
        }
        const events = yield* advance(run, { n: 2, checkpoint: false })
        assert.deepStrictEqual(
          Option.getOrUndefined(yield* store.latestCheckpoint(run.runId)),
          written[written.length - 1],
          "a commit without a checkpoint keeps the latest"
        )
        assert.deepStrictEqual(yield* store.checkpoints(run.runId), written.slice(-retain))
        assert.strictEqual(events.run.lastSeq, written[written.length - 1]!.seq + 2)
      }))

    it.effect("checkpoints and events round-trip exactly", () =>
      Effect.gen(function*() {
        const store = yield* RunStore
        const runId = uniqueId("rich")
        const run = makeRun({ runId })
        const initial = makeRichCheckpoint(runId, 1, 0)
        yield* store.create(run, [runStarted(run)], initial)
        assert.deepStrictEqual(Option.getOrUndefined(yield* store.latestCheckpoint(runId)), initial)
        const acquired = yield* store.acquire(runId)
        const events = makeEvents(runId, 2, 7, 1)
        const checkpoint = { ...makeRichCheckpoint(runId, 8, 1), state: { ...initial.state as object, step: 1 } }
        yield* store.commit(makeCommit(acquired, { events, checkpoint, status: "waiting" }))
        assert.deepStrictEqual(Option.getOrUndefined(yield* store.latestCheckpoint(runId)), checkpoint)
        assert.deepStrictEqual(yield* store.checkpoints(runId), [initial, checkpoint])
        assert.deepStrictEqual(yield* store.events(runId, 1), events, "every event kind, with its own fields")
      }))

    it.effect("list filters by one status or several", () =>
      Effect.gen(function*() {
        const store = yield* RunStore
        const tenant = uniqueId("tenant")
        const statuses: ReadonlyArray<RunStatus> = ["pending", "running", "waiting", "completed", "failed", "cancelled"]
        const byStatus = new Map<RunStatus, string>()
        for (const [i, status] of statuses.entries()) {
          const { run } = yield* createRun({ tenant, status, createdAt: T0 + i })
          byStatus.set(status, run.runId)
        }
        assert.deepStrictEqual(ids(yield* store.list({ tenant, status: "waiting" })), [byStatus.get("waiting")])
        assert.deepStrictEqual(
          ids(yield* store.list({ tenant, status: ["completed", "pending", "failed"] })),
          [byStatus.get("failed"), byStatus.get("completed"), byStatus.get("pending")]
        )
        assert.deepStrictEqual(ids(yield* store.list({ tenant, status: "timed_out" })), [])

        const running = yield* store.acquire(byStatus.get("running")!)
        yield* advance(running, { status: "completed" })
        assert.deepStrictEqual(ids(yield* store.list({ tenant, status: "running" })), [], "list sees committed status")
        assert.deepStrictEqual(
          ids(yield* store.list({ tenant, status: "completed" })),
          [byStatus.get("completed"), byStatus.get("running")]
        )
      }))

    it.effect("list filters by graph id and tenant, and returns whole records", () =>
      Effect.gen(function*() {
        const store = yield* RunStore
        const [tenantA, tenantB, graphX, graphY] = [uniqueId("ta"), uniqueId("tb"), uniqueId("gx"), uniqueId("gy")]
        const ax = yield* createRun({ tenant: tenantA, graphId: graphX, createdAt: T0 + 1 })
        const ay = yield* createRun({ tenant: tenantA, graphId: graphY, createdAt: T0 + 2 })
        const bx = yield* createRun({ tenant: tenantB, graphId: graphX, createdAt: T0 + 3 })
        assert.deepStrictEqual(yield* store.list({ tenant: tenantA }), [ay.run, ax.run])
        assert.deepStrictEqual(ids(yield* store.list({ graphId: graphX })), [bx.run.runId, ax.run.runId])
        assert.deepStrictEqual(ids(yield* store.list({ graphId: graphX, tenant: tenantA })), [ax.run.runId])
        assert.deepStrictEqual(ids(yield* store.list({ graphId: graphY, tenant: tenantB })), [])
        assert.deepStrictEqual(
          ids(yield* store.list({ graphId: graphY, tenant: tenantA, status: "pending" })),
          [ay.run.runId]
        )
      }))

    it.effect("list returns newest first and honours limit", () =>
      Effect.gen(function*() {
        const store = yield* RunStore
        const tenant = uniqueId("tenant")
        const created = new Map<number, string>()
        for (const offset of [3, 1, 4, 0, 2]) {
          const { run } = yield* createRun({ tenant, createdAt: T0 + offset * 1_000 })
          created.set(offset, run.runId)
        }
        const newestFirst = [4, 3, 2, 1, 0].map((o) => created.get(o))
        assert.deepStrictEqual(ids(yield* store.list({ tenant })), newestFirst)
        assert.deepStrictEqual(ids(yield* store.list({ tenant, limit: 2 })), newestFirst.slice(0, 2))
        assert.deepStrictEqual(ids(yield* store.list({ tenant, limit: 10 })), newestFirst)
      }))

    it.effect("list pages with before, without losing or repeating runs that share a creation time", () =>
      Effect.gen(function*() {
        const store = yield* RunStore
        const tenant = uniqueId("tenant")
        const prefix = uniqueId("page")
        const layout: ReadonlyArray<[string, number]> = [
          ["a", 1],
          ["b", 2],
          ["c", 2],
          ["d", 2],
          ["e", 3],
          ["f", 5],
          ["g", 5]
        ]
        for (const [suffix, offset] of layout) {
          yield* createRun({ runId: `${prefix}-${suffix}`, tenant, createdAt: T0 + offset })
        }
        const all = yield* store.list({ tenant })
        assert.strictEqual(all.length, layout.length)
        for (let i = 1; i < all.length; i++) {
          assert.isAtLeast(all[i - 1]!.createdAt, all[i]!.createdAt, "newest first")
        }
        for (const limit of [1, 2, 3]) {
          const paged: Array<RunRecord> = []
          let before: { readonly createdAt: number; readonly runId: string } | undefined = undefined
          for (let pages = 0; pages < layout.length + 2; pages++) {
            const page: ReadonlyArray<RunRecord> = yield* store.list(
              before === undefined ? { tenant, limit } : { tenant, limit, before }
            )
            if (page.length === 0) break
            assert.isAtMost(page.length, limit)
            paged.push(...page)
            const last: RunRecord = page[page.length - 1]!
            before = { createdAt: last.createdAt, runId: last.runId }
          }
          assert.deepStrictEqual(ids(paged), ids(all), `pages of ${limit} concatenate to the full list`)
        }
        const cursor = all[2]!
        assert.deepStrictEqual(
          ids(yield* store.list({ tenant, before: { createdAt: cursor.createdAt, runId: cursor.runId } })),
          ids(all.slice(3)),
          "before is exclusive"
        )
      }))

    it.effect("fork copies history up to the latest checkpoint into a new run and leaves the original untouched", () =>
      Effect.gen(function*() {
        const store = yield* RunStore
        const started = yield* startRun({ graphId: uniqueId("graph"), tenant: uniqueId("tenant") })
        const one = yield* advance(started.run, { n: 3 })
        const two = yield* advance(one.run, { n: 2 })
        const beyond = yield* advance(two.run, { n: 4, checkpoint: false, status: "failed" })
        const runId = started.run.runId
        const original = yield* snapshot(store, runId)

        const newRunId = uniqueId("fork")
        const forked = yield* store.fork(runId, { newRunId, at: T0 + 77_000 })
        const cp = two.checkpoint!
        assert.deepStrictEqual(
          {
            runId: forked.runId,
            tenant: forked.tenant,
            graphId: forked.graphId,
            graphVersion: forked.graphVersion,
            graphHash: forked.graphHash,
            config: forked.config,
            status: forked.status,
            step: forked.step,
            claimEpoch: forked.claimEpoch,
            lastSeq: forked.lastSeq,
            forkedFrom: forked.forkedFrom,
            waitUntil: forked.waitUntil,
            error: forked.error,
            createdAt: forked.createdAt,
            updatedAt: forked.updatedAt
          },
          {
            runId: newRunId,
            tenant: started.run.tenant,
            graphId: started.run.graphId,
            graphVersion: started.run.graphVersion,
            graphHash: started.run.graphHash,
            config: started.run.config,
            status: "pending",
            step: cp.step,
            claimEpoch: 0,
            lastSeq: cp.seq,
            forkedFrom: { runId, seq: cp.seq },
            waitUntil: null,
            error: null,
            createdAt: T0 + 77_000,
            updatedAt: T0 + 77_000
          }
        )
        assert.deepStrictEqual(yield* store.get(newRunId), forked)
        assert.deepStrictEqual(
          yield* store.events(newRunId, 0),
          renamed([...started.events, ...one.events, ...two.events], newRunId),
          "history up to the checkpoint, renamed; nothing after it"
        )
        assert.deepStrictEqual(Option.getOrUndefined(yield* store.latestCheckpoint(newRunId)), { ...cp, runId: newRunId })
        assert.deepStrictEqual(yield* snapshot(store, runId), original, "the original is untouched")
        assert.strictEqual(original.run.lastSeq, beyond.run.lastSeq)
        assert.includeMembers(ids(yield* store.list({ tenant: started.run.tenant })), [runId, newRunId])
      }))

    it.effect("fork with atSeq starts from an older retained checkpoint", () =>
      Effect.gen(function*() {
        const store = yield* RunStore
        const started = yield* startRun()
        let run = started.run
        const events = [...started.events]
        for (let i = 0; i < retain + 1; i++) {
          const next = yield* advance(run, { n: 2 })
          run = next.run
          events.push(...next.events)
        }
        const retained = yield* store.checkpoints(run.runId)
        const oldest = retained[0]!
        const newRunId = uniqueId("fork")
        const forked = yield* store.fork(run.runId, { newRunId, atSeq: oldest.seq, at: T0 + 1 })
        assert.deepStrictEqual(forked.forkedFrom, { runId: run.runId, seq: oldest.seq })
        assert.strictEqual(forked.step, oldest.step)
        assert.strictEqual(forked.lastSeq, oldest.seq)
        assert.deepStrictEqual(yield* store.events(newRunId, 0), renamed(events.slice(0, oldest.seq), newRunId))
        assert.deepStrictEqual(Option.getOrUndefined(yield* store.latestCheckpoint(newRunId)), {
          ...oldest,
          runId: newRunId
        })
      }))

    it.effect("a fork of a waiting checkpoint starts waiting, and continues independently of its source", () =>
      Effect.gen(function*() {
        const store = yield* RunStore
        const started = yield* startRun()
        const runId = started.run.runId
        const events = makeEvents(runId, 2, 3, 1)
        const checkpoint = makeRichCheckpoint(runId, 4, 1)
        const waiting = yield* store.commit(
          makeCommit(started.run, { events, checkpoint, status: "waiting", waitUntil: T0 + 9_999 })
        )
        const newRunId = uniqueId("fork")
        const forked = yield* store.fork(runId, { newRunId, at: T0 + 2 })
        assert.strictEqual(forked.status, "waiting")
        assert.strictEqual(forked.claimEpoch, 0)
        assert.deepStrictEqual(Option.getOrUndefined(yield* store.latestCheckpoint(newRunId)), {
          ...checkpoint,
          runId: newRunId
        })

        const claimed = yield* store.acquire(newRunId)
        assert.strictEqual(claimed.claimEpoch, 1)
        const forkEvents = makeEvents(newRunId, 5, 2, 2, "forked")
        const continued = yield* store.commit(makeCommit(claimed, { events: forkEvents, status: "completed" }))
        assert.strictEqual(continued.lastSeq, 6)
        assert.deepStrictEqual(yield* store.events(newRunId, 4), forkEvents)
        assert.deepStrictEqual(yield* store.events(runId, 0), [...started.events, ...events], "the source is untouched")
        assert.deepStrictEqual(yield* store.get(runId), waiting)

        const sourceEvents = makeEvents(runId, 5, 2, 2, "source")
        yield* store.commit(makeCommit(waiting, { events: sourceEvents, status: "running" }))
        assert.deepStrictEqual(yield* store.events(runId, 4), sourceEvents)
        assert.deepStrictEqual(yield* store.events(newRunId, 4), forkEvents, "and the fork is untouched by its source")
      }))

    it.effect("fork at a sequence without a retained checkpoint fails with EventLogCorruptionError", () =>
      Effect.gen(function*() {
        const store = yield* RunStore
        const started = yield* startRun()
        let run = started.run
        for (let i = 0; i < retain + 1; i++) run = (yield* advance(run, { n: 2 })).run
        const retainedSeqs = (yield* store.checkpoints(run.runId)).map((c) => c.seq)
        assert.notInclude(retainedSeqs, 1, "the first checkpoint was pruned")
        const before = yield* snapshot(store, run.runId)
        for (const atSeq of [1, 2, run.lastSeq + 10]) {
          const newRunId = uniqueId("fork")
          const error = yield* failure(store.fork(run.runId, { newRunId, atSeq, at: T0 }))
          assert.instanceOf(error, EventLogCorruptionError, `atSeq ${atSeq}`)
          assert.strictEqual(error.runId, run.runId)
          assert.instanceOf(yield* failure(store.get(newRunId)), RunNotFoundError, "no fork was created")
        }
        assert.deepStrictEqual(yield* snapshot(store, run.runId), before)
      }))

    it.effect("compact drops old events only as far as the oldest retained checkpoint covers", () =>
      Effect.gen(function*() {
        const store = yield* RunStore
        const started = yield* startRun()
        let run = started.run
        for (let i = 0; i < retain + 2; i++) run = (yield* advance(run, { n: 3 })).run
        const tail = yield* advance(run, { n: 3, checkpoint: false })
        run = tail.run
        const runId = run.runId
        const all = yield* store.events(runId, 0)
        const checkpoints = yield* store.checkpoints(runId)
        const oldest = checkpoints[0]!.seq
        assert.strictEqual(oldest, 10)
        assert.deepStrictEqual(seqs(all), range(1, run.lastSeq))

        assert.strictEqual(yield* store.compact(runId, 1), 0, "nothing lies before seq 1")
        assert.strictEqual(yield* store.compact(runId, 3), 2, "drops seqs 1 and 2")
        for (const afterSeq of [0, 1]) {
          const error = yield* failure(store.events(runId, afterSeq))
          assert.instanceOf(error, EventLogCorruptionError, `reading after ${afterSeq}`)
          assert.strictEqual(error.runId, runId)
        }
        assert.deepStrictEqual(yield* store.events(runId, 2), all.slice(2))

        assert.strictEqual(yield* store.compact(runId, run.lastSeq + 100), oldest - 2, "stops at the oldest checkpoint")
        assert.instanceOf(yield* failure(store.events(runId, oldest - 1)), EventLogCorruptionError)
        assert.deepStrictEqual(yield* store.events(runId, oldest), all.slice(oldest), "what a checkpoint needs remains")
        assert.deepStrictEqual(yield* store.events(runId, run.lastSeq - 1), all.slice(run.lastSeq - 1))
        assert.strictEqual(yield* store.compact(runId, run.lastSeq + 100), 0, "compacting again drops nothing")

        assert.deepStrictEqual(yield* store.get(runId), run, "the run row is untouched")
        assert.deepStrictEqual(yield* store.checkpoints(runId), checkpoints, "checkpoints are untouched")
        const next = yield* advance(run, { n: 2 })
        assert.deepStrictEqual(
          yield* store.events(runId, oldest),
          [...all.slice(oldest), ...next.events],
          "appending continues after a compaction"
        )
      }))

    it.effect("compact keeps every event that no retained checkpoint covers", () =>
      Effect.gen(function*() {
        const store = yield* RunStore
        const started = yield* startRun()
        let run = started.run
        for (let i = 0; i < 3; i++) run = (yield* advance(run, { n: 3, checkpoint: false })).run
        const all = yield* store.events(run.runId, 0)
        assert.strictEqual(yield* store.compact(run.runId, run.lastSeq + 1), 1, "only the first checkpoint's event")
        assert.deepStrictEqual(yield* store.events(run.runId, 1), all.slice(1))
        assert.instanceOf(yield* failure(store.events(run.runId, 0)), EventLogCorruptionError)
      }))

    it.effect("SQL-hostile ids, tenants and graph ids are stored verbatim and matched exactly", () =>
      Effect.gen(function*() {
        const store = yield* RunStore
        const u = randomUUID()
        const tenant = `'; drop table runs; -- tenant "${u}" 🚀`
        const graphId = `graph\\'); DELETE FROM events; --${u}`
        const hostileIds = [
          `it's-${u}`,
          `'; drop table runs; --${u}`,
          `"double" \\backslash\\ \`tick\` ${u}`,
          `ünïcödé-日本語-🚀-עברית-${u}`,
          `%_wildcards*?[a-z]${u}`,
          `$1 $$body$$ :name ?${u}`,
          `${"long-".repeat(200)}${"長".repeat(100)}${u}`
        ]
        for (const [i, runId] of hostileIds.entries()) {
          const started = yield* startRun({ runId, tenant, graphId, createdAt: T0 + i })
          assert.deepStrictEqual(yield* store.get(runId), started.run)
          const next = yield* advance(started.run, { n: 3 })
          assert.deepStrictEqual(yield* store.get(runId), next.run)
          const stored = yield* store.events(runId, 0)
          assert.deepStrictEqual(stored, [...started.events, ...next.events])
          assert.isTrue(stored.every((e) => e.runId === runId))
          assert.deepStrictEqual(Option.getOrUndefined(yield* store.latestCheckpoint(runId)), next.checkpoint)
          const forkId = `${runId}'-fork`
          const forked = yield* store.fork(runId, { newRunId: forkId, at: T0 + 100 + i })
          assert.deepStrictEqual(forked.forkedFrom, { runId, seq: next.run.lastSeq })
          assert.isTrue((yield* store.events(forkId, 0)).every((e) => e.runId === forkId))
          assert.strictEqual(yield* store.compact(runId, 2), 1)
        }
        const listed = ids(yield* store.list({ tenant, graphId }))
        assert.sameMembers(listed, [...hostileIds, ...hostileIds.map((id) => `${id}'-fork`)])

        const lookalikes = [`acme%${u}`, `acme_${u}`, `acmeZ${u}`, `ACME%${u}`, `acme%${u} `]
        for (const t of lookalikes) yield* createRun({ tenant: t, graphId: t })
        for (const t of lookalikes) {
          const byTenant = yield* store.list({ tenant: t })
          assert.deepStrictEqual(byTenant.map((r) => r.tenant), [t], `tenant ${JSON.stringify(t)} matches exactly`)
          const byGraph = yield* store.list({ graphId: t })
          assert.deepStrictEqual(byGraph.map((r) => r.graphId), [t], `graph ${JSON.stringify(t)} matches exactly`)
        }
      }))

    it.effect("racing commits with the same epoch on the same step: exactly one wins, the log stays contiguous", () =>
      Effect.gen(function*() {
        const store = yield* RunStore
        const started = yield* startRun()
        const runId = started.run.runId
        const expected = [...started.events]
        const writers = 16
        for (let round = 0; round < 5; round++) {
          const run = yield* store.get(runId)
          const attempts = Array.from({ length: writers }, (_, w) => {
            const events = makeEvents(runId, run.lastSeq + 1, 1 + (round % 3), run.step + 1, `writer-${w}`)
            const checkpoint = makeCheckpoint(runId, run.lastSeq + events.length, run.step + 1, { state: { writer: w } })
            return { events, checkpoint, commit: makeCommit(run, { events, checkpoint }) }
          })
          const results = yield* Effect.all(attempts.map((a) => Effect.either(store.commit(a.commit))), {
            concurrency: "unbounded"
          })
          const winners = results.flatMap((r, w) => (Either.isRight(r) ? [w] : []))
          assert.strictEqual(winners.length, 1, `round ${round}: exactly one commit wins`)
          const winner = attempts[winners[0]!]!
          for (const result of results) {
            if (Either.isLeft(result)) {
              assert.include(["StaleClaimError", "EventSequenceConflictError"], result.left._tag)
            }
          }
          expected.push(...winner.events)
          const after = yield* store.get(runId)
          assert.strictEqual(after.step, run.step + 1)
          assert.strictEqual(after.lastSeq, run.lastSeq + winner.events.length)
          assert.deepStrictEqual(Option.getOrUndefined(yield* store.latestCheckpoint(runId)), winner.checkpoint)
        }
        const log = yield* store.events(runId, 0)
        assert.deepStrictEqual(seqs(log), range(1, log.length), "no gaps, no duplicates")
        assert.deepStrictEqual(log, expected, "each round holds exactly the winner's events")
      }))

    it.effect.prop(
      "random valid and stale commits leave exactly the valid commits' events, contiguous from 1",
      { ops: fc.array(propertyOp, { minLength: 1, maxLength: 25 }) },
      ({ ops }) =>
        Effect.gen(function*() {
          const store = yield* RunStore
          const started = yield* startRun()
          const runId = started.run.runId
          let run = started.run
          const log: Array<RunEvent> = [...started.events]
          const checkpoints: Array<Checkpoint> = [started.checkpoint]
          for (const [i, op] of ops.entries()) {
            const node = `op-${i}`
            const step = run.step + 1
            const fresh = (n: number) => makeEvents(runId, run.lastSeq + 1, n, step, node)
            switch (op.kind) {
              case "reacquire": {
                const acquired = yield* store.acquire(runId)
                assert.strictEqual(acquired.claimEpoch, run.claimEpoch + 1)
                run = acquired
                break
              }
              case "valid": {
                const events = fresh(op.events)
                const checkpoint = op.checkpoint ? makeCheckpoint(runId, run.lastSeq + op.events, step) : undefined
                run = yield* store.commit(makeCommit(run, { events, checkpoint }))
                log.push(...events)
                if (checkpoint !== undefined) checkpoints.push(checkpoint)
                break
              }
              case "staleEpoch": {
                const error = yield* failure(
                  store.commit(makeCommit(run, { epoch: run.claimEpoch - 1, events: fresh(op.events) }))
                )
                assert.instanceOf(error, StaleClaimError)
                break
              }
              case "wrongStep": {
                const error = yield* failure(store.commit(makeCommit(run, {
                  expectedStep: run.step + op.delta,
                  step: run.step + op.delta + 1,
                  events: fresh(op.events)
                })))
                assert.instanceOf(error, StaleClaimError)
                break
              }
              case "duplicateSeq": {
                const events = makeEvents(runId, run.lastSeq, op.events, step, node)
                const error = yield* failure(store.commit(makeCommit(run, { events })))
                assert.instanceOf(error, EventSequenceConflictError)
                break
              }
              case "gapSeq": {
                const events = fresh(op.events).map((e, j) => (j >= op.at ? { ...e, seq: e.seq + 1 } : e))
                const error = yield* failure(store.commit(makeCommit(run, { events })))
                assert.instanceOf(error, EventSequenceConflictError)
                break
              }
            }
          }
          const stored = yield* store.events(runId, 0)
          assert.deepStrictEqual(seqs(stored), range(1, run.lastSeq))
          assert.deepStrictEqual(stored, log)
          assert.deepStrictEqual(yield* store.get(runId), run)
          assert.deepStrictEqual(yield* store.checkpoints(runId), checkpoints.slice(-retain))
        }),
      { timeout: options.propertyTimeoutMillis ?? 120_000, fastCheck: { numRuns: propertyRuns } }
    )
  })
}
