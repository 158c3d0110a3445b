/**
 * Loading graph modules: the graphs and services of a good module, and a clear
 * `GraphModuleError` for a missing file, a missing or malformed `graphs` export, an entry that is
 * not a graph, a graph that does not compile and a graph exported twice.
 */
import { NodeContext } from "@effect/platform-node"
import { assert, describe, it } from "@effect/vitest"
import { Effect, Option } from "effect"
import { LanguageModel } from "@effect/ai"
import * as GraphModule from "../../src/cli/GraphModule.js"
import { GraphRegistry } from "../../src/services/GraphRegistry.js"

const reasonOf = (path: string) =>
  GraphModule.load(path).pipe(
    Effect.flip,
    Effect.map((error) => {
      assert.strictEqual(error._tag, "GraphModuleError")
      assert.strictEqual(error.path, path)
      return error.reason
    }),
    Effect.provide(NodeContext.layer)
  )

describe("GraphModule", () => {
  it.effect("loads the graphs (compiling their effects) and the services their nodes need", () =>
    Effect.gen(function*() {
      const module = yield* GraphModule.load("test/cli/graphs.ts")
      assert.deepStrictEqual(module.graphs.map((g) => `${g.id}@${g.version}`), ["research@1", "count@1", "approval@1", "slow@1"])
      assert.isTrue(module.path.endsWith("/test/cli/graphs.ts"))
      const entry = yield* Effect.flatMap(GraphRegistry, (registry) => registry.latest("research")).pipe(
        Effect.provide(GraphModule.registryLayer(module))
      )
      assert.isTrue(Option.isSome(yield* Effect.serviceOption(LanguageModel.LanguageModel).pipe(Effect.provide(entry.context))))
    }).pipe(Effect.provide(NodeContext.layer)))

  it.effect("a missing file, or no module at all, is a usage error that says how to name one", () =>
    Effect.gen(function*() {
      assert.include(yield* reasonOf("test/cli/fixtures/nope.ts"), "no such file")
      const none = yield* Effect.flip(GraphModule.required(Option.none()))
      assert.include(none.message, "pass --graphs <module> or set FIBERGRAPH_GRAPHS")
    }).pipe(Effect.provide(NodeContext.layer)))

  it.effect("a module must export an array of compiled graphs (or their compile effects), each once", () =>
    Effect.gen(function*() {
      assert.include(yield* reasonOf("test/cli/fixtures/no-graphs.ts"), "it exports no `graphs`")
      assert.include(yield* reasonOf("test/cli/fixtures/not-array.ts"), "its `graphs` export is an object, not an array")
      assert.include(yield* reasonOf("test/cli/fixtures/bad-entry.ts"), "graphs[1] is an object, not a compiled graph")
      const compile = yield* reasonOf("test/cli/fixtures/bad-compile.ts")
      assert.include(compile, "graphs[0] does not compile")
      assert.include(compile, "\"orphan\" is unreachable")
      assert.include(yield* reasonOf("test/cli/fixtures/default-export.ts"), "graph \"count\" version 1 is exported twice")
    }))
})
