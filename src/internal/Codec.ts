/**
 * Converts between a run's in-memory position and its stored checkpoint (encoded through the
 * graph's schemas), and between a human's edit and a validated state update.
 */
import { Effect, Either, ParseResult, Schema } from "effect"
import { EventLogCorruptionError, formatParseError, InputValidationError } from "../Errors.js"
import type { CompiledGraph } from "../Graph.js"
import type { Checkpoint, FrontierEntry } from "../services/RunStore.js"
import { type Entry, entryKey, type Position } from "./Position.js"

interface Codecs {
  readonly encodeState: (state: Record<string, unknown>) => unknown
  readonly decodeState: (raw: unknown) => Either.Either<Record<string, unknown>, ParseResult.ParseError>
  readonly encodeUpdate: (update: Record<string, unknown>) => unknown
  readonly decodeUpdate: (raw: unknown) => Either.Either<Record<string, unknown>, ParseResult.ParseError>
}

const cache = new WeakMap<CompiledGraph, Codecs>()

const codecs = (graph: CompiledGraph): Codecs => {
  let found = cache.get(graph)
  if (found !== undefined) return found
  const partial = Schema.partial(graph.state.schema as unknown as Schema.Struct<Record<string, Schema.Schema.Any>>) as unknown as Schema.Schema<
    Record<string, unknown>,
    unknown
  >
  const identity = graph.state.jsonIdentity
  const decode = Schema.decodeUnknownEither(partial)
  found = {
    encodeState: identity ? (s) => s : Schema.encodeSync(partial),
    decodeState: decode,
    encodeUpdate: identity ? (u) => u : Schema.encodeSync(partial),
    decodeUpdate: decode
  }
  cache.set(graph, found)
  return found
}

const encodeInput = (graph: CompiledGraph, e: Entry): FrontierEntry => {
  const schema = graph.nodes.get(e.node)?.input
  return { node: e.node, index: e.index, input: schema === undefined || e.input === undefined ? e.input ?? null : Schema.encodeSync(schema)(e.input) }
}

/** A state encoded with the graph's schema, as a checkpoint stores it. */
export const encodeState = (graph: CompiledGraph, state: Record<string, unknown>): unknown =>
  codecs(graph).encodeState(state)

/** The checkpoint of a position. */
export const toCheckpoint = (
  graph: CompiledGraph,
  runId: string,
  pos: Position,
  seq: number,
  at: number
): Checkpoint => {
  const c = codecs(graph)
  const pending: Array<Checkpoint["pending"][number]> = []
  for (const [key, update] of pos.pending) {
    const hash = key.lastIndexOf("#")
    pending.push({ node: key.slice(0, hash), index: Number(key.slice(hash + 1)), update: c.encodeUpdate(update) })
  }
  return {
    runId,
    seq,
    step: pos.step,
    state: c.encodeState(pos.state),
    frontier: pos.frontier.map((e) => encodeInput(graph, e)),
    pending,
    interrupts: pos.interrupts,
    barriers: pos.barriers,
    createdAt: at
  }
}

/** The position a checkpoint holds, decoded with the graph's schemas. */
export const fromCheckpoint = (
  graph: CompiledGraph,
  checkpoint: Checkpoint
): Effect.Effect<Position, EventLogCorruptionError> =>
  Effect.suspend(() => {
    const c = codecs(graph)
    const corrupt = (what: string, error: unknown) =>
      Effect.fail(
        new EventLogCorruptionError({
          runId: checkpoint.runId,
          detail: `checkpoint at sequence ${checkpoint.seq}: ${what} does not decode: ${
            ParseResult.isParseError(error) ? formatParseError(error) : String(error)
          }`
        })
      )
    const state = c.decodeState(checkpoint.state)
    if (Either.isLeft(state)) return corrupt("state", state.left)
    const frontier: Array<Entry> = []
    for (const e of checkpoint.frontier) {
      const node = graph.nodes.get(e.node)
      if (node === undefined) return corrupt(`frontier node "${e.node}"`, "unknown node")
      if (node.input === undefined || e.input === null) {
        frontier.push({ node: e.node, index: e.index, input: e.input === null ? undefined : e.input })
        continue
      }
      const input = Schema.decodeUnknownEither(node.input)(e.input)
      if (Either.isLeft(input)) return corrupt(`input of ${e.node}[${e.index}]`, input.left)
      frontier.push({ node: e.node, index: e.index, input: input.right })
    }
    const pending = new Map<string, Record<string, unknown>>()
    for (const p of checkpoint.pending) {
      const update = c.decodeUpdate(p.update)
      if (Either.isLeft(update)) return corrupt(`pending update of ${p.node}[${p.index}]`, update.left)
      pending.set(entryKey(p.node, p.index), update.right)
    }
    return Effect.succeed({
      step: checkpoint.step,
      state: state.right,
      frontier,
      pending,
      interrupts: checkpoint.interrupts,
      barriers: checkpoint.barriers
    })
  })

/**
 * Decodes a human's edit response (`{ _tag: "edit", update }`: encoded values of some state keys)
 * with each key's schema; every unknown key and rejected value is named in one `InputValidationError`.
 */
export const decodeUpdate = (graph: CompiledGraph, raw: unknown): Effect.Effect<Record<string, unknown>, InputValidationError> =>
  Effect.suspend(() => {
    const fail = (detail: string) =>
      Effect.fail(new InputValidationError({ graphId: graph.id, detail: `edit response: ${detail}` }))
    if (typeof raw !== "object" || raw === null || Array.isArray(raw)) {
      return fail(`expected an object of state keys, got ${Array.isArray(raw) ? "an array" : String(JSON.stringify(raw))}`)
    }
    const channels = graph.state.channels as Record<string, { readonly schema: Schema.Schema<unknown, unknown> }>
    const update: Record<string, unknown> = {}
    const problems: Array<string> = []
    for (const [key, value] of Object.entries(raw)) {
      const channel = Object.hasOwn(channels, key) ? channels[key] : undefined
      if (channel === undefined) {
        problems.push(`unknown key "${key}" (the state has ${graph.state.keys.map((k) => `"${k}"`).join(", ")})`)
        continue
      }
      if (value === undefined) continue
      const decoded = Schema.decodeUnknownEither(channel.schema)(value)
      if (Either.isLeft(decoded)) problems.push(`key "${key}": ${formatParseError(decoded.left)}`)
      else update[key] = decoded.right
    }
    return problems.length > 0 ? fail(problems.join("; ")) : Effect.succeed(update)
  })
