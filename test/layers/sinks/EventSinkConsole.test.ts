import { assert, it } from "@effect/vitest"
import { Console, Effect } from "effect"
import type { RunEvent, RunEventTag } from "../../../src/Events.js"
import * as EventSinkConsole from "../../../src/layers/sinks/EventSinkConsole.js"
import { EventCapture } from "../../../src/layers/sinks/EventSinkCapture.js"
import { runnerWithMerged, runToEnd, thenCapture } from "./fixtures.js"

/** The default console with `log` recording the lines it is given. */
const recordingConsole = Effect.map(Effect.console, (console) => {
  const lines: Array<string> = []
  const recording: Console.Console = {
    ...console,
    log: (...args) => Effect.sync(() => void lines.push(...args.map(String).join(" ").split("\n")))
  }
  return { console: recording, lines }
})

const at = Date.UTC(2024, 0, 2, 12, 0, 0, 123)
const base = { runId: "run_abc", seq: 7, step: 2, at }
const ref = { node: "search", index: 3 }

const samples: { readonly [K in RunEventTag]: readonly [Extract<RunEvent, { _tag: K }>, ReadonlyArray<string>] } = {
  RunStarted: [{ _tag: "RunStarted", ...base, graphId: "research", graphVersion: "2", graphHash: "0123456789abcdef" }, [
    "research@2",
    "0123456789ab"
  ]],
  StepStarted: [{ _tag: "StepStarted", ...base, nodes: ["a", "b"] }, ["nodes: a, b"]],
  NodeStarted: [{ _tag: "NodeStarted", ...base, ...ref }, ["search[3]"]],
  NodeRetrying: [{ _tag: "NodeRetrying", ...base, ...ref, attempt: 1, error: "rate limited" }, [
    "search[3] attempt 1 failed: rate limited"
  ]],
  NodeCompleted: [{ _tag: "NodeCompleted", ...base, ...ref, attempts: 2, keys: ["notes"] }, [
    "search[3] (2 attempts, keys: notes)"
  ]],
  NodeFailed: [
    { _tag: "NodeFailed", ...base, ...ref, attempts: 1, error: "boom\n  at line 2", errorTag: "Broken" },
    ["search[3] (1 attempt) Broken: boom ⏎ at line 2"]
  ],
  NodeInterrupted: [{ _tag: "NodeInterrupted", ...base, ...ref, kind: "node", payload: { question: "ok?" } }, [
    `search[3] node payload: {"question":"ok?"}`
  ]],
  StepCommitted: [{ _tag: "StepCommitted", ...base, next: [] }, ["next: end"]],
  RunWaiting: [{
    _tag: "RunWaiting",
    ...base,
    interrupts: [{ kind: "node", node: "approve", index: 0, payload: null }],
    until: at + 60_000
  }, ["on approve[0] (node) until 12:01:00.123"]],
  RunResumed: [{ _tag: "RunResumed", ...base, response: "approve" }, ["response: approve"]],
  RunMigrated: [
    { _tag: "RunMigrated", ...base, fromVersion: "1", toVersion: "2", graphHash: "abcdef0123456789" },
    ["graph version 1 -> 2 (abcdef012345)"]
  ],
  RunCompleted: [{ _tag: "RunCompleted", ...base }, []],
  RunFailed: [{ _tag: "RunFailed", ...base, error: "node explode failed", errorTag: "NodeFailedError" }, [
    "NodeFailedError: node explode failed"
  ]],
  RunCancelled: [{ _tag: "RunCancelled", ...base, reason: "operator" }, ["reason: operator"]],
  RunTimedOut: [{ _tag: "RunTimedOut", ...base, deadline: at }, ["deadline 12:00:00.123"]],
  BudgetThreshold: [
    { _tag: "BudgetThreshold", ...base, scope: "run", resource: "tokens", percent: 75, used: 750, limit: 1000 },
    ["run tokens at 75% (750 of 1000)"]
  ],
  ModelCalled: [
    { _tag: "ModelCalled", ...base, ...ref, model: "gpt-x", inputTokens: 100, outputTokens: 20, usd: 0.0012 },
    ["search[3] gpt-x (100 in, 20 out, $0.0012)"]
  ],
  ToolCalled: [{ _tag: "ToolCalled", ...base, ...ref, tool: "web.search", input: { q: "otters" } }, [
    `search[3] web.search input: {"q":"otters"}`
  ]],
  ToolReturned: [
    { _tag: "ToolReturned", ...base, ...ref, tool: "web.search", output: null, error: "timeout" },
    ["search[3] web.search failed: timeout"]
  ],
  Custom: [{ _tag: "Custom", ...base, ...ref, name: "found", data: { hits: 2n } }, [`search[3] found: {"hits":"2n"}`]]
}

it("formats every event tag as one line with time, run, sequence, step, tag and details", () => {
  for (const [tag, [event, details]] of Object.entries(samples)) {
    const line = EventSinkConsole.format(event)
    assert.isFalse(line.includes("\n"), `${tag} spans lines: ${line}`)
    assert.isTrue(line.startsWith(`12:00:00.123 run_abc #7 step 2  ${tag}`), line)
    for (const detail of details) assert.include(line, detail, tag)
  }
  assert.strictEqual(
    EventSinkConsole.format(samples.NodeCompleted[0]),
    "12:00:00.123 run_abc #7 step 2  NodeCompleted  search[3] (2 attempts, keys: notes)"
  )
})

it("colours failures and terminal events only when asked", () => {
  const red = "\u001b[31m"
  const failed = samples.RunFailed[0]
  assert.include(EventSinkConsole.format(failed, { colors: true }), `${red}RunFailed`)
  assert.notInclude(EventSinkConsole.format(failed), "\u001b[")
  assert.include(EventSinkConsole.format(samples.RunCompleted[0], { colors: true }), "\u001b[32mRunCompleted")
  assert.notInclude(EventSinkConsole.format(samples.NodeStarted[0], { colors: true }), "\u001b[3")
  const long = EventSinkConsole.format({ ...samples.ToolCalled[0], input: "x".repeat(1000) })
  assert.isBelow(long.length, 300)
})

it.effect("prints one line per event of a run through the Console service", () =>
  Effect.gen(function*() {
    const { console, lines } = yield* recordingConsole
    const { events, result } = yield* Effect.gen(function*() {
      const run = yield* runToEnd("otters")
      yield* (yield* EventCapture).awaitEnd(run.runId)
      return run
    }).pipe(
      Effect.provide(runnerWithMerged(thenCapture(EventSinkConsole.make({ colors: false })))),
      Effect.withConsole(console)
    )
    assert.strictEqual(result.status, "completed")
    assert.deepStrictEqual(lines, events.map((e) => EventSinkConsole.format(e)))
    assert.isTrue(lines.some((l) => /NodeRetrying {2}search\[0\] attempt 1 failed: flaky on attempt 1$/.test(l)), lines.join("\n"))
    assert.isTrue(lines.some((l) => l.includes(`Custom  search[0] found: {"hits":2,"topic":"otters"}`)))
    assert.isTrue(lines[lines.length - 1]!.includes("RunCompleted"))
  }))
