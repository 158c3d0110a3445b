import { assert, describe, it } from "@effect/vitest"
import { execFile } from "node:child_process"
import { promisify } from "node:util"
import { Effect, Schema } from "effect"
import * as Errors from "../src/Errors.js"
import * as Graph from "../src/Graph.js"
import * as State from "../src/State.js"
import { problemsOf } from "./util.js"

const S = State.define({
  topic: State.channel(Schema.String),
  notes: State.list(Schema.String),
  count: State.counter()
})

const noop = () => Effect.succeed({})

const tagsOf = (problems: ReadonlyArray<{ readonly _tag: string }>) => problems.map((p) => p._tag).sort()

describe("Graph.compile", () => {
  it.effect("compiles a valid graph with its nodes, entry and routing", () =>
    Effect.gen(function*() {
      const g = yield* Graph.make({ id: "ok", state: S })
        .node("a", {}, noop)
        .node("b", {}, noop)
        .edge(Graph.START, "a")
        .edge("a", "b")
        .edge("b", Graph.END)
        .compile
      assert.strictEqual(g.id, "ok")
      assert.deepStrictEqual([...g.nodes.keys()], ["a", "b"])
      assert.deepStrictEqual(g.start.next, ["a"])
      assert.deepStrictEqual(g.routing.get("a")?.next, ["b"])
    }))

  it.effect("an edge to an unknown node is an UnknownNode error naming the node and the edge", () =>
    Effect.gen(function*() {
      const problems = yield* problemsOf(
        Graph.make({ id: "g", state: S })
          .node("a", {}, noop)
          .edge(Graph.START, "a")
          .edge("a", Graph.END)
          .edge("a", "ghost" as never)
          .compile
      )
      assert.strictEqual(problems.length, 1)
      const p = problems[0]!
      assert.instanceOf(p, Errors.UnknownNode)
      assert.strictEqual(p.graphId, "g")
      assert.strictEqual(p.node, "ghost")
      assert.include(p.referencedFrom, "a -> ghost")
    }))

  it.effect("an edge from an unknown node is an UnknownNode error", () =>
    Effect.gen(function*() {
      const problems = yield* problemsOf(
        Graph.make({ id: "g", state: S })
          .node("a", {}, noop)
          .edge(Graph.START, "a")
          .edge("a", Graph.END)
          .edge("nope" as never, "a")
          .compile
      )
      assert.deepStrictEqual(tagsOf(problems), ["UnknownNode"])
      assert.strictEqual((problems[0] as Errors.UnknownNode).node, "nope")
    }))

  it.effect("a node no path from START reaches is an UnreachableNode error", () =>
    Effect.gen(function*() {
      const problems = yield* problemsOf(
        Graph.make({ id: "g", state: S })
          .node("a", {}, noop)
          .node("island", {}, noop)
          .edge(Graph.START, "a")
          .edge("a", Graph.END)
          .edge("island", Graph.END)
          .compile
      )
      assert.strictEqual(problems.length, 1)
      assert.instanceOf(problems[0], Errors.UnreachableNode)
      assert.strictEqual((problems[0] as Errors.UnreachableNode).node, "island")
    }))

  it.effect("a dead-end node is a NoPathToEnd error", () =>
    Effect.gen(function*() {
      const problems = yield* problemsOf(
        Graph.make({ id: "g", state: S })
          .node("a", {}, noop)
          .node("dead", {}, noop)
          .edge(Graph.START, "a")
          .edge("a", Graph.END)
          .edge("a", "dead")
          .compile
      )
      assert.strictEqual(problems.length, 1)
      assert.instanceOf(problems[0], Errors.NoPathToEnd)
      assert.strictEqual((problems[0] as Errors.NoPathToEnd).node, "dead")
    }))

  it.effect("a cycle without an exit is a NoPathToEnd error for each of its nodes", () =>
    Effect.gen(function*() {
      const problems = yield* problemsOf(
        Graph.make({ id: "g", state: S })
          .node("a", {}, noop)
          .node("b", {}, noop)
          .edge(Graph.START, "a")
          .edge("a", "b")
          .edge("b", "a")
          .compile
      )
      assert.deepStrictEqual(tagsOf(problems), ["NoPathToEnd", "NoPathToEnd"])
      assert.deepStrictEqual(problems.map((p) => (p as Errors.NoPathToEnd).node).sort(), ["a", "b"])
    }))

  it.effect("a cycle with a conditional exit compiles", () =>
    Effect.gen(function*() {
      const g = yield* Graph.make({ id: "g", state: S })
        .node("a", {}, noop)
        .node("b", {}, noop)
        .edge(Graph.START, "a")
        .edge("a", "b")
        .route("b", (s) => s.count > 3 ? Graph.END : "a", ["a", Graph.END])
        .compile
      assert.strictEqual(g.nodes.size, 2)
    }))

  it.effect("the same static edge declared twice is a DuplicateEdge error", () =>
    Effect.gen(function*() {
      const problems = yield* problemsOf(
        Graph.make({ id: "g", state: S })
          .node("a", {}, noop)
          .edge(Graph.START, "a")
          .edge("a", Graph.END)
          .edge("a", Graph.END)
          .compile
      )
      assert.strictEqual(problems.length, 1)
      assert.instanceOf(problems[0], Errors.DuplicateEdge)
      const p = problems[0] as Errors.DuplicateEdge
      assert.strictEqual(p.from, "a")
      assert.strictEqual(p.to, Graph.END)
    }))

  it.effect("two nodes with the same name are a DuplicateNode error", () =>
    Effect.gen(function*() {
      const problems = yield* problemsOf(
        Graph.make({ id: "g", state: S })
          .node("a", {}, noop)
          .node("a", {}, noop)
          .edge(Graph.START, "a")
          .edge("a", Graph.END)
          .compile
      )
      assert.strictEqual(problems.length, 1)
      assert.instanceOf(problems[0], Errors.DuplicateNode)
      assert.strictEqual((problems[0] as Errors.DuplicateNode).node, "a")
    }))

  it.effect("a fan-out to an unknown node is an UnknownFanOutTarget error", () =>
    Effect.gen(function*() {
      const problems = yield* problemsOf(
        Graph.make({ id: "g", state: S })
          .node("a", {}, noop)
          .edge(Graph.START, "a")
          .edge("a", Graph.END)
          .fanOut("a", "workers" as never, (s) => s.notes)
          .compile
      )
      assert.strictEqual(problems.length, 1)
      assert.instanceOf(problems[0], Errors.UnknownFanOutTarget)
      const p = problems[0] as Errors.UnknownFanOutTarget
      assert.strictEqual(p.from, "a")
      assert.strictEqual(p.to, "workers")
    }))

  it.effect("a graph without nodes is an EmptyGraph error", () =>
    Effect.gen(function*() {
      const problems = yield* problemsOf(Graph.make({ id: "g", state: S }).compile)
      assert.isAbove(problems.length, 0)
      assert.isTrue(problems.some((p) => p instanceof Errors.EmptyGraph))
      assert.isTrue(problems.every((p) => p._tag === "EmptyGraph"))
    }))

  it.effect("a graph with no edge from START is an EmptyGraph error", () =>
    Effect.gen(function*() {
      const problems = yield* problemsOf(
        Graph.make({ id: "g", state: S })
          .node("a", {}, noop)
          .edge("a", Graph.END)
          .compile
      )
      assert.deepStrictEqual(tagsOf(problems), ["EmptyGraph"])
      assert.include(problems[0]!.message, "START")
    }))

  it.effect("reports every problem at once, each as its own typed error", () =>
    Effect.gen(function*() {
      const error = yield* Effect.flip(
        Graph.make({ id: "many", state: S })
          .node("a", {}, noop)
          .node("a", {}, noop)
          .node("b", {}, noop)
          .edge(Graph.START, "a")
          .edge("a", "b")
          .edge("a", "b")
          .edge("b", Graph.END)
          .edge("b", "ghost" as never)
          .fanOut("a", "phantom" as never, (s) => s.notes)
          .compile
      )
      assert.instanceOf(error, Errors.GraphCompileError)
      assert.strictEqual(error.graphId, "many")
      assert.deepStrictEqual(tagsOf(error.problems), ["DuplicateEdge", "DuplicateNode", "UnknownFanOutTarget", "UnknownNode"])
      for (const p of error.problems) assert.include(error.message, p.message)
    }))

  it.effect("reports an unreachable node and a dead end of the same graph together", () =>
    Effect.gen(function*() {
      const problems = yield* problemsOf(
        Graph.make({ id: "g", state: S })
          .node("a", {}, noop)
          .node("dead", {}, noop)
          .node("island", {}, noop)
          .edge(Graph.START, "a")
          .edge("a", Graph.END)
          .edge("a", "dead")
          .edge("island", Graph.END)
          .compile
      )
      assert.deepStrictEqual(tagsOf(problems), ["NoPathToEnd", "UnreachableNode"])
    }))

  it.effect("a join from an unknown node is an UnknownNode error", () =>
    Effect.gen(function*() {
      const problems = yield* problemsOf(
        Graph.make({ id: "g", state: S })
          .node("a", {}, noop)
          .node("c", {}, noop)
          .edge(Graph.START, "a")
          .edge(["a", "zzz" as never], "c")
          .edge("c", Graph.END)
          .compile
      )
      assert.deepStrictEqual(tagsOf(problems), ["UnknownNode"])
      assert.strictEqual((problems[0] as Errors.UnknownNode).node, "zzz")
    }))
})

describe("Graph hash", () => {
  const Base = {
    topic: State.channel(Schema.String),
    notes: State.list(Schema.String),
    count: State.counter()
  }

  interface Variant {
    readonly state?: State.StateDef<any>
    readonly extraNode?: boolean
    readonly extraEdge?: boolean
    readonly impl?: "one" | "two"
    readonly policy?: boolean
  }

  const build = (v: Variant = {}) => {
    const state: State.StateDef<typeof Base> = v.state ?? State.define(Base)
    let b = Graph.make({ id: "hashed", state })
      .node("a", v.policy === true ? { policy: { timeout: "5 seconds", retry: { maxAttempts: 4 } } } : {}, () =>
        v.impl === "two" ? Effect.succeed({ topic: "two" }) : Effect.succeed({ topic: "one" }))
      .node("b", { writes: ["notes"] }, () => Effect.succeed({ notes: ["b"] }))
      .node("c", {}, noop)
      .edge(Graph.START, "a")
      .edge("a", "b")
      .edge("b", Graph.END)
      .route("a", (s) => s.count > 1 ? "c" : Graph.END, ["c", Graph.END])
      .edge("c", Graph.END)
    if (v.extraEdge === true) b = b.edge("a", "c")
    if (v.extraNode === true) {
      return b.node("d", {}, noop).edge("c", "d").edge("d", Graph.END).compile
    }
    return b.compile
  }

  it.effect("is a sha256 hex digest", () =>
    Effect.gen(function*() {
      const g = yield* build()
      assert.match(g.hash, /^[0-9a-f]{64}$/)
    }))

  it.effect("is the same for two separately built identical graphs", () =>
    Effect.gen(function*() {
      const one = yield* build()
      const two = yield* build()
      assert.notStrictEqual(one, two)
      assert.strictEqual(one.hash, two.hash)
    }))

  it.effect("is the same in another process", () =>
    Effect.gen(function*() {
      const source = `
        import { Effect, Schema } from "effect"
        import * as Graph from ${JSON.stringify(new URL("../src/Graph.ts", import.meta.url).pathname)}
        import * as State from ${JSON.stringify(new URL("../src/State.ts", import.meta.url).pathname)}
        const S = State.define({ topic: State.channel(Schema.String), notes: State.list(Schema.String), count: State.counter() })
        const g = Effect.runSync(
          Graph.make({ id: "cross", state: S })
            .node("a", { writes: ["notes"] }, () => Effect.succeed({}))
            .node("b", { input: Schema.Number }, () => Effect.succeed({}))
            .edge(Graph.START, "a")
            .fanOut("a", "b", (s) => s.notes.map((n) => n.length))
            .route("b", (s) => s.count > 1 ? Graph.END : "a", ["a", Graph.END])
            .compile
        )
        process.stdout.write(g.hash)
      `
      const child = yield* Effect.tryPromise(() =>
        promisify(execFile)(process.execPath, ["--import", "tsx", "--input-type=module", "-e", source], {
          cwd: new URL("..", import.meta.url).pathname
        })
      )
      const here = yield* Graph.make({ id: "cross", state: S })
        .node("a", { writes: ["notes"] }, () => Effect.succeed({}))
        .node("b", { input: Schema.Number }, () => Effect.succeed({}))
        .edge(Graph.START, "a")
        .fanOut("a", "b", (s) => s.notes.map((n) => n.length))
        .route("b", (s) => s.count > 1 ? Graph.END : "a", ["a", Graph.END])
        .compile
      assert.strictEqual(child.stdout.trim(), here.hash)
    }))

  it.effect("changes when an edge is added", () =>
    Effect.gen(function*() {
      const base = yield* build()
      const other = yield* build({ extraEdge: true })
      assert.notStrictEqual(base.hash, other.hash)
    }))

  it.effect("changes when an edge's target changes", () =>
    Effect.gen(function*() {
      const mk = (to: "b" | "c") =>
        Graph.make({ id: "h", state: S })
          .node("a", {}, noop)
          .node("b", {}, noop)
          .node("c", {}, noop)
          .edge(Graph.START, "a")
          .edge("a", to)
          .edge("a", to === "b" ? "c" : "b")
          .edge("b", Graph.END)
          .edge("c", Graph.END)
          .compile
      const one = yield* mk("b")
      const two = yield* mk("c")
      assert.notStrictEqual(one.hash, two.hash)
    }))

  it.effect("changes when a node is added", () =>
    Effect.gen(function*() {
      const base = yield* build()
      const other = yield* build({ extraNode: true })
      assert.notStrictEqual(base.hash, other.hash)
    }))

  it.effect("changes when a state key is added", () =>
    Effect.gen(function*() {
      const base = yield* build()
      const other = yield* build({ state: State.define({ ...Base, extra: State.channel(Schema.Boolean) }) })
      assert.notStrictEqual(base.hash, other.hash)
    }))

  it.effect("changes when a state key's schema changes", () =>
    Effect.gen(function*() {
      const base = yield* build()
      const other = yield* build({ state: State.define({ ...Base, topic: State.channel(Schema.Number) }) as State.StateDef<any> })
      assert.notStrictEqual(base.hash, other.hash)
    }))

  it.effect("changes when a key's reducer changes", () =>
    Effect.gen(function*() {
      const base = yield* build()
      const lastCount = yield* build({
        state: State.define({ ...Base, count: State.channel(Schema.Number, { initial: () => 0 }) })
      })
      const customCount = yield* build({
        state: State.define({
          ...Base,
          count: State.channel(Schema.Number, { reducer: State.custom("max", Math.max), initial: () => 0 })
        })
      })
      const otherCustom = yield* build({
        state: State.define({
          ...Base,
          count: State.channel(Schema.Number, { reducer: State.custom("min", Math.min), initial: () => 0 })
        })
      })
      const hashes = new Set([base.hash, lastCount.hash, customCount.hash, otherCustom.hash])
      assert.strictEqual(hashes.size, 4)
    }))

  it.effect("does not change when a node's implementation changes", () =>
    Effect.gen(function*() {
      const one = yield* build({ impl: "one" })
      const two = yield* build({ impl: "two" })
      assert.strictEqual(one.hash, two.hash)
    }))

  it.effect("does not change when a node's policy changes", () =>
    Effect.gen(function*() {
      const plain = yield* build()
      const withPolicy = yield* build({ policy: true })
      assert.strictEqual(plain.hash, withPolicy.hash)
    }))
})
