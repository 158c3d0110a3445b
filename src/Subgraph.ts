/**
 * A compiled graph used as a node of another: it runs to its end inside the parent node's step,
 * with its input mapped from the parent's state, its output mapped back to a parent update, the
 * parent run's remaining budget, and its node events recorded in the parent's log as `parent/child`.
 */
import { Effect } from "effect"
import { MaxStepsExceededError, NodeFailedError } from "./Errors.js"
import type { CompiledGraph } from "./Graph.js"
import {
  type Env,
  InternalContext,
  type Internals,
  nextPosition,
  type Position,
  runStep,
  startFrontier
} from "./internal/Step.js"
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
  NodeFailedError | MaxStepsExceededError | NodeInterrupt,
  G extends CompiledGraph<any, any, infer R> ? R : never
> =>
  Effect.suspend(() => {
    const internals = (ctx as unknown as { readonly [InternalContext]: Internals })[InternalContext]
    const parent = internals.env
    const env: Env = {
      ...parent,
      graph,
      config: { ...parent.config, interruptBefore: [], interruptAfter: [] },
      prefix: `${parent.prefix}${ctx.node}/`,
      scope: `${parent.scope}${internals.step}.${ctx.index}.`,
      resumeSource: internals.nextResume
    }
    const state = State.initial(graph.state, mapping.input(ctx.state, ctx.input) as Record<string, unknown>)
    const frontier = startFrontier(env, state)
    if (!Array.isArray(frontier)) return Effect.fail(subgraphFailure(ctx, frontier._tag, frontier.message))
    const loop = (pos: Position): Effect.Effect<U, NodeFailedError | MaxStepsExceededError | NodeInterrupt, unknown> =>
      Effect.flatMap(runStep(env, pos, internals.stamp), (outcome) => {
        for (const e of outcome.events) internals.events.push(e)
        switch (outcome._tag) {
          case "Failed":
            return Effect.fail(subgraphFailure(ctx, outcome.error.tag, outcome.error.message))
          case "Waiting": {
            const first = outcome.interrupts.find((i) => i.kind === "node")
            return Effect.fail(new NodeInterrupt(first?.payload, outcome.waitMillis))
          }
          case "Advanced": {
            if (outcome.frontier.length === 0) {
              return Effect.succeed(mapping.output(outcome.state as StateOfGraph<G>, ctx.state))
            }
            if (pos.step + 1 >= env.config.maxSteps) {
              return Effect.fail(new MaxStepsExceededError({ runId: ctx.runId, maxSteps: env.config.maxSteps }))
            }
            return loop(nextPosition(pos, outcome))
          }
        }
      })
    return loop({ step: 0, state, frontier, pending: new Map(), interrupts: [], barriers: {} }) as Effect.Effect<
      U,
      NodeFailedError | MaxStepsExceededError | NodeInterrupt,
      never
    >
  })

const subgraphFailure = (ctx: NodeContext<unknown, unknown>, tag: string, message: string) =>
  new NodeFailedError({ runId: ctx.runId, node: ctx.node, index: ctx.index, attempt: ctx.attempt, errorTag: tag, detail: message })
