/**
 * A run's budgets: the stored form of budget options, the node budgets in force, the tracker of
 * spending and reservations shared by a run's steps and subgraphs, one attempt's reservations,
 * and the threshold events and exceeded check after a step.
 */
import { BudgetExceededError } from "../Errors.js"
import type { CompiledGraph } from "../Graph.js"
import type { Spending } from "../Node.js"
import type { Budget, RunConfig, Spend, Usage } from "../services/RunStore.js"
import type { Draft, Stamp } from "./Position.js"

/** A budget as given in options: either limit may be left out. */
export interface BudgetOption {
  readonly tokens?: number
  readonly usd?: number
}

/** The stored budget of a budget option (a missing limit is `null`: unlimited). */
export const budgetOf = (b: BudgetOption | undefined): Budget => ({
  tokens: b?.tokens ?? null,
  usd: b?.usd ?? null
})

/** Nothing spent yet. */
export const emptyUsage: Usage = { total: { tokens: 0, usd: 0 }, byNode: {} }

/** The budget of a node: the run's `nodeBudgets` entry, else the node's declared `budget`. */
export const nodeBudgetLookup = (graph: CompiledGraph, config: RunConfig) => (node: string): Budget | undefined => {
  const fromRun = config.nodeBudgets[node]
  if (fromRun !== undefined) return fromRun
  const spec = graph.nodes.get(node)?.budget
  return spec === undefined ? undefined : budgetOf(spec)
}

/** Tracks a run's spending against its budgets, shared by its steps and subgraphs. */
export class SpendTracker {
  reserved = { tokens: 0, usd: 0 }
  constructor(
    readonly runId: string,
    public usage: Usage,
    readonly config: RunConfig,
    readonly nodeBudget: (node: string) => Budget | undefined
  ) {}

  /** Fails when the estimate does not fit the run's or the node's remaining budget. */
  reserve(node: string, estimate: Spending): BudgetExceededError | undefined {
    const tokens = estimate.tokens ?? 0
    const usd = estimate.usd ?? 0
    const run = this.config.budget
    const check = (scope: string, limit: number | null | undefined, used: number, want: number, resource: "tokens" | "usd") =>
      limit !== null && limit !== undefined && used + want > limit
        ? new BudgetExceededError({ runId: this.runId, scope, resource, limit, requested: used + want })
        : undefined
    const byNode = this.usage.byNode[node] ?? { tokens: 0, usd: 0 }
    const nb = this.nodeBudget(node)
    const error = check("run", run.tokens, this.usage.total.tokens + this.reserved.tokens, tokens, "tokens") ??
      check("run", run.usd, this.usage.total.usd + this.reserved.usd, usd, "usd") ??
      check(`node ${node}`, nb?.tokens, byNode.tokens, tokens, "tokens") ??
      check(`node ${node}`, nb?.usd, byNode.usd, usd, "usd")
    if (error === undefined) {
      this.reserved = { tokens: this.reserved.tokens + tokens, usd: this.reserved.usd + usd }
    }
    return error
  }

  /** Gives back reserved spending. */
  release(spending: Spend) {
    this.reserved = {
      tokens: Math.max(0, this.reserved.tokens - spending.tokens),
      usd: Math.max(0, this.reserved.usd - spending.usd)
    }
  }

  /** Adds actual spending of `node` to the run's usage. */
  record(node: string, tokens: number, usd: number) {
    const byNode = this.usage.byNode[node] ?? { tokens: 0, usd: 0 }
    this.usage = {
      total: { tokens: this.usage.total.tokens + tokens, usd: this.usage.total.usd + usd },
      byNode: { ...this.usage.byNode, [node]: { tokens: byNode.tokens + tokens, usd: byNode.usd + usd } }
    }
  }

  /** The run's usage as of now. */
  snapshot(): Usage {
    return this.usage
  }
}

/** The tracker of a run's spending from its stored usage and config. */
export const makeSpendTracker = (
  graph: CompiledGraph,
  run: { readonly runId: string; readonly usage: Usage; readonly config: RunConfig }
) => new SpendTracker(run.runId, run.usage, run.config, nodeBudgetLookup(graph, run.config))

/** What one attempt of a node reserved and has not yet recorded; released when the attempt ends. */
export class AttemptReservation {
  private outstanding = { tokens: 0, usd: 0 }
  constructor(private readonly spend: SpendTracker, private readonly node: string) {}

  /** Reserves `estimate` against the run's and the node's budgets. */
  reserve(estimate: Spending): BudgetExceededError | undefined {
    const error = this.spend.reserve(this.node, estimate)
    if (error !== undefined) return error
    this.outstanding.tokens += estimate.tokens ?? 0
    this.outstanding.usd += estimate.usd ?? 0
    return undefined
  }

  /** Records a call's actual spending, giving back what was reserved for it. */
  record(tokens: number, usd: number) {
    this.release()
    this.spend.record(this.node, tokens, usd)
  }

  /** Gives back what was reserved and not recorded (a failed or finished attempt). */
  release() {
    if (this.outstanding.tokens === 0 && this.outstanding.usd === 0) return
    this.spend.release(this.outstanding)
    this.outstanding = { tokens: 0, usd: 0 }
  }
}

/** The percentages of a limit at which a `BudgetThreshold` event is recorded. */
export const thresholds: ReadonlyArray<number> = [50, 75, 90, 100]

/** The threshold events a step's spending crossed, and the first budget it exhausted. */
export const budgetEvents = (
  spend: SpendTracker,
  stamp: Stamp,
  before: Usage,
  after: Usage
): { events: Array<Draft>; exceeded: BudgetExceededError | undefined } => {
  const events: Array<Draft> = []
  let exceeded: BudgetExceededError | undefined
  const check = (scope: string, resource: "tokens" | "usd", limit: number | null | undefined, from: number, to: number) => {
    if (limit === null || limit === undefined || limit <= 0 || to === from) return
    for (const percent of thresholds) {
      const mark = (limit * percent) / 100
      if (from < mark && to >= mark) {
        events.push(stamp({ _tag: "BudgetThreshold", scope, resource, percent, used: to, limit }))
      }
    }
    if (to >= limit && exceeded === undefined) {
      exceeded = new BudgetExceededError({ runId: spend.runId, scope, resource, limit, requested: to })
    }
  }
  const budget = spend.config.budget
  if (after === before) return { events, exceeded }
  check("run", "tokens", budget.tokens, before.total.tokens, after.total.tokens)
  check("run", "usd", budget.usd, before.total.usd, after.total.usd)
  for (const node of Object.keys(after.byNode)) {
    const limit = spend.nodeBudget(node)
    if (limit === undefined) continue
    const from = before.byNode[node] ?? { tokens: 0, usd: 0 }
    const to = after.byNode[node]!
    check(`node ${node}`, "tokens", limit.tokens, from.tokens, to.tokens)
    check(`node ${node}`, "usd", limit.usd, from.usd, to.usd)
  }
  return { events, exceeded }
}
