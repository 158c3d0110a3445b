/**
 * Graph modules: the file a worker (and `submit`, `runs approve|reject`) loads to know the graphs.
 * A graph module exports `graphs`, an array of compiled graphs or of their compile effects, and
 * optionally `layer`, a Layer providing the services its nodes need (a language model, tools);
 * a default export of either shape works too:
 *
 * ```ts
 * export const graphs = [Graph.make({ id: "count", state }).node(…).compile]
 * export const layer = ScriptedModel.layer(script)
 * ```
 */
import * as FileSystem from "@effect/platform/FileSystem"
import { Effect, Layer, Option, Schema } from "effect"
import * as NodePath from "node:path"
import { pathToFileURL } from "node:url"
import type { CompiledGraph } from "../Graph.js"
import * as GraphRegistry from "../services/GraphRegistry.js"

/** A graph module that cannot be used: missing, failing to load, or exporting something else. */
export class GraphModuleError extends Schema.TaggedError<GraphModuleError>()("GraphModuleError", {
  /** The module path as given (empty when none was given). */
  path: Schema.String,
  reason: Schema.String
}) {
  override get message() {
    return this.path === ""
      ? `no graph module: ${this.reason}`
      : `graph module ${this.path}: ${this.reason}`
  }
}

/** A loaded graph module. */
export interface GraphModule {
  /** The module's absolute path. */
  readonly path: string
  readonly graphs: ReadonlyArray<CompiledGraph>
  /** The services the graphs' nodes need (`Layer.empty` when the module exports none). */
  readonly layer: Layer.Layer<never, unknown>
}

const isRecord = (u: unknown): u is Record<string, unknown> => typeof u === "object" && u !== null

const isCompiledGraph = (u: unknown): u is CompiledGraph =>
  isRecord(u) && typeof u["id"] === "string" && typeof u["version"] === "string" &&
  typeof u["hash"] === "string" && u["nodes"] instanceof Map && isRecord(u["state"])

const describe = (u: unknown) =>
  u === null ? "null" : Array.isArray(u) ? "an array" : typeof u === "object" ? "an object" : `a ${typeof u}`

const errorText = (error: unknown) => error instanceof Error ? error.message : String(error)

/** Imports the module at `path` (relative to the working directory) and checks and compiles its graphs. */
export const load = Effect.fn("GraphModule.load")(function*(path: string) {
  const fail = (reason: string) => new GraphModuleError({ path, reason })
  const absolute = NodePath.resolve(path)
  const exists = yield* FileSystem.FileSystem.pipe(
    Effect.flatMap((fs) => fs.exists(absolute)),
    Effect.orElseSucceed(() => false)
  )
  if (!exists) {
    return yield* fail(`no such file (${absolute}); pass --graphs <module> or set FIBERGRAPH_GRAPHS`)
  }
  const module = yield* Effect.tryPromise({
    try: () => import(pathToFileURL(absolute).href) as Promise<Record<string, unknown>>,
    catch: (error) => fail(`cannot be loaded: ${errorText(error)}`)
  })
  const fromDefault = isRecord(module["default"]) && !Array.isArray(module["default"]) ? module["default"] : undefined
  const exported = module["graphs"] ?? fromDefault?.["graphs"] ??
    (Array.isArray(module["default"]) ? module["default"] : undefined)
  if (exported === undefined) {
    return yield* fail(
      "it exports no `graphs`; export `const graphs = [graph, …]` (compiled graphs or their `.compile` effects)"
    )
  }
  if (!Array.isArray(exported)) return yield* fail(`its \`graphs\` export is ${describe(exported)}, not an array`)
  const graphs: Array<CompiledGraph> = []
  for (const [index, entry] of exported.entries()) {
    const compiled: unknown = Effect.isEffect(entry)
      ? yield* (entry as Effect.Effect<unknown, unknown>).pipe(
        Effect.mapError((error) => fail(`graphs[${index}] does not compile: ${errorText(error)}`))
      )
      : entry
    if (!isCompiledGraph(compiled)) {
      return yield* fail(
        `graphs[${index}] is ${describe(compiled)}, not a compiled graph (Graph.make(…)….compile or its result)`
      )
    }
    const twin = graphs.find((g) => g.id === compiled.id && g.version === compiled.version)
    if (twin !== undefined) return yield* fail(`graph "${compiled.id}" version ${compiled.version} is exported twice`)
    graphs.push(compiled)
  }
  if (graphs.length === 0) return yield* fail("its `graphs` array is empty")
  const layer = module["layer"] ?? fromDefault?.["layer"]
  if (layer !== undefined && !Layer.isLayer(layer)) {
    return yield* fail(`its \`layer\` export is ${describe(layer)}, not a Layer`)
  }
  return {
    path: absolute,
    graphs,
    layer: (layer ?? Layer.empty) as Layer.Layer<never, unknown>
  } satisfies GraphModule
})

/** Loads the module named by `--graphs` / `FIBERGRAPH_GRAPHS`; none is a `GraphModuleError`. */
export const required = (path: Option.Option<string>) =>
  Option.match(path, {
    onNone: () =>
      Effect.fail(
        new GraphModuleError({ path: "", reason: "this command needs the graphs: pass --graphs <module> or set FIBERGRAPH_GRAPHS" })
      ),
    onSome: load
  })

/** A `GraphRegistry` of the module's graphs, whose nodes get the services of the module's layer. */
export const registryLayer = (module: GraphModule): Layer.Layer<GraphRegistry.GraphRegistry, unknown> =>
  (GraphRegistry.layer(module.graphs) as Layer.Layer<GraphRegistry.GraphRegistry, never, never>).pipe(
    Layer.provide(module.layer)
  )
