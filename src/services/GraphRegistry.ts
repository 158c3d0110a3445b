/**
 * The `GraphRegistry`: graph id and version to compiled graph, so a worker can run any job. Each
 * entry carries the services its nodes need, captured when the registry is built.
 */
import { Context, Effect, Layer, Schema } from "effect"
import type { CompiledGraph } from "../Graph.js"

/** No graph with this id (and version) is registered in this process. */
export class GraphNotRegisteredError extends Schema.TaggedError<GraphNotRegisteredError>()("GraphNotRegisteredError", {
  graphId: Schema.String,
  version: Schema.NullOr(Schema.String),
  registered: Schema.Array(Schema.String)
}) {
  override get message() {
    return `graph "${this.graphId}"${this.version === null ? "" : ` version ${this.version}`} is not registered here ` +
      `(registered: ${this.registered.length === 0 ? "none" : this.registered.join(", ")}); register it in the worker's graph module`
  }
}

/** A registered graph with the services its nodes need. */
export interface Entry {
  readonly graph: CompiledGraph
  readonly context: Context.Context<never>
}

/** The port. */
export class GraphRegistry extends Context.Tag("fibergraph/GraphRegistry")<GraphRegistry, {
  /** The graph of a stored run: by id and version. */
  readonly get: (graphId: string, version: string) => Effect.Effect<Entry, GraphNotRegisteredError>
  /** The newest registered version of a graph (for submitting new runs). */
  readonly latest: (graphId: string) => Effect.Effect<Entry, GraphNotRegisteredError>
  readonly list: Effect.Effect<ReadonlyArray<{ readonly graphId: string; readonly version: string; readonly hash: string }>>
}>() {}

const versionOrder = (a: string, b: string) => {
  const na = Number(a)
  const nb = Number(b)
  return Number.isFinite(na) && Number.isFinite(nb) ? na - nb : a.localeCompare(b)
}

/** A registry of the given graphs; the services their nodes need come from the layer's context. */
export const layer = <const Graphs extends ReadonlyArray<CompiledGraph<any, any, any>>>(
  graphs: Graphs
): Layer.Layer<GraphRegistry, never, Graphs[number] extends CompiledGraph<any, any, infer R> ? R : never> =>
  Layer.effect(
    GraphRegistry,
    Effect.map(Effect.context<never>(), (context) => {
      const entries = new Map<string, Entry>()
      for (const graph of graphs) entries.set(`${graph.id}@${graph.version}`, { graph, context })
      const names = () => [...entries.keys()].sort()
      const missing = (graphId: string, version: string | null) =>
        new GraphNotRegisteredError({ graphId, version, registered: names() })
      return GraphRegistry.of({
        get: (graphId, version) => {
          const entry = entries.get(`${graphId}@${version}`)
          return entry === undefined ? Effect.fail(missing(graphId, version)) : Effect.succeed(entry)
        },
        latest: (graphId) => {
          const versions = [...entries.values()].filter((e) => e.graph.id === graphId)
            .sort((a, b) => versionOrder(b.graph.version, a.graph.version))
          return versions[0] === undefined ? Effect.fail(missing(graphId, null)) : Effect.succeed(versions[0])
        },
        list: Effect.sync(() =>
          [...entries.values()].map(({ graph }) => ({ graphId: graph.id, version: graph.version, hash: graph.hash }))
        )
      })
    })
  ) as Layer.Layer<GraphRegistry, never, Graphs[number] extends CompiledGraph<any, any, infer R> ? R : never>
