/**
 * One superstep: run the frontier's node instances concurrently against one snapshot, apply
 * each node's policy, validate and merge the updates in a deterministic order, and route.
 * Nothing here touches the store; `Drive.ts` commits what a step produces.
 */
import { Cause, Chunk, Clock, Duration, Effect, Exit, Option, Schedule, Schema } from "effect"
import type { CircuitBreakers } from "../CircuitBreaker.js"
import {
  BudgetExceededError,
  NodeFailedError,
  NodeTimeoutError,
  RoutingError,
  StateValidationError,
  WritePermissionError
} from "../Errors.js"
import type { RunEvent } from "../Events.js"
import type { CompiledGraph, CompiledNode } from "../Graph.js"
import { END } from "../Graph.js"
import {
  type HumanResponse,
  isCommand,
  type ModelUsage,
  type NodeContext,
  NodeInterrupt,
  retrySchedule,
  type Spending
} from "../Node.js"
import type { Budget, Interrupt, RunConfig, Spend, Usage } from "../services/RunStore.js"
import * as State from "../State.js"

/** A node instance of a step's frontier, with its decoded input. */
export interface Entry {
  readonly node: string
  readonly index: number
  readonly input: unknown
}

/** An event under construction: the sequence number is stamped when it is committed. */
export type Draft = { -readonly [K in keyof RunEvent]: RunEvent[K] } & { seq: number }

/** Builds a draft event of a run. */
export type Stamp = <E extends { readonly _tag: RunEvent["_tag"] }>(body: E) => Draft

/** What a run's steps share: the graph, the run's identity and config, its clock, breakers and budget. */
export interface Env {
  readonly graph: CompiledGraph
  readonly runId: string
  readonly config: RunConfig
  readonly clock: Clock.Clock
  readonly breakers: CircuitBreakers["Type"]
  readonly spend: SpendTracker
  /** Prefix of node names in events (a subgraph's nodes appear as `parent/child`). */
  readonly prefix: string
  /** Prefix of the step in idempotency keys (a subgraph's steps nest in its parent's). */
  readonly scope: string
  /** Where `interrupt` takes responses from, when a subgraph inherits its parent node's. */
  readonly resumeSource: (() => HumanResponse | undefined) | undefined
}

/** What a node context carries for built-in node kinds (subgraphs) that run steps themselves. */
export const InternalContext: unique symbol = Symbol.for("fibergraph/InternalContext")

/** The internals behind a node context. */
export interface Internals {
  readonly env: Env
  readonly step: number
  readonly stamp: Stamp
  readonly events: Array<Draft>
  readonly nextResume: () => HumanResponse | undefined
}

/** The position a step starts from. */
export interface Position {
  readonly step: number
  readonly state: Record<string, unknown>
  readonly frontier: ReadonlyArray<Entry>
  /** Updates of nodes that already completed in this (waiting) step, by entry key. */
  readonly pending: ReadonlyMap<string, Record<string, unknown>>
  readonly interrupts: ReadonlyArray<Interrupt>
  readonly barriers: Readonly<Record<string, ReadonlyArray<string>>>
}

/** How a step ended. */
export type StepOutcome =
  | {
    readonly _tag: "Advanced"
    readonly events: Array<Draft>
    readonly state: Record<string, unknown>
    readonly frontier: ReadonlyArray<Entry>
    readonly barriers: Record<string, ReadonlyArray<string>>
    readonly executed: ReadonlyArray<string>
  }
  | {
    readonly _tag: "Waiting"
    readonly events: Array<Draft>
    readonly pending: ReadonlyMap<string, Record<string, unknown>>
    readonly interrupts: ReadonlyArray<Interrupt>
    readonly waitMillis: number | undefined
  }
  | { readonly _tag: "Failed"; readonly events: Array<Draft>; readonly error: FailureInfo }

/** Why a run failed, as stored on the run. */
export interface FailureInfo {
  readonly tag: string
  readonly message: string
  readonly error: unknown
}

/** The key of a frontier entry. */
export const entryKey = (node: string, index: number) => `${node}#${index}`

/** Tracks a run's spending against its budgets, shared by its steps and subgraphs. */
export class SpendTracker {
  reserved = { tokens: 0, usd: 0 }
  constructor(
    readonly runId: string,
    public usage: { total: Spend; byNode: Record<string, Spend> },
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

  release(spending: { tokens: number; usd: number }) {
    this.reserved = {
      tokens: Math.max(0, this.reserved.tokens - spending.tokens),
      usd: Math.max(0, this.reserved.usd - spending.usd)
    }
  }

  record(node: string, tokens: number, usd: number) {
    const byNode = this.usage.byNode[node] ?? { tokens: 0, usd: 0 }
    this.usage = {
      total: { tokens: this.usage.total.tokens + tokens, usd: this.usage.total.usd + usd },
      byNode: { ...this.usage.byNode, [node]: { tokens: byNode.tokens + tokens, usd: byNode.usd + usd } }
    }
  }

  snapshot(): Usage {
    return this.usage
  }
}

type EntryResult =
  | { readonly _tag: "Done"; readonly entry: Entry; readonly events: Array<Draft>; readonly update: Record<string, unknown>; readonly goto: ReadonlyArray<string> | undefined; readonly sends: ReadonlyArray<{ readonly node: string; readonly input: unknown }> }
  | { readonly _tag: "Interrupted"; readonly entry: Entry; readonly events: Array<Draft>; readonly payload: unknown; readonly timeoutMillis: number | undefined; readonly resumes: ReadonlyArray<HumanResponse> }
  | { readonly _tag: "Failed"; readonly entry: Entry; readonly events: Array<Draft>; readonly error: FailureInfo }

const finalTags = new Set([
  "StateValidationError",
  "WritePermissionError",
  "RoutingError",
  "BudgetExceededError"
])

const defaultRetryable = (error: unknown) =>
  !(typeof error === "object" && error !== null && "_tag" in error && finalTags.has(String(error._tag)))

const describe = (error: unknown): { tag: string; message: string } => {
  if (typeof error === "object" && error !== null) {
    const tag = "_tag" in error ? String(error._tag) : error instanceof Error ? error.name : "Error"
    const message = error instanceof Error || "message" in error ? String((error as { message: unknown }).message) : JSON.stringify(error)
    return { tag, message: message === "" ? tag : message }
  }
  return { tag: "Error", message: String(error) }
}

/** Checks a node's update against its declared writes and the state schema. */
const validateUpdate = (
  graph: CompiledGraph,
  node: CompiledNode,
  update: unknown
): Record<string, unknown> | StateValidationError | WritePermissionError => {
  if (update === undefined || update === null) return {}
  if (typeof update !== "object" || Array.isArray(update)) {
    return new StateValidationError({
      graphId: graph.id,
      node: node.name,
      key: "<update>",
      detail: `a node must return an object of state keys (or a command), got ${Array.isArray(update) ? "an array" : typeof update}`
    })
  }
  const record = update as Record<string, unknown>
  for (const key in record) {
    const validate = graph.state.validators[key]
    if (validate === undefined || (node.writes !== undefined && !node.writes.has(key))) {
      return new WritePermissionError({
        graphId: graph.id,
        node: node.name,
        key,
        allowed: node.writes === undefined ? graph.state.keys : [...node.writes]
      })
    }
    const value = record[key]
    if (value === undefined) continue
    const problem = validate(value)
    if (problem !== undefined) return new StateValidationError({ graphId: graph.id, node: node.name, key, detail: problem })
  }
  return record
}

const project = (state: Record<string, unknown>, reads: ReadonlyArray<string> | undefined) => {
  if (reads === undefined) return state
  const view: Record<string, unknown> = {}
  for (const key of reads) view[key] = state[key]
  return view
}

/** What the attempts of one node instance share. */
interface EntryScope {
  readonly env: Env
  readonly entry: Entry
  readonly name: string
  readonly step: number
  readonly snapshot: Record<string, unknown>
  readonly idempotencyKey: string
  readonly stamp: Stamp
  readonly events: Array<Draft>
  readonly nextResume: () => HumanResponse | undefined
  interruptCalls: number
}

/** The context of one attempt; its methods are created on first use, so an attempt that needs none allocates none. */
class AttemptContext implements NodeContext<Record<string, unknown>, unknown> {
  private outstanding = { tokens: 0, usd: 0 }
  constructor(private readonly scope: EntryScope, readonly attempt: number) {}
  get [InternalContext](): Internals {
    const { env, events, nextResume, stamp, step } = this.scope
    return { env, step, stamp, events, nextResume }
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
    const { entry, env } = this.scope
    return (estimate: Spending) =>
      Effect.suspend(() => {
        const error = env.spend.reserve(env.prefix + entry.node, estimate)
        if (error !== undefined) return Effect.fail(error)
        this.outstanding.tokens += estimate.tokens ?? 0
        this.outstanding.usd += estimate.usd ?? 0
        return Effect.void
      })
  }
  get recordUsage() {
    const { entry, env, events, name, stamp } = this.scope
    return (usage: ModelUsage) =>
      Effect.sync(() => {
        this.releaseReservation()
        env.spend.record(env.prefix + entry.node, usage.inputTokens + usage.outputTokens, usage.usd)
        events.push(stamp({
          _tag: "ModelCalled",
          node: name,
          index: entry.index,
          model: usage.model,
          inputTokens: usage.inputTokens,
          outputTokens: usage.outputTokens,
          usd: usage.usd
        }))
      })
  }
  /** Gives back what this attempt reserved and did not record (a failed or finished attempt). */
  releaseReservation() {
    if (this.outstanding.tokens === 0 && this.outstanding.usd === 0) return
    this.scope.env.spend.release(this.outstanding)
    this.outstanding = { tokens: 0, usd: 0 }
  }
}

const runEntry = (
  env: Env,
  pos: Position,
  entry: Entry,
  stamp: Stamp
): Effect.Effect<EntryResult, never, unknown> => {
  const graph = env.graph
  const node = graph.nodes.get(entry.node)!
  const name = env.prefix + entry.node
  const events: Array<Draft> = [stamp({ _tag: "NodeStarted", node: name, index: entry.index })]
  const waiting = pos.interrupts.find((i) => i.kind === "node" && i.node === entry.node && i.index === entry.index)
  const resumes = waiting?.resumes ?? []
  const snapshot = project(pos.state, node.reads)
  const idempotencyKey = `${env.runId}/${env.scope}${pos.step}/${name}/${entry.index}`
  const policy = node.policy
  const retryable = policy.retryOn ?? defaultRetryable
  const timeoutMillis = policy.timeout === undefined ? undefined : Duration.toMillis(policy.timeout)

  const shared: EntryScope = {
    env,
    entry,
    name,
    step: pos.step,
    snapshot,
    idempotencyKey,
    stamp,
    events,
    nextResume: env.resumeSource ?? (() => resumes[shared.interruptCalls++]),
    interruptCalls: 0
  }
  let current: AttemptContext | undefined

  const attemptOnce = (attempt: number): Effect.Effect<unknown, unknown, unknown> => {
    shared.interruptCalls = 0
    current = new AttemptContext(shared, attempt)
    let eff = node.run(current)
    if (timeoutMillis !== undefined) {
      eff = Effect.timeoutFail(eff, {
        duration: timeoutMillis,
        onTimeout: () => new NodeTimeoutError({ node: name, attempt, timeoutMillis })
      })
    }
    if (policy.breaker !== undefined) eff = env.breakers.protect(`${graph.id}/${entry.node}`, policy.breaker, eff)
    return eff
  }

  const failed = (attempts: number, error: unknown): EntryResult => {
    const { message, tag } = describe(error)
    events.push(stamp({ _tag: "NodeFailed", node: name, index: entry.index, attempts, error: message, errorTag: tag }))
    const final = new NodeFailedError({
      runId: env.runId,
      node: name,
      index: entry.index,
      attempt: attempts,
      errorTag: tag,
      detail: message
    })
    return { _tag: "Failed", entry, events, error: { tag, message: final.message, error } }
  }

  const settle = (attempt: number, value: unknown): EntryResult => {
    let update: unknown = value
    let gotoTargets: ReadonlyArray<string> | undefined
    let sends: ReadonlyArray<{ node: string; input: unknown }> = []
    if (isCommand(value)) {
      update = value.update
      gotoTargets = value.goto
      sends = value.send
      for (const target of [...value.goto, ...value.send.map((s) => s.node)]) {
        if (target !== END && !node.goto.has(target)) {
          return failed(attempt, new RoutingError({ graphId: graph.id, node: name, target, allowed: [...node.goto] }))
        }
      }
    }
    const checked = validateUpdate(graph, node, update)
    if (checked instanceof StateValidationError || checked instanceof WritePermissionError) return failed(attempt, checked)
    events.push(stamp({ _tag: "NodeCompleted", node: name, index: entry.index, attempts: attempt, keys: Object.keys(checked) }))
    return { _tag: "Done", entry, events, update: checked, goto: gotoTargets, sends }
  }

  const loop = (
    attempt: number,
    driver: Schedule.ScheduleDriver<unknown, unknown> | undefined
  ): Effect.Effect<EntryResult, never, unknown> =>
    Effect.flatMap(Effect.exit(attemptOnce(attempt)), (exit): Effect.Effect<EntryResult, never, unknown> => {
      current?.releaseReservation()
      if (Exit.isSuccess(exit)) return Effect.succeed(settle(attempt, exit.value))
      const cause = exit.cause
      if (Cause.isInterruptedOnly(cause)) return Effect.failCause(cause as Cause.Cause<never>)
      const failure = Cause.failureOption(cause)
      if (Option.isNone(failure)) {
        const defect = Chunk.head(Cause.defects(cause))
        return Effect.succeed(failed(attempt, Option.getOrElse(defect, () => Cause.pretty(cause))))
      }
      const error = failure.value
      if (error instanceof NodeInterrupt) {
        events.push(stamp({ _tag: "NodeInterrupted", node: name, index: entry.index, kind: "node", payload: error.payload }))
        return Effect.succeed({
          _tag: "Interrupted",
          entry,
          events,
          payload: error.payload,
          timeoutMillis: error.timeoutMillis,
          resumes
        })
      }
      if (policy.retry === undefined || !retryable(error)) return Effect.succeed(failed(attempt, error))
      if (attempt >= (policy.retry.maxAttempts ?? 3)) return Effect.succeed(failed(attempt, error))
      events.push(stamp({ _tag: "NodeRetrying", node: name, index: entry.index, attempt, error: describe(error).message }))
      const next = driver === undefined ? Schedule.driver(retrySchedule(policy.retry)) : Effect.succeed(driver)
      return Effect.flatMap(next, (d) => Effect.zipRight(Effect.ignore(d.next(error)), loop(attempt + 1, d)))
    })

  return loop(1, undefined)
}

/** Runs one step from `pos`, producing its events and its outcome. */
export const runStep = (
  env: Env,
  pos: Position,
  stamp: Stamp
): Effect.Effect<StepOutcome, never, unknown> => {
  const graph = env.graph
  const todo = pos.pending.size === 0
    ? pos.frontier
    : pos.frontier.filter((e) => !pos.pending.has(entryKey(e.node, e.index)))
  if (todo.length === 1) {
    return Effect.map(runEntry(env, pos, todo[0]!, stamp), (r) => finishStep(env, pos, [r]))
  }
  const limited = new Map<string, Effect.Semaphore>()
  for (const e of todo) {
    const n = graph.nodes.get(e.node)!
    if (n.concurrency !== undefined && !limited.has(e.node)) limited.set(e.node, Effect.unsafeMakeSemaphore(n.concurrency))
  }
  const run = (e: Entry) => {
    const eff = runEntry(env, pos, e, stamp)
    const sem = limited.get(e.node)
    return sem === undefined ? eff : sem.withPermits(1)(eff)
  }
  return Effect.map(
    Effect.forEach(todo, run, { concurrency: env.config.concurrency }),
    (results) => finishStep(env, pos, results)
  )
}

const finishStep = (
  env: Env,
  pos: Position,
  results: ReadonlyArray<EntryResult>
): StepOutcome => {
  const graph = env.graph
  const events: Array<Draft> = []
  for (const r of results) for (const e of r.events) events.push(e)
  const failure = results.find((r) => r._tag === "Failed")
  if (failure !== undefined && failure._tag === "Failed") return { _tag: "Failed", events, error: failure.error }

  const done = new Map<string, Extract<EntryResult, { _tag: "Done" }>>()
  for (const r of results) if (r._tag === "Done") done.set(entryKey(r.entry.node, r.entry.index), r)

  const interrupted = results.filter((r): r is Extract<EntryResult, { _tag: "Interrupted" }> => r._tag === "Interrupted")
  if (interrupted.length > 0) {
    const pending = new Map(pos.pending)
    for (const [key, r] of done) pending.set(key, r.update)
    const timeouts = interrupted.map((r) => r.timeoutMillis).filter((t): t is number => t !== undefined)
    return {
      _tag: "Waiting",
      events,
      pending,
      interrupts: [...pos.interrupts.filter((i) => i.kind === "before"), ...interrupted.map((r) => ({
        kind: "node" as const,
        node: r.entry.node,
        index: r.entry.index,
        payload: r.payload,
        resumes: r.resumes,
        answered: false
      }))],
      waitMillis: timeouts.length === 0 ? undefined : Math.min(...timeouts)
    }
  }

  let state = pos.state
  const ordered = [...pos.frontier].sort(byOrder(graph))
  for (const e of ordered) {
    const key = entryKey(e.node, e.index)
    const update = done.get(key)?.update ?? pos.pending.get(key)
    if (update !== undefined) state = State.reduce(graph.state, state, update)
  }

  const plain = new Set<string>()
  const sends = new Map<string, Array<unknown>>()
  const barriers: Record<string, ReadonlyArray<string>> = { ...pos.barriers }
  const routeErr = (node: string, target: string, allowed: Iterable<string>): StepOutcome => {
    const error = new RoutingError({ graphId: graph.id, node: env.prefix + node, target, allowed: [...allowed] })
    return { _tag: "Failed", events, error: { tag: error._tag, message: error.message, error } }
  }
  const target = (t: string) => {
    if (t !== END) plain.add(t)
  }
  const fan = (to: string, item: unknown) => {
    const list = sends.get(to)
    if (list === undefined) sends.set(to, [item])
    else list.push(item)
  }
  const routed = new Set<string>()
  for (const e of ordered) {
    const r = done.get(entryKey(e.node, e.index))
    if (r !== undefined && r.goto !== undefined) {
      for (const t of r.goto) target(t)
      for (const s of r.sends) fan(s.node, s.input)
      continue
    }
    if (routed.has(e.node)) continue
    routed.add(e.node)
    const routing = graph.routing.get(e.node)!
    for (const t of routing.next) target(t)
    for (const route of routing.routes) {
      const chosen = route.choose(state)
      for (const t of typeof chosen === "string" ? [chosen] : chosen) {
        if (!route.targets.has(t)) return routeErr(e.node, t, route.targets)
        target(t)
      }
    }
    for (const f of routing.fanOuts) for (const item of f.items(state)) fan(f.to, item)
    for (const j of graph.joinsBySource.get(e.node) ?? []) {
      const seen = new Set(barriers[j.key] ?? [])
      seen.add(e.node)
      if (j.from.every((f) => seen.has(f))) {
        delete barriers[j.key]
        target(j.to)
      } else {
        barriers[j.key] = [...seen].sort()
      }
    }
  }

  const frontier = buildFrontier(env, plain, sends)
  if (!Array.isArray(frontier)) {
    const error = frontier as StateValidationError
    return { _tag: "Failed", events, error: { tag: error._tag, message: error.message, error } }
  }
  return {
    _tag: "Advanced",
    events,
    state,
    frontier,
    barriers,
    executed: [...new Set(ordered.map((e) => e.node))]
  }
}

/** The position after a step that advanced. */
export const nextPosition = (pos: Position, outcome: Extract<StepOutcome, { _tag: "Advanced" }>): Position => ({
  step: pos.step + 1,
  state: outcome.state,
  frontier: outcome.frontier,
  pending: new Map(),
  interrupts: [],
  barriers: outcome.barriers
})

const byOrder = (graph: CompiledGraph) => (a: Entry, b: Entry) =>
  graph.nodes.get(a.node)!.order - graph.nodes.get(b.node)!.order || a.index - b.index

/** Builds an ordered frontier from plain targets and fan-out items, validating items against node inputs. */
export const buildFrontier = (
  env: Pick<Env, "graph" | "prefix">,
  plain: ReadonlySet<string>,
  sends: ReadonlyMap<string, ReadonlyArray<unknown>>
): Array<Entry> | StateValidationError => {
  const graph = env.graph
  const names = [...new Set([...plain, ...sends.keys()])].sort((a, b) =>
    graph.nodes.get(a)!.order - graph.nodes.get(b)!.order
  )
  const frontier: Array<Entry> = []
  for (const name of names) {
    let index = 0
    if (plain.has(name)) frontier.push({ node: name, index: index++, input: undefined })
    const items = sends.get(name)
    if (items === undefined) continue
    const schema = graph.nodes.get(name)!.input
    for (const item of items) {
      if (schema !== undefined) {
        const ok = Schema.is(schema)(item)
        if (!ok) {
          return new StateValidationError({
            graphId: graph.id,
            node: env.prefix + name,
            key: "<fan-out input>",
            detail: `item ${index} does not match the node's input schema: ${JSON.stringify(item)}`
          })
        }
      }
      frontier.push({ node: name, index: index++, input: item })
    }
  }
  return frontier
}

/** The frontier a run starts with: START's edges evaluated on the initial state. */
export const startFrontier = (
  env: Pick<Env, "graph" | "prefix">,
  state: Record<string, unknown>
): Array<Entry> | StateValidationError | RoutingError => {
  const start = env.graph.start
  const plain = new Set<string>()
  const sends = new Map<string, Array<unknown>>()
  for (const t of start.next) if (t !== END) plain.add(t)
  for (const route of start.routes) {
    const chosen = route.choose(state)
    for (const t of typeof chosen === "string" ? [chosen] : chosen) {
      if (!route.targets.has(t)) {
        return new RoutingError({ graphId: env.graph.id, node: "__start__", target: t, allowed: [...route.targets] })
      }
      if (t !== END) plain.add(t)
    }
  }
  for (const f of start.fanOuts) sends.set(f.to, [...(sends.get(f.to) ?? []), ...f.items(state)])
  return buildFrontier(env, plain, sends)
}

/** Milliseconds until `deadline` by `clock`, or undefined when there is none. */
export const millisUntil = (clock: Clock.Clock, deadline: number | null) =>
  deadline === null ? undefined : deadline - clock.unsafeCurrentTimeMillis()
