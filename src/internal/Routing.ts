/**
 * Routing as pure functions of a compiled graph and a state: the frontier a run starts with,
 * the frontier after a step (edges, conditional routes, fan-outs, join barriers, and commands'
 * `goto` / `send`), and the checks that reject a route or a command naming an undeclared target.
 */
import { Schema } from "effect"
import { RoutingError, StateValidationError, thrownMessage, UserCodeError, type UserFunction } from "../Errors.js"
import type { CompiledGraph, CompiledNode, FanOut, Join, Route } from "../Graph.js"
import { END } from "../Graph.js"
import type { Command } from "../Node.js"
import type { Entry, Env } from "./Position.js"

/** What routing needs of a run: its graph, and the prefix its node names carry in errors. */
export type Router = Pick<Env, "graph" | "prefix">

/** Barriers of joins still waiting for some of their sources, by join key: the sources seen so far. */
export type Barriers = Readonly<Record<string, ReadonlyArray<string>>>

/** Where a node instance's command sends the run next, overriding its node's edges. */
export interface Directed {
  readonly goto: ReadonlyArray<string>
  readonly sends: ReadonlyArray<{ readonly node: string; readonly input: unknown }>
}

/** The frontier after a step and the join barriers still waiting. */
export interface Routed {
  readonly frontier: Array<Entry>
  readonly barriers: Record<string, ReadonlyArray<string>>
}

/** Orders frontier entries by node declaration order, then by fan-out index. */
export const byOrder = (graph: CompiledGraph) => (a: Entry, b: Entry) =>
  graph.nodes.get(a.node)!.order - graph.nodes.get(b.node)!.order || a.index - b.index

/** The targets a route chose on `state`. */
export const chosenTargets = (route: Route, state: Record<string, unknown>): ReadonlyArray<string> => {
  const chosen = route.choose(state)
  return typeof chosen === "string" ? [chosen] : chosen
}

/** Calls user code of `node` outside a node's effect; a throw becomes a `UserCodeError` naming the graph, the node and the function. */
export const guarded = <A>(
  env: Router,
  node: string,
  fn: UserFunction,
  call: () => A
): A | UserCodeError => {
  try {
    return call()
  } catch (cause) {
    return new UserCodeError({ graphId: env.graph.id, node: env.prefix + node, function: fn, detail: thrownMessage(cause) })
  }
}

/** A command's first target its node did not declare in `goto`, as a routing error. */
export const checkCommand = (
  graph: CompiledGraph,
  node: CompiledNode,
  name: string,
  command: Command<unknown>
): RoutingError | undefined => {
  for (const target of [...command.goto, ...command.send.map((s) => s.node)]) {
    if (target !== END && !node.goto.has(target)) {
      return new RoutingError({ graphId: graph.id, node: name, target, allowed: [...node.goto] })
    }
  }
  return undefined
}

/** The items each fan-out of `fanOuts` sends on `state`, added to `sends` by target node. */
export const addFanOutItems = (
  fanOuts: ReadonlyArray<FanOut>,
  state: Record<string, unknown>,
  sends: Map<string, Array<unknown>>
) => {
  for (const f of fanOuts) {
    for (const item of f.items(state)) addSend(sends, f.to, item)
  }
}

const addSend = (sends: Map<string, Array<unknown>>, to: string, item: unknown) => {
  const list = sends.get(to)
  if (list === undefined) sends.set(to, [item])
  else list.push(item)
}

/** Records that `source` finished at `join`'s barrier: true when the join fires (its barrier is cleared). */
export const passBarrier = (barriers: Record<string, ReadonlyArray<string>>, join: Join, source: string): boolean => {
  const seen = new Set(barriers[join.key] ?? [])
  seen.add(source)
  if (join.from.every((f) => seen.has(f))) {
    delete barriers[join.key]
    return true
  }
  barriers[join.key] = [...seen].sort()
  return false
}

/**
 * Routes a finished step: each entry of `frontier` (in `byOrder` order) that `directed` gives a
 * command for goes where the command says; every other node goes along its edges, routes and
 * fan-outs (once per node, evaluated on `state`) and passes its join barriers. A route or
 * fan-out function that throws is a `UserCodeError` naming the node whose edges it is.
 */
export const route = (
  env: Router,
  state: Record<string, unknown>,
  frontier: ReadonlyArray<Entry>,
  directed: (entry: Entry) => Directed | undefined,
  barriers: Barriers
): Routed | RoutingError | StateValidationError | UserCodeError => {
  const graph = env.graph
  const plain = new Set<string>()
  const sends = new Map<string, Array<unknown>>()
  const next: Record<string, ReadonlyArray<string>> = { ...barriers }
  const target = (t: string) => {
    if (t !== END) plain.add(t)
  }
  const routed = new Set<string>()
  for (const e of frontier) {
    const command = directed(e)
    if (command !== undefined) {
      for (const t of command.goto) target(t)
      for (const s of command.sends) addSend(sends, s.node, s.input)
      continue
    }
    if (routed.has(e.node)) continue
    routed.add(e.node)
    const routing = graph.routing.get(e.node)!
    for (const t of routing.next) target(t)
    for (const r of routing.routes) {
      const chosen = guarded(env, e.node, "route", () => chosenTargets(r, state))
      if (chosen instanceof UserCodeError) return chosen
      for (const t of chosen) {
        if (!r.targets.has(t)) {
          return new RoutingError({ graphId: graph.id, node: env.prefix + e.node, target: t, allowed: [...r.targets] })
        }
        target(t)
      }
    }
    const items = guarded(env, e.node, "fanOut", () => addFanOutItems(routing.fanOuts, state, sends))
    if (items instanceof UserCodeError) return items
    for (const j of graph.joinsBySource.get(e.node) ?? []) {
      if (passBarrier(next, j, e.node)) target(j.to)
    }
  }
  const built = buildFrontier(env, plain, sends)
  return Array.isArray(built) ? deferring(env, built, next) : built
}

const deferredKey = (node: string) => `defer:${node}`

/**
 * Holds deferred nodes back while other work remains: they wait in the barriers (which the
 * checkpoint keeps) and join the frontier, once each, when nothing else is left to run.
 */
const deferring = (env: Router, frontier: Array<Entry>, barriers: Record<string, ReadonlyArray<string>>): Routed => {
  const graph = env.graph
  const held = (e: Entry) => e.input === undefined && graph.nodes.get(e.node)?.defer === true
  const waiting = Object.keys(barriers).filter((k) => k.startsWith("defer:"))
  if (waiting.length === 0 && !frontier.some(held)) return { frontier, barriers }
  const rest = frontier.filter((e) => !held(e))
  if (rest.length > 0) {
    const next = { ...barriers }
    for (const e of frontier) if (held(e)) next[deferredKey(e.node)] = []
    return { frontier: rest, barriers: next }
  }
  const names = new Set([...frontier.map((e) => e.node), ...waiting.map((k) => k.slice("defer:".length))])
  const next = { ...barriers }
  for (const k of waiting) delete next[k]
  const released = buildFrontier(env, names, new Map())
  return { frontier: Array.isArray(released) ? released : frontier, barriers: next }
}

/** Builds an ordered frontier from plain targets and fan-out items, validating items against node inputs. */
export const buildFrontier = (
  env: Router,
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
  env: Router,
  state: Record<string, unknown>
): Array<Entry> | StateValidationError | RoutingError | UserCodeError => {
  const start = env.graph.start
  const plain = new Set<string>()
  const sends = new Map<string, Array<unknown>>()
  for (const t of start.next) if (t !== END) plain.add(t)
  for (const r of start.routes) {
    const chosen = guarded(env, "__start__", "start", () => chosenTargets(r, state))
    if (chosen instanceof UserCodeError) return chosen
    for (const t of chosen) {
      if (!r.targets.has(t)) {
        return new RoutingError({ graphId: env.graph.id, node: "__start__", target: t, allowed: [...r.targets] })
      }
      if (t !== END) plain.add(t)
    }
  }
  const items = guarded(env, "__start__", "fanOut", () => addFanOutItems(start.fanOuts, state, sends))
  if (items instanceof UserCodeError) return items
  return buildFrontier(env, plain, sends)
}
