/**
 * The context a node receives on each attempt: its state view, identity, events, interrupts and
 * budget reservations, plus the internals that built-in node kinds (subgraphs) run steps with.
 */
import { Duration, Effect } from "effect"
import { type HumanResponse, type ModelUsage, type NodeContext, NodeInterrupt, type Spending } from "../Node.js"
import { AttemptReservation } from "./Budget.js"
import type { Draft, Entry, Env, Stamp } from "./Position.js"

/** What a node context carries for built-in node kinds (subgraphs) that run steps themselves. */
export const InternalContext: unique symbol = Symbol.for("fibergraph/InternalContext")

/** The internals behind a node context. */
export interface Internals {
  readonly env: Env
  readonly step: number
  readonly stamp: Stamp
  readonly events: Array<Draft>
  readonly nextResume: () => HumanResponse | undefined
  /** Journal indices of calls whose usage this node instance already counted (across its attempts). */
  readonly counted: Set<number>
}

/** The internals of a node context the runtime built. */
export const internalsOf = (ctx: NodeContext<unknown, unknown>): Internals =>
  (ctx as unknown as { readonly [InternalContext]: Internals })[InternalContext]

/** What the attempts of one node instance share. */
export interface InstanceScope {
  readonly env: Env
  readonly entry: Entry
  /** The node's name in events (with its subgraph prefix). */
  readonly name: string
  readonly step: number
  readonly snapshot: Record<string, unknown>
  readonly idempotencyKey: string
  readonly stamp: Stamp
  readonly events: Array<Draft>
  readonly nextResume: () => HumanResponse | undefined
  interruptCalls: number
  /** Journal indices whose usage was counted; made on first use. */
  counted?: Set<number>
}

/** The view of `state` a node declared it reads (all of it when it declared none). */
export const project = (state: Record<string, unknown>, reads: ReadonlyArray<string> | undefined) => {
  if (reads === undefined) return state
  const view: Record<string, unknown> = {}
  for (const key of reads) view[key] = state[key]
  return view
}

/** The context of one attempt; its methods are created on first use, so an attempt that needs none allocates none. */
export class AttemptContext implements NodeContext<Record<string, unknown>, unknown> {
  private reservation: AttemptReservation | undefined
  constructor(private readonly scope: InstanceScope, readonly attempt: number) {}
  get [InternalContext](): Internals {
    const { env, events, nextResume, stamp, step } = this.scope
    return { env, step, stamp, events, nextResume, counted: this.scope.counted ??= new Set() }
  }
  get state() {
    return this.scope.snapshot
  }
  get input() {
    return this.scope.entry.input
  }
  get runId() {
    return this.scope.env.runId
  }
  get graphId() {
    return this.scope.env.graph.id
  }
  get node() {
    return this.scope.entry.node
  }
  get index() {
    return this.scope.entry.index
  }
  get step() {
    return this.scope.step
  }
  get idempotencyKey() {
    return this.scope.idempotencyKey
  }
  get emit() {
    const { entry, events, name, stamp } = this.scope
    return (eventName: string, data?: unknown) =>
      Effect.sync(() => {
        events.push(stamp({ _tag: "Custom", node: name, index: entry.index, name: eventName, data: data ?? null }))
      })
  }
  get interrupt() {
    const scope = this.scope
    return (payload: unknown, options?: { readonly timeout?: Duration.DurationInput }) =>
      Effect.suspend(() => {
        const response = scope.nextResume()
        if (response !== undefined) return Effect.succeed(response)
        return Effect.fail(
          new NodeInterrupt(payload, options?.timeout === undefined ? undefined : Duration.toMillis(options.timeout))
        )
      })
  }
  get reserve() {
    return (estimate: Spending) =>
      Effect.suspend(() => {
        const error = this.reservations().reserve(estimate)
        return error === undefined ? Effect.void : Effect.fail(error)
      })
  }
  get recordUsage() {
    const { entry, events, name, stamp } = this.scope
    return (usage: ModelUsage) =>
      Effect.sync(() => {
        this.reservations().record(usage.inputTokens + usage.outputTokens, usage.usd)
        events.push(stamp({
          _tag: "ModelCalled",
          node: name,
          index: entry.index,
          model: usage.model,
          inputTokens: usage.inputTokens,
          outputTokens: usage.outputTokens,
          usd: usage.usd,
          ...(usage.call === undefined ? {} : { call: usage.call }),
          ...(usage.latencyMs === undefined ? {} : { latencyMs: usage.latencyMs }),
          ...(usage.finishReason === undefined ? {} : { finishReason: usage.finishReason }),
          ...(usage.replayed === undefined ? {} : { replayed: usage.replayed })
        }))
      })
  }
  /** Gives back what this attempt reserved and did not record (a failed or finished attempt). */
  releaseReservation() {
    this.reservation?.release()
  }
  private reservations() {
    const { entry, env } = this.scope
    return this.reservation ??= new AttemptReservation(env.spend, env.prefix + entry.node)
  }
}
