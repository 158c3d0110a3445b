/**
 * A human's edit response whose values do not decode: the error is one sentence that says it
 * was the edit, names each key and what its schema expected; the run keeps waiting.
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect, Schema } from "effect"
import * as Errors from "../src/Errors.js"
import * as Graph from "../src/Graph.js"
import { Runner } from "../src/Runner.js"
import * as State from "../src/State.js"
import { withRunner } from "./util.js"

const Counting = State.define({
  count: State.channel(Schema.Number, { initial: () => 0 }),
  label: State.channel(Schema.String, { initial: () => "" }),
  amount: State.channel(Schema.NumberFromString, { initial: () => 0 })
})

const waitingRun = Effect.gen(function*() {
  const graph = yield* Graph.make({ id: "counting", state: Counting })
    .node("review", {}, (ctx) => Effect.as(ctx.interrupt({ count: ctx.state.count }), {}))
    .edge(Graph.START, "review")
    .edge("review", Graph.END)
    .compile
  const runner = yield* Runner
  const run = yield* runner.start(graph, {})
  assert.strictEqual((yield* run.result).status, "waiting")
  const editWith = (update: unknown) =>
    Effect.flip(runner.respond(graph, run.runId, { _tag: "edit", update: update as Record<string, unknown> }))
  return { graph, runner, run, editWith }
})

describe("edit responses", () => {
  it.effect("a value of the wrong type is one sentence naming the edit, the key, what was expected and what came", () =>
    withRunner(Effect.gen(function*() {
      const { editWith } = yield* waitingRun
      const error = yield* editWith({ count: "x" })
      assert.instanceOf(error, Errors.InputValidationError)
      assert.strictEqual(error.message, `graph "counting": invalid input: edit response: key "count": expected a number, got "x"`)
      assert.notInclude(error.message, "undefined")
    })))

  it.effect("every bad key is named once, an unknown key with the keys the state has", () =>
    withRunner(Effect.gen(function*() {
      const { editWith } = yield* waitingRun
      const error = yield* editWith({ count: true, label: 3, amount: "many", colour: "red" })
      assert.instanceOf(error, Errors.InputValidationError)
      assert.strictEqual(
        error.message,
        `graph "counting": invalid input: edit response: key "count": expected a number, got true; ` +
          `key "label": expected a string, got 3; ` +
          `key "amount": Unable to decode "many" into a number; ` +
          `unknown key "colour" (the state has "count", "label", "amount")`
      )
      const notAnObject = yield* editWith([1])
      assert.strictEqual(notAnObject.message, `graph "counting": invalid input: edit response: expected an object of state keys, got an array`)
    })))

  it.effect("after a rejected edit the run still waits, and a good edit is applied decoded", () =>
    withRunner(Effect.gen(function*() {
      const { graph, runner, run, editWith } = yield* waitingRun
      yield* editWith({ count: "x" })
      const waiting = yield* runner.result(graph, run.runId)
      assert.strictEqual(waiting.status, "waiting")
      assert.strictEqual(waiting.state.count, 0)
      yield* runner.respond(graph, run.runId, { _tag: "edit", update: { count: 3, amount: "42" } })
      const done = yield* runner.result(graph, run.runId)
      assert.strictEqual(done.status, "completed")
      assert.strictEqual(done.state.count, 3)
      assert.strictEqual(done.state.amount, 42)
    })))
})
