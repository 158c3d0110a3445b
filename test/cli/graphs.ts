/**
 * The graph module the command-line tests hand to `--graphs`: the example graphs, and `slow`,
 * whose one node sleeps `millis` (default ten minutes) so a worker is still running it when it is
 * told to stop.
 */
import { Effect, Schema } from "effect"
import { Graph, State } from "../../src/index.js"
import { graphs as examples, layer } from "../../examples/graphs.js"

/** A graph whose only node takes `millis` milliseconds. */
export const slow = Graph.make({
  id: "slow",
  state: State.define({
    millis: State.channel(Schema.Number, { initial: () => 600_000 }),
    done: State.channel(Schema.Boolean, { initial: () => false })
  })
})
  .node("sleep", { reads: ["millis"], writes: ["done"] }, (ctx) => Effect.as(Effect.sleep(ctx.state.millis), { done: true }))
  .edge(Graph.START, "sleep")
  .edge("sleep", Graph.END)
  .compile

/** The example graphs and `slow`. */
export const graphs = [...examples, slow]

/** The services the graphs need (the example module's scripted model). */
export { layer }
