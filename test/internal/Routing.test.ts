import { assert, describe, it } from "@effect/vitest"
import { Effect, Schema } from "effect"
import * as Errors from "../../src/Errors.js"
import * as Graph from "../../src/Graph.js"
import * as Node from "../../src/Node.js"
import * as State from "../../src/State.js"
import type { Entry } from "../../src/internal/Position.js"
import * as Routing from "../../src/internal/Routing.js"

const S = State.define({
  topic: State.channel(Schema.String),
  items: State.list(Schema.Number),
  count: State.counter()
})

const noop = () => Effect.succeed({})

const state = (s: Partial<{ topic: string; items: ReadonlyArray<number>; count: number }> = {}) =>
  ({ topic: "t", items: [], count: 0, ...s }) as Record<string, unknown>

const at = (node: string, index = 0, input: unknown = undefined): Entry => ({ node, index, input })

const names = (frontier: ReadonlyArray<Entry>) => frontier.map((e) => `${e.node}#${e.index}`)

const undirected = () => undefined

const routed = (
  result: Routing.Routed | Errors.RoutingError | Errors.StateValidationError | Errors.UserCodeError
): Routing.Routed => {
  if (
    result instanceof Errors.RoutingError || result instanceof Errors.StateValidationError ||
    result instanceof Errors.UserCodeError
  ) {
    assert.fail(`expected a frontier, got ${result._tag}: ${result.message}`)
  }
  return result
}

describe("Routing.startFrontier", () => {
  it.effect("orders START's targets by node declaration, plain instance first, then fan-out items with their inputs", () =>
    Effect.gen(function*() {
      const g = yield* Graph.make({ id: "start", state: S })
        .node("a", {}, noop)
        .node("b", {}, noop)
        .node("w", { input: Schema.Number }, noop)
        .edge(Graph.START, "b")
        .edge(Graph.START, "a")
        .fanOut(Graph.START, "w", (s) => s.items)
        .edge("a", Graph.END)
        .edge("b", Graph.END)
        .edge("w", Graph.END)
        .compile
      const frontier = Routing.startFrontier({ graph: g, prefix: "" }, state({ items: [7, 8] }))
      assert.deepStrictEqual(frontier, [at("a"), at("b"), at("w", 0, 7), at("w", 1, 8)])
    }))

  it.effect("a conditional START route is evaluated on the initial state, and END adds nothing", () =>
    Effect.gen(function*() {
      const g = yield* Graph.make({ id: "start-route", state: S })
        .node("a", {}, noop)
        .node("b", {}, noop)
        .route(Graph.START, (s) => s.count > 0 ? ["b", Graph.END] : "a", ["a", "b", Graph.END])
        .edge("a", Graph.END)
        .edge("b", Graph.END)
        .compile
      assert.deepStrictEqual(Routing.startFrontier({ graph: g, prefix: "" }, state()), [at("a")])
      assert.deepStrictEqual(Routing.startFrontier({ graph: g, prefix: "" }, state({ count: 2 })), [at("b")])
    }))

  it.effect("a START route that returns an undeclared target is a RoutingError naming __start__ and the allowed targets", () =>
    Effect.gen(function*() {
      const g = yield* Graph.make({ id: "bad-start", state: S })
        .node("a", {}, noop)
        .node("b", {}, noop)
        .route(Graph.START, () => "b" as "a", ["a"])
        .edge("a", "b")
        .edge("b", Graph.END)
        .compile
      const result = Routing.startFrontier({ graph: g, prefix: "" }, state())
      assert.instanceOf(result, Errors.RoutingError)
      const error = result as Errors.RoutingError
      assert.strictEqual(error.graphId, "bad-start")
      assert.strictEqual(error.node, "__start__")
      assert.strictEqual(error.target, "b")
      assert.deepStrictEqual(error.allowed, ["a"])
    }))

  it.effect("a fan-out item that does not match the node's input schema is a StateValidationError", () =>
    Effect.gen(function*() {
      const g = yield* Graph.make({ id: "bad-item", state: S })
        .node("w", { input: Schema.Number.pipe(Schema.greaterThan(0)) }, noop)
        .fanOut(Graph.START, "w", (s) => s.items)
        .edge("w", Graph.END)
        .compile
      const result = Routing.startFrontier({ graph: g, prefix: "parent/" }, state({ items: [1, -2] }))
      assert.instanceOf(result, Errors.StateValidationError)
      const error = result as Errors.StateValidationError
      assert.strictEqual(error.node, "parent/w")
      assert.strictEqual(error.key, "<fan-out input>")
      assert.include(error.detail, "item 1")
      assert.include(error.detail, "-2")
    }))
})

describe("Routing.route", () => {
  it.effect("follows edges and routes evaluated on the step's merged state", () =>
    Effect.gen(function*() {
      const g = yield* Graph.make({ id: "edges", state: S })
        .node("a", {}, noop)
        .node("b", {}, noop)
        .node("c", {}, noop)
        .edge(Graph.START, "a")
        .edge("a", "b")
        .route("a", (s) => s.count > 1 ? "c" : Graph.END, ["c", Graph.END])
        .edge("b", Graph.END)
        .edge("c", Graph.END)
        .compile
      const env = { graph: g, prefix: "" }
      const low = routed(Routing.route(env, state({ count: 1 }), [at("a")], undirected, {}))
      assert.deepStrictEqual(names(low.frontier), ["b#0"])
      const high = routed(Routing.route(env, state({ count: 2 }), [at("a")], undirected, {}))
      assert.deepStrictEqual(names(high.frontier), ["b#0", "c#0"])
      const last = routed(Routing.route(env, state(), [at("b"), at("c")], undirected, {}))
      assert.deepStrictEqual(last.frontier, [])
    }))

  it.effect("a route that returns an undeclared target is a RoutingError naming the prefixed node", () =>
    Effect.gen(function*() {
      const g = yield* Graph.make({ id: "bad-route", state: S })
        .node("a", {}, noop)
        .node("b", {}, noop)
        .edge(Graph.START, "a")
        .route("a", (s) => (s.count > 0 ? "b" : "nowhere") as "b", ["b"])
        .edge("b", Graph.END)
        .compile
      const env = { graph: g, prefix: "outer/" }
      assert.deepStrictEqual(names(routed(Routing.route(env, state({ count: 1 }), [at("a")], undirected, {})).frontier), [
        "b#0"
      ])
      const result = Routing.route(env, state(), [at("a")], undirected, {})
      assert.instanceOf(result, Errors.RoutingError)
      const error = result as Errors.RoutingError
      assert.strictEqual(error.node, "outer/a")
      assert.strictEqual(error.target, "nowhere")
      assert.deepStrictEqual(error.allowed, ["b"])
    }))

  it.effect("fan-out instances of one node route once, and a fan-out sends one instance per item", () =>
    Effect.gen(function*() {
      const g = yield* Graph.make({ id: "fan", state: S })
        .node("plan", {}, noop)
        .node("work", { input: Schema.Number }, noop)
        .node("join", {}, noop)
        .edge(Graph.START, "plan")
        .fanOut("plan", "work", (s) => s.items)
        .edge("work", "join")
        .edge("join", Graph.END)
        .compile
      const env = { graph: g, prefix: "" }
      const fanned = routed(Routing.route(env, state({ items: [3, 4, 5] }), [at("plan")], undirected, {}))
      assert.deepStrictEqual(fanned.frontier, [at("work", 0, 3), at("work", 1, 4), at("work", 2, 5)])
      const joined = routed(Routing.route(env, state(), fanned.frontier, undirected, {}))
      assert.deepStrictEqual(joined.frontier, [at("join")])
    }))

  it.effect("a join waits at its barrier until every source has run, then fires once and clears it", () =>
    Effect.gen(function*() {
      const g = yield* Graph.make({ id: "join", state: S })
        .node("a", {}, noop)
        .node("slow", {}, noop)
        .node("b", {}, noop)
        .node("c", {}, noop)
        .edge(Graph.START, "a")
        .edge(Graph.START, "slow")
        .edge("slow", "b")
        .edge(["a", "b"], "c")
        .edge("c", Graph.END)
        .compile
      const env = { graph: g, prefix: "" }
      const key = g.joins[0]!.key
      const first = routed(Routing.route(env, state(), [at("a"), at("slow")], undirected, {}))
      assert.deepStrictEqual(names(first.frontier), ["b#0"])
      assert.deepStrictEqual(first.barriers, { [key]: ["a"] })
      const second = routed(Routing.route(env, state(), first.frontier, undirected, first.barriers))
      assert.deepStrictEqual(names(second.frontier), ["c#0"])
      assert.deepStrictEqual(second.barriers, {})
      assert.deepStrictEqual(first.barriers, { [key]: ["a"] }, "routing does not mutate the barriers it is given")
    }))

  it.effect("a command's goto and send replace the node's edges; END in goto adds nothing", () =>
    Effect.gen(function*() {
      const g = yield* Graph.make({ id: "command", state: S })
        .node("a", { goto: ["b", "w"] }, noop)
        .node("b", {}, noop)
        .node("w", { input: Schema.String }, noop)
        .edge(Graph.START, "a")
        .edge("a", Graph.END)
        .edge("b", Graph.END)
        .edge("w", Graph.END)
        .compile
      const env = { graph: g, prefix: "" }
      assert.deepStrictEqual(routed(Routing.route(env, state(), [at("a")], undirected, {})).frontier, [])
      const command = (e: Entry): Routing.Directed | undefined =>
        e.node === "a" ? { goto: ["b", Graph.END], sends: [{ node: "w", input: "x" }, { node: "w", input: "y" }] } : undefined
      const result = routed(Routing.route(env, state(), [at("a")], command, {}))
      assert.deepStrictEqual(result.frontier, [at("b"), at("w", 0, "x"), at("w", 1, "y")])
    }))

  it.effect("a sent item that does not match the node's input schema is a StateValidationError", () =>
    Effect.gen(function*() {
      const g = yield* Graph.make({ id: "bad-send", state: S })
        .node("a", { goto: ["w"] }, noop)
        .node("w", { input: Schema.String }, noop)
        .edge(Graph.START, "a")
        .edge("a", Graph.END)
        .edge("w", Graph.END)
        .compile
      const command = () => ({ goto: [], sends: [{ node: "w", input: 42 }] })
      const result = Routing.route({ graph: g, prefix: "" }, state(), [at("a")], command, {})
      assert.instanceOf(result, Errors.StateValidationError)
      assert.strictEqual((result as Errors.StateValidationError).node, "w")
    }))
})

describe("Routing.checkCommand", () => {
  it.effect("accepts declared goto targets and END, and rejects any other goto or send target", () =>
    Effect.gen(function*() {
      const g = yield* Graph.make({ id: "check", state: S })
        .node("a", { goto: ["b"] }, noop)
        .node("b", {}, noop)
        .node("c", {}, noop)
        .edge(Graph.START, "a")
        .edge("a", "c")
        .edge("b", Graph.END)
        .edge("c", Graph.END)
        .compile
      const a = g.nodes.get("a")!
      assert.isUndefined(Routing.checkCommand(g, a, "a", Node.goto(["b", Graph.END])))
      const bad = Routing.checkCommand(g, a, "sub/a", Node.goto("c"))
      assert.instanceOf(bad, Errors.RoutingError)
      assert.strictEqual(bad!.node, "sub/a")
      assert.strictEqual(bad!.target, "c")
      assert.deepStrictEqual(bad!.allowed, ["b"])
      const badSend = Routing.checkCommand(g, a, "a", Node.send([{ node: "c", input: 1 }]))
      assert.strictEqual(badSend?.target, "c")
    }))
})

describe("Routing.byOrder", () => {
  it.effect("sorts entries by node declaration order, then fan-out index", () =>
    Effect.gen(function*() {
      const g = yield* Graph.make({ id: "order", state: S })
        .node("x", {}, noop)
        .node("y", {}, noop)
        .edge(Graph.START, "x")
        .edge(Graph.START, "y")
        .edge("x", Graph.END)
        .edge("y", Graph.END)
        .compile
      const sorted = [at("y", 1), at("x", 0), at("y", 0)].sort(Routing.byOrder(g))
      assert.deepStrictEqual(names(sorted), ["x#0", "y#0", "y#1"])
    }))
})
