/**
 * Checks at the command line's edge: a run's `--input` decoded against the state schema, option
 * durations, and the exit code each failure maps to.
 */
import { ValidationError } from "@effect/cli"
import * as HelpDoc from "@effect/cli/HelpDoc"
import { assert, describe, it } from "@effect/vitest"
import { Cause, Duration, Effect, Option, Schema } from "effect"
import { count } from "../../examples/graphs.js"
import { parseDuration } from "../../src/cli/Common.js"
import { exitCode } from "../../src/cli/ExitCode.js"
import { GraphModuleError } from "../../src/cli/GraphModule.js"
import { decodeInput } from "../../src/cli/Submit.js"
import { Graph, State } from "../../src/index.js"
import { EventLogCorruptionError, InputValidationError, RunNotFoundError, RunStatusError } from "../../src/Errors.js"
import { StoreOpenError } from "../../src/layers/Store.js"
import { SchemaVersionError } from "../../src/layers/sql/Migrations.js"
import { GraphNotRegisteredError } from "../../src/services/GraphRegistry.js"

describe("decodeInput", () => {
  it.effect("decodes the encoded form of each key with its channel's schema", () =>
    Effect.gen(function*() {
      const Dated = State.define({ at: State.channel(Schema.DateFromString), n: State.counter() })
      const graph = yield* Graph.make({ id: "dated", state: Dated })
        .node("a", {}, () => Effect.succeed({ n: 1 }))
        .edge(Graph.START, "a")
        .edge("a", Graph.END)
        .compile
      const input = yield* decodeInput(graph, { at: "2024-01-02T03:04:05.000Z", n: 2 })
      assert.instanceOf(input["at"], Date)
      assert.strictEqual((input["at"] as Date).toISOString(), "2024-01-02T03:04:05.000Z")
      assert.strictEqual(input["n"], 2)
      assert.deepStrictEqual(yield* decodeInput(yield* count, {}), {})
    }))

  it.effect("names every unknown key and every key whose value its schema rejects", () =>
    Effect.gen(function*() {
      const graph = yield* count
      const error = yield* Effect.flip(decodeInput(graph, { target: "four", colour: "red", log: ["a", 1] }))
      assert.instanceOf(error, InputValidationError)
      assert.include(error.message, "key \"target\": Expected")
      assert.include(error.message, "unknown state key \"colour\"; the state has [target, count, log]")
      assert.include(error.message, "key \"log\": 1: Expected string, actual 1")
      const notObject = yield* Effect.flip(decodeInput(graph, [1]))
      assert.include(notObject.message, "must be a JSON object of state keys, got an array")
    }))
})

describe("parseDuration", () => {
  it("reads short and long forms", () => {
    const millis = (text: string) => Option.map(parseDuration(text), Duration.toMillis)
    assert.deepStrictEqual(millis("500ms"), Option.some(500))
    assert.deepStrictEqual(millis("30s"), Option.some(30_000))
    assert.deepStrictEqual(millis("1.5m"), Option.some(90_000))
    assert.deepStrictEqual(millis("2h"), Option.some(7_200_000))
    assert.deepStrictEqual(millis("10 seconds"), Option.some(10_000))
    assert.isTrue(Option.isNone(parseDuration("soon")))
    assert.isTrue(Option.isNone(parseDuration("10 parsecs")))
  })
})

describe("exitCode", () => {
  it("maps each failure to its documented code", () => {
    const code = (error: unknown) => exitCode(Cause.fail(error))
    assert.strictEqual(exitCode(Cause.die(new Error("boom"))), 1)
    assert.strictEqual(code(new Error("anything else")), 1)
    assert.strictEqual(code(ValidationError.invalidValue(HelpDoc.p("bad"))), 2)
    assert.strictEqual(code(new GraphModuleError({ path: "x.ts", reason: "no such file" })), 2)
    assert.strictEqual(code(new InputValidationError({ graphId: "g", detail: "bad" })), 2)
    assert.strictEqual(code(new RunNotFoundError({ runId: "run_x" })), 3)
    assert.strictEqual(code(new GraphNotRegisteredError({ graphId: "g", version: null, registered: [] })), 3)
    assert.strictEqual(code(new EventLogCorruptionError({ runId: "run_x", detail: "gap" })), 4)
    const outdated = new SchemaVersionError({ database: 0, code: 4 })
    assert.strictEqual(code(new StoreOpenError({ kind: "postgres", url: "postgres://h/db", reason: outdated.message, cause: outdated })), 4)
    assert.strictEqual(code(new StoreOpenError({ kind: "postgres", url: "postgres://h/db", reason: "refused" })), 1)
    assert.strictEqual(code(new RunStatusError({ runId: "run_x", status: "completed", expected: "waiting" })), 5)
  })
})
