/**
 * `fibergraph submit <graph> --input <json>`: accepts a run into the queue for a worker. The input
 * is the encoded (JSON) form of some of the graph's state keys, decoded key by key against the
 * state schema before anything is written.
 */
import { Args, Command, Options } from "@effect/cli"
import { Console, Effect, Either, type Layer, Option, ParseResult, Schema } from "effect"
import { InputValidationError } from "../Errors.js"
import type { CompiledGraph } from "../Graph.js"
import * as GraphRegistry from "../services/GraphRegistry.js"
import * as Worker from "../Worker.js"
import { integerIn, graphsOption, jsonOption, parseJson, runtimeLayer, storeOption } from "./Common.js"
import * as GraphModule from "./GraphModule.js"
import { printJson } from "./Output.js"

const describeIssues = (error: ParseResult.ParseError) =>
  ParseResult.ArrayFormatter.formatErrorSync(error)
    .map((issue) => issue.path.length === 0 ? issue.message : `${issue.path.join(".")}: ${issue.message}`)
    .join("; ")

/**
 * Decodes a run's input, the encoded form of some state keys, into state values: a non-object, an
 * unknown key or a value its key's schema rejects is an `InputValidationError` naming the key.
 */
export const decodeInput = (
  graph: CompiledGraph,
  input: unknown
): Effect.Effect<Record<string, unknown>, InputValidationError> =>
  Effect.suspend(() => {
    const fail = (detail: string) => Effect.fail(new InputValidationError({ graphId: graph.id, detail }))
    if (typeof input !== "object" || input === null || Array.isArray(input)) {
      return fail(`the input must be a JSON object of state keys, got ${Array.isArray(input) ? "an array" : JSON.stringify(input)}`)
    }
    const channels = graph.state.channels as Record<string, { readonly schema: Schema.Schema<unknown, unknown> }>
    const decoded: Record<string, unknown> = {}
    const problems: Array<string> = []
    for (const [key, value] of Object.entries(input)) {
      const channel = channels[key]
      if (channel === undefined) {
        problems.push(`unknown state key "${key}"; the state has [${graph.state.keys.join(", ")}]`)
        continue
      }
      const result = Schema.decodeUnknownEither(channel.schema)(value)
      if (Either.isLeft(result)) {
        problems.push(`key "${key}": ${describeIssues(result.left)}`)
      } else {
        decoded[key] = result.right
      }
    }
    return problems.length > 0 ? fail(problems.join("; ")) : Effect.succeed(decoded)
  })

/** The graph `graphId` of the module: the given version, or the newest one. */
export const findGraph = (module: GraphModule.GraphModule, graphId: string, version: Option.Option<string>) =>
  Effect.flatMap(GraphRegistry.GraphRegistry, (registry) =>
    Option.match(version, {
      onNone: () => registry.latest(graphId),
      onSome: (v) => registry.get(graphId, v)
    })).pipe(
      Effect.map((entry) => entry.graph),
      Effect.provide(GraphRegistry.layer(module.graphs) as Layer.Layer<GraphRegistry.GraphRegistry>)
    )

/** The `submit` command. */
export const command = Command.make(
  "submit",
  {
    graphId: Args.text({ name: "graph-id" }).pipe(Args.withDescription("the id of a graph in the graph module")),
    input: Options.text("input").pipe(
      Options.withPseudoName("JSON"),
      Options.withDescription("the run's input: a JSON object of state keys, in their encoded (JSON) form"),
      Options.withDefault("{}"),
      Options.mapEffect(parseJson("input"))
    ),
    version: Options.text("graph-version").pipe(
      Options.withPseudoName("VERSION"),
      Options.withDescription(
        "the graph version (default: the newest in the module); not --version, which prints fibergraph's"
      ),
      Options.optional
    ),
    tenant: Options.text("tenant").pipe(Options.withPseudoName("TENANT"), Options.withDescription("the run's tenant (default: default)"), Options.optional),
    idempotencyKey: Options.text("idempotency-key").pipe(
      Options.withPseudoName("KEY"),
      Options.withDescription("a second submit with the same tenant and key returns the first run"),
      Options.optional
    ),
    priority: Options.integer("priority").pipe(
      Options.withPseudoName("N"),
      Options.withDescription("higher runs are claimed first within a tenant (default 0)"),
      Options.optional
    ),
    maxAttempts: Options.integer("max-attempts").pipe(
      Options.withPseudoName("N"),
      Options.withDescription("failed attempts before the job is dead-lettered (default 10)"),
      Options.mapEffect(integerIn("max-attempts", 1)),
      Options.optional
    ),
    graphs: graphsOption,
    store: storeOption,
    json: jsonOption
  },
  (options) =>
    Effect.gen(function*() {
      const module = yield* GraphModule.required(options.graphs)
      const graph = yield* findGraph(module, options.graphId, options.version)
      const input = yield* decodeInput(graph, options.input)
      const submitted = yield* Worker.submit(graph, input, {
        ...Option.match(options.tenant, { onNone: () => ({}), onSome: (tenant) => ({ tenant }) }),
        ...Option.match(options.idempotencyKey, { onNone: () => ({}), onSome: (idempotencyKey) => ({ idempotencyKey }) }),
        ...Option.match(options.priority, { onNone: () => ({}), onSome: (priority) => ({ priority }) }),
        ...Option.match(options.maxAttempts, { onNone: () => ({}), onSome: (maxAttempts) => ({ maxAttempts }) })
      })
      const { created, job, run } = submitted
      if (options.json) {
        return yield* printJson({
          runId: run.runId,
          graphId: run.graphId,
          graphVersion: run.graphVersion,
          tenant: run.tenant,
          status: run.status,
          jobId: job.jobId,
          created
        })
      }
      if (!created) {
        yield* Console.error(`run ${run.runId} already exists for this submission (status ${run.status}); not submitted again`)
      }
      yield* Console.log(run.runId)
    }).pipe(Effect.provide(runtimeLayer(options.store, "check")))
).pipe(Command.withDescription("submit a run of a graph to the queue; a worker runs it; prints the run id"))
