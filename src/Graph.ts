/**
 * Graph definitions: typed nodes over a typed state, joined by static, conditional, join and
 * fan-out edges, compiled into a validated graph with a stable definition hash.
 */
import { createHash } from "node:crypto"
import { Effect, Schema } from "effect"
import {
  DuplicateEdge,
  DuplicateNode,
  EmptyGraph,
  GraphCompileError,
  type GraphProblem,
  NoPathToEnd,
  UnknownFanOutTarget,
  UnknownNode,
  UnreachableNode,
  UserCodeError,
  thrownMessage
} from "./Errors.js"
import type { Spending, NodeContext, NodePolicy, NodeResult } from "./Node.js"
import type { Channels, StateDef, StateOf } from "./State.js"

/** The pseudo-node a run starts from. */
export const START = "__start__"
/** The pseudo-node a branch ends at. */
export type START = typeof START
/** The pseudo-node a branch ends at. */
export const END = "__end__"
/** The pseudo-node a branch ends at. */
export type END = typeof END

/** How a node is declared: the keys it reads and writes, its fan-out input, goto targets and policy. */
export interface NodeSpec<S, Rd extends keyof S, Wr extends keyof S, I, T extends string> {
  readonly reads?: ReadonlyArray<Rd>
  readonly writes?: ReadonlyArray<Wr>
  /** The schema of a fan-out instance's input. */
  readonly input?: Schema.Schema<I, any>
  /** Targets this node may route to with `Node.goto` / `Node.send` (its edges are then ignored). */
  readonly goto?: ReadonlyArray<T>
  readonly policy?: NodePolicy
  /** At most this many fan-out instances of the node run at once (default: the run's concurrency). */
  readonly concurrency?: number
  /** What one instance of this node may spend in a run. */
  readonly budget?: Spending
  /**
   * Runs only once no other branch has work left: routed to while others still run, it waits
   * (across steps) and then runs once (map-reduce, then summarise). Fan-out instances are not deferred.
   */
  readonly defer?: boolean
  readonly description?: string
}

/** A node's implementation as the runtime sees it. */
export type NodeRun = (ctx: NodeContext<any, any>) => Effect.Effect<unknown, unknown, unknown>

/** A node as compiled. */
export interface CompiledNode {
  readonly name: string
  /** Declaration order: the merge order of updates within a step. */
  readonly order: number
  readonly reads: ReadonlyArray<string> | undefined
  readonly writes: ReadonlySet<string> | undefined
  readonly input: Schema.Schema<any, any> | undefined
  readonly goto: ReadonlySet<string>
  readonly policy: NodePolicy
  readonly concurrency: number | undefined
  readonly budget: Spending | undefined
  readonly defer: boolean
  readonly run: NodeRun
}

/** A conditional edge: a function of the new state choosing among declared targets. */
export interface Route {
  readonly choose: (state: any) => string | ReadonlyArray<string>
  readonly targets: ReadonlySet<string>
}

/** A fan-out edge: one instance of `to` per item. */
export interface FanOut {
  readonly to: string
  readonly items: (state: any) => ReadonlyArray<unknown>
}

/** Where a node (or START) leads. */
export interface Routing {
  readonly next: ReadonlyArray<string>
  readonly routes: ReadonlyArray<Route>
  readonly fanOuts: ReadonlyArray<FanOut>
}

/** A join: `to` runs once every one of `from` has completed since it last ran. */
export interface Join {
  readonly key: string
  readonly from: ReadonlyArray<string>
  readonly to: string
}

/** A checkpoint migration from an older version of the graph. */
export interface Migration {
  readonly fromVersion: string
  readonly migrate: (state: unknown) => Effect.Effect<unknown, unknown>
}

/** A validated graph, ready to run. `E` and `R` are the union of its nodes' errors and requirements. */
export interface CompiledGraph<C extends Channels = any, E = unknown, R = unknown> {
  readonly id: string
  readonly version: string
  /** sha256 of the definition: the same in every process, changed by any structural change. */
  readonly hash: string
  readonly state: StateDef<C>
  readonly nodes: ReadonlyMap<string, CompiledNode>
  readonly start: Routing
  readonly routing: ReadonlyMap<string, Routing>
  readonly joins: ReadonlyArray<Join>
  readonly joinsBySource: ReadonlyMap<string, ReadonlyArray<Join>>
  readonly migrations: ReadonlyArray<Migration>
  readonly _E?: E
  readonly _R?: R
}

interface Definition {
  readonly id: string
  readonly version: string
  readonly state: StateDef<any>
  readonly nodes: ReadonlyArray<{ readonly name: string; readonly spec: NodeSpec<any, any, any, any, any>; readonly run: NodeRun }>
  readonly edges: ReadonlyArray<{ readonly from: string; readonly to: string }>
  readonly joins: ReadonlyArray<{ readonly from: ReadonlyArray<string>; readonly to: string }>
  readonly routes: ReadonlyArray<{ readonly from: string; readonly route: Route }>
  readonly fanOuts: ReadonlyArray<{ readonly from: string; readonly fanOut: FanOut }>
  readonly migrations: ReadonlyArray<Migration>
}

type Targets<N extends string> = N | END

/** An immutable graph builder whose type tracks the state, the node names, and the nodes' errors and requirements. */
export class Builder<C extends Channels, N extends string = never, E = never, R = never> {
  constructor(private readonly def: Definition) {}

  /** Adds a node. Its update may only hold the keys in `writes` (all keys when omitted). */
  node<
    Name extends string,
    Rd extends keyof StateOf<C> = keyof StateOf<C>,
    Wr extends keyof StateOf<C> = keyof StateOf<C>,
    I = undefined,
    T extends string = never,
    E2 = never,
    R2 = never
  >(
    name: Name,
    spec: NodeSpec<StateOf<C>, Rd, Wr, I, T>,
    run: (
      ctx: NodeContext<Pick<StateOf<C>, Rd>, I>
    ) => Effect.Effect<NodeResult<Partial<Pick<StateOf<C>, Wr>>> | void, E2, R2>
  ): Builder<C, N | Name, E | E2, R | R2> {
    return new Builder({ ...this.def, nodes: [...this.def.nodes, { name, spec, run: run as NodeRun }] })
  }

  /** A static edge; `from` may list several nodes, making `to` a join that waits for all of them. */
  edge(from: N | START | ReadonlyArray<N>, to: Targets<N>): Builder<C, N, E, R> {
    if (typeof from === "string") {
      return new Builder({ ...this.def, edges: [...this.def.edges, { from, to }] })
    }
    return new Builder({ ...this.def, joins: [...this.def.joins, { from, to }] })
  }

  /** A conditional edge: after `from`, `choose` picks one or more of `targets` from the new state. */
  route<T extends Targets<N>>(
    from: N | START,
    choose: (state: StateOf<C>) => T | ReadonlyArray<T>,
    targets: ReadonlyArray<T>
  ): Builder<C, N, E, R> {
    const route: Route = { choose: choose as Route["choose"], targets: new Set(targets) }
    return new Builder({ ...this.def, routes: [...this.def.routes, { from, route }] })
  }

  /** A fan-out edge: after `from`, one instance of `to` per item of `items(state)`, each with its item as input. */
  fanOut(from: N | START, to: N, items: (state: StateOf<C>) => ReadonlyArray<unknown>): Builder<C, N, E, R> {
    const fanOut: FanOut = { to, items: items as FanOut["items"] }
    return new Builder({ ...this.def, fanOuts: [...this.def.fanOuts, { from, fanOut }] })
  }

  /** Declares how to carry a checkpoint stored by an older version of this graph into this one. */
  migrateFrom<O, I>(
    fromVersion: string | number,
    from: Schema.Schema<O, I>,
    migrate: (old: O) => StateOf<C>
  ): Builder<C, N, E, R> {
    const decode = Schema.decodeUnknown(from)
    const graphId = this.def.id
    const migration: Migration = {
      fromVersion: String(fromVersion),
      migrate: (state) =>
        Effect.flatMap(decode(state), (old) =>
          Effect.try({
            try: () => migrate(old),
            catch: (cause) =>
              new UserCodeError({
                graphId,
                node: `<migrateFrom ${String(fromVersion)}>`,
                function: "migrateFrom",
                detail: thrownMessage(cause)
              })
          }))
    }
    return new Builder({ ...this.def, migrations: [...this.def.migrations, migration] })
  }

  /** Validates the definition and compiles it; every problem is reported, each as its own typed error. */
  get compile(): Effect.Effect<CompiledGraph<C, E, R>, GraphCompileError> {
    return compile<C, E, R>(this.def)
  }
}

/** Starts a graph definition over a state. */
export const make = <C extends Channels>(options: {
  readonly id: string
  readonly version?: string | number
  readonly state: StateDef<C>
}): Builder<C> =>
  new Builder({
    id: options.id,
    version: String(options.version ?? 1),
    state: options.state,
    nodes: [],
    edges: [],
    joins: [],
    routes: [],
    fanOuts: [],
    migrations: []
  })

const joinKey = (from: ReadonlyArray<string>, to: string) => `${[...from].sort().join("+")}->${to}`

const compile = <C extends Channels, E, R>(def: Definition): Effect.Effect<CompiledGraph<C, E, R>, GraphCompileError> =>
  Effect.suspend(() => {
    const problems: Array<GraphProblem> = []
    const graphId = def.id
    const names = new Set<string>()
    const nodes = new Map<string, CompiledNode>()
    def.nodes.forEach(({ name, run, spec }, order) => {
      if (names.has(name) || name === START || name === END) {
        problems.push(new DuplicateNode({ graphId, node: name }))
        return
      }
      names.add(name)
      nodes.set(name, {
        name,
        order,
        reads: spec.reads as ReadonlyArray<string> | undefined,
        writes: spec.writes === undefined ? undefined : new Set(spec.writes as ReadonlyArray<string>),
        input: spec.input,
        goto: new Set(spec.goto ?? []),
        policy: spec.policy ?? {},
        concurrency: spec.concurrency,
        budget: spec.budget,
        defer: spec.defer === true,
        run
      })
    })
    if (nodes.size === 0) problems.push(new EmptyGraph({ graphId, reason: "it has no nodes; add at least one" }))

    const known = (name: string, referencedFrom: string, allowEnd: boolean) => {
      if (nodes.has(name) || (allowEnd && name === END)) return true
      problems.push(new UnknownNode({ graphId, node: name, referencedFrom }))
      return false
    }
    const isSource = (name: string, what: string) => name === START || known(name, what, false)

    const adjacency = new Map<string, Set<string>>([[START, new Set()]])
    for (const name of nodes.keys()) adjacency.set(name, new Set())
    const link = (from: string, to: string) => adjacency.get(from)?.add(to)

    const routing = new Map<string, { next: Array<string>; routes: Array<Route>; fanOuts: Array<FanOut> }>()
    const routingOf = (from: string) => {
      let r = routing.get(from)
      if (r === undefined) {
        r = { next: [], routes: [], fanOuts: [] }
        routing.set(from, r)
      }
      return r
    }

    const seenEdges = new Set<string>()
    for (const { from, to } of def.edges) {
      const ok = isSource(from, `edge ${from} -> ${to}`) && known(to, `edge ${from} -> ${to}`, true)
      if (!ok) continue
      const key = `${from}->${to}`
      if (seenEdges.has(key)) {
        problems.push(new DuplicateEdge({ graphId, from, to }))
        continue
      }
      seenEdges.add(key)
      routingOf(from).next.push(to)
      link(from, to)
    }
    for (const { from, route } of def.routes) {
      if (!isSource(from, `conditional edge from ${from}`)) continue
      for (const t of route.targets) if (known(t, `conditional edge from ${from}`, true)) link(from, t)
      routingOf(from).routes.push(route)
    }
    for (const { from, fanOut } of def.fanOuts) {
      if (!isSource(from, `fan-out from ${from}`)) continue
      if (!nodes.has(fanOut.to)) {
        problems.push(new UnknownFanOutTarget({ graphId, from, to: fanOut.to }))
        continue
      }
      routingOf(from).fanOuts.push(fanOut)
      link(from, fanOut.to)
    }
    const joins: Array<Join> = []
    for (const { from, to } of def.joins) {
      const what = `join [${from.join(", ")}] -> ${to}`
      const ok = from.every((f) => known(f, what, false)) && known(to, what, true)
      if (!ok) continue
      const key = joinKey(from, to)
      if (joins.some((j) => j.key === key)) {
        problems.push(new DuplicateEdge({ graphId, from: from.join("+"), to }))
        continue
      }
      joins.push({ key, from: [...from], to })
      for (const f of from) link(f, to)
    }
    for (const node of nodes.values()) {
      for (const t of node.goto) if (known(t, `goto of node ${node.name}`, true)) link(node.name, t)
    }

    if (nodes.size > 0 && (adjacency.get(START)?.size ?? 0) === 0) {
      problems.push(new EmptyGraph({ graphId, reason: `no edge leaves START; add .edge(START, "<first node>")` }))
    }

    if (problems.length === 0) {
      const reached = walk(START, (n) => adjacency.get(n) ?? new Set())
      for (const name of nodes.keys()) if (!reached.has(name)) problems.push(new UnreachableNode({ graphId, node: name }))
      const reverse = new Map<string, Set<string>>()
      for (const [from, tos] of adjacency) {
        for (const to of tos) {
          let set = reverse.get(to)
          if (set === undefined) reverse.set(to, set = new Set())
          set.add(from)
        }
      }
      const ending = walk(END, (n) => reverse.get(n) ?? new Set())
      for (const name of nodes.keys()) {
        if (reached.has(name) && !ending.has(name)) problems.push(new NoPathToEnd({ graphId, node: name }))
      }
    }

    if (problems.length > 0) return Effect.fail(new GraphCompileError({ graphId, problems }))

    const joinsBySource = new Map<string, Array<Join>>()
    for (const j of joins) {
      for (const f of j.from) {
        const list = joinsBySource.get(f) ?? []
        list.push(j)
        joinsBySource.set(f, list)
      }
    }
    const empty: Routing = { next: [], routes: [], fanOuts: [] }
    const compiled: CompiledGraph<C, E, R> = {
      id: def.id,
      version: def.version,
      hash: hashOf(def),
      state: def.state,
      nodes,
      start: routing.get(START) ?? empty,
      routing: new Map([...nodes.keys()].map((n) => [n, routing.get(n) ?? empty])),
      joins,
      joinsBySource,
      migrations: def.migrations
    }
    return Effect.succeed(compiled)
  })

const walk = (from: string, next: (n: string) => Iterable<string>): Set<string> => {
  const seen = new Set<string>([from])
  const stack = [from]
  while (stack.length > 0) {
    for (const n of next(stack.pop()!)) {
      if (!seen.has(n)) {
        seen.add(n)
        stack.push(n)
      }
    }
  }
  return seen
}

const hashOf = (def: Definition): string => {
  const material = {
    id: def.id,
    version: def.version,
    state: def.state.fingerprint,
    nodes: def.nodes.map(({ name, spec }) => ({
      name,
      reads: spec.reads ?? null,
      writes: spec.writes ?? null,
      input: spec.input === undefined ? null : String(spec.input.ast),
      goto: spec.goto ?? [],
      ...(spec.defer === true ? { defer: true } : {})
    })),
    edges: def.edges.map((e) => `${e.from}->${e.to}`),
    joins: def.joins.map((j) => joinKey(j.from, j.to)),
    routes: def.routes.map((r) => `${r.from}->${[...r.route.targets].join("|")}`),
    fanOuts: def.fanOuts.map((f) => `${f.from}=>${f.fanOut.to}`)
  }
  return createHash("sha256").update(JSON.stringify(material)).digest("hex")
}
