/**
 * A compiled graph used as a node of another: it runs to its end inside the parent node's step,
 * with its input mapped from the parent's state, its output mapped back to a parent update, the
 * parent run's remaining budget, and its node events recorded in the parent's log as `parent/child`.
 */
import { Effect } from "effect"
import { MaxStepsExceededError, NodeFailedError, thrownMessage, UserCodeError } from "./Errors.js"
import type { CompiledGraph } from "./Graph.js"
import { runToEnd } from "./internal/Step.js"
import { type NodeContext, NodeInterrupt } from "./Node.js"
import * as State from "./State.js"

type StateOfGraph<G> = G extends CompiledGraph<infer C, any, any> ? State.StateOf<C> : never

/** How the parent's state becomes the subgraph's input, and the subgraph's final state a parent update. */
export interface Mapping<PS, I, CS, U> {
  readonly input: (state: PS, item: I) => Partial<CS>
  readonly output: (state: CS, parent: PS) => U
}

/**
 * A node implementation that runs `graph` to its end. Use it as `.node("research", { writes }, Subgraph.node(child, mapping))`.
 * An interrupt inside the subgraph parks the parent run; on resume the subgraph runs again from its input
 * and its interrupting node receives the response.
 */
export const node = <G extends CompiledGraph<any, any, any>, PS, I, U>(
  graph: G,
  mapping: Mapping<PS, I, StateOfGraph<G>, U>
) =>
(ctx: NodeContext<PS, I>): Effect.Effect<
  U,
  NodeFailedError | MaxStepsExceededError | UserCodeError | NodeInterrupt,
  G extends CompiledGraph<any, any, infer R> ? R : never
> =>
  Effect.try({
    try: () => State.initial(graph.state, mapping.input(ctx.state, ctx.input) as Record<string, unknown>),
    catch: (cause) =>
      new UserCodeError({ graphId: ctx.graphId, node: ctx.node, function: "input", detail: thrownMessage(cause) })
  }).pipe(Effect.flatMap((state) =>
    Effect.flatMap(
      runToEnd(ctx as NodeContext<unknown, unknown>, graph, state),
      (ended): Effect.Effect<U, NodeFailedError | MaxStepsExceededError | UserCodeError | NodeInterrupt> => {
        switch (ended._tag) {
          case "Completed":
            return Effect.try({
              try: () => mapping.output(ended.state as StateOfGraph<G>, ctx.state),
              catch: (cause) =>
                new UserCodeError({ graphId: ctx.graphId, node: ctx.node, function: "output", detail: thrownMessage(cause) })
            })
          case "Failed":
            return Effect.fail(
              new NodeFailedError({
                runId: ctx.runId,
                node: ctx.node,
                index: ctx.index,
                attempt: ctx.attempt,
                errorTag: ended.tag,
                detail: ended.message
              })
            )
          case "Waiting":
            return Effect.fail(new NodeInterrupt(ended.payload, ended.waitMillis))
          case "MaxStepsExceeded":
            return Effect.fail(new MaxStepsExceededError({ runId: ctx.runId, maxSteps: ended.maxSteps }))
        }
      }
    )
  )) as Effect.Effect<U, NodeFailedError | MaxStepsExceededError | UserCodeError | NodeInterrupt, never>
