/**
 * The agent node kind: an ordinary node that makes one language-model call per attempt, reserving
 * its estimate against the budgets before the call and recording its usage and cost after it.
 */
import { type AiError, LanguageModel, type Prompt } from "@effect/ai"
import { Effect } from "effect"
import type { BudgetExceededError } from "./Errors.js"
import type { NodeContext, Spending } from "./Node.js"

/** A model's prices in USD per million tokens. */
export interface Pricing {
  readonly inputPerMTok: number
  readonly outputPerMTok: number
}

/** How an agent node prompts its model and turns the answer into a state update (or a command). */
export interface Options<S, I, U> {
  /** The model's name as recorded in usage, `ModelCalled` events and spans. */
  readonly model: string
  readonly prompt: (state: S, input: I) => Prompt.RawInput
  readonly pricing: Pricing
  /**
   * Reserved against the run's and the node's budgets before the call, so one call cannot
   * overshoot them far. Without `usd`, the tokens are priced at the higher of the two prices.
   */
  readonly estimate?: Spending
  readonly output: (text: string, state: S, response: LanguageModel.GenerateTextResponse<{}>) => U
}

const perMillion = 1_000_000

const reservationOf = (pricing: Pricing, estimate: Spending | undefined): Spending => {
  const tokens = estimate?.tokens
  const usd = estimate?.usd ??
    (tokens === undefined ? undefined : (tokens * Math.max(pricing.inputPerMTok, pricing.outputPerMTok)) / perMillion)
  return {
    ...(tokens === undefined ? {} : { tokens }),
    ...(usd === undefined ? {} : { usd })
  }
}

/** An agent node's run function, for `Graph.make(...).node(name, spec, Agent.node({ ... }))`. */
export const node = <S, I, U>(options: Options<S, I, U>) => {
  const reservation = reservationOf(options.pricing, options.estimate)
  const { inputPerMTok, outputPerMTok } = options.pricing
  return (ctx: NodeContext<S, I>): Effect.Effect<U, AiError.AiError | BudgetExceededError, LanguageModel.LanguageModel> =>
    Effect.gen(function*() {
      yield* ctx.reserve(reservation)
      const response = yield* LanguageModel.generateText({ prompt: options.prompt(ctx.state, ctx.input) })
      const inputTokens = response.usage.inputTokens ?? 0
      const outputTokens = response.usage.outputTokens ?? 0
      const usd = (inputTokens * inputPerMTok + outputTokens * outputPerMTok) / perMillion
      yield* ctx.recordUsage({ model: options.model, inputTokens, outputTokens, usd })
      yield* Effect.annotateCurrentSpan({
        "gen_ai.usage.input_tokens": inputTokens,
        "gen_ai.usage.output_tokens": outputTokens,
        "fibergraph.usd": usd,
        "gen_ai.response.finish_reason": response.finishReason
      })
      return options.output(response.text, ctx.state, response)
    }).pipe(
      Effect.withSpan("fibergraph.model", {
        attributes: {
          "gen_ai.request.model": options.model,
          "fibergraph.run_id": ctx.runId,
          "fibergraph.graph_id": ctx.graphId,
          "fibergraph.node": ctx.node,
          "fibergraph.step": ctx.step,
          "fibergraph.attempt": ctx.attempt,
          "fibergraph.idempotency_key": ctx.idempotencyKey
        }
      })
    )
}
