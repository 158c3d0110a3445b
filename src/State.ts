/**
 * A graph's state: an `effect/Schema` struct whose every key has a reducer that says how a
 * node's update is merged into the current value.
 */
import { Either, ParseResult, Schema, SchemaAST } from "effect"

/** How an update to one state key is combined with its current value. */
export interface Reducer<A> {
  /** A stable name, part of the graph's definition hash. */
  readonly name: string
  readonly combine: (current: A, update: A) => A
}

/** The update replaces the current value (the default); two node instances writing the key in one step fail the run. */
export const lastValue = <A>(): Reducer<A> => ({ name: "last", combine: (_, update) => update })

/**
 * The update replaces the current value, and two node instances of one step may both write the
 * key: the one declared later (or with the higher fan-out index) wins. Without it, such writes fail the run.
 */
export const lastWriterWins = <A>(): Reducer<A> => ({ name: "lastWriterWins", combine: (_, update) => update })

/** Whether a reducer refuses two writes of one step (the default last-value reducer). */
export const isExclusive = (reducer: Reducer<unknown>): boolean => reducer.name === "last"

/** The update's items are appended to the current array. */
export const append = <A>(): Reducer<ReadonlyArray<A>> => ({
  name: "append",
  combine: (current, update) => current.length === 0 ? update : update.length === 0 ? current : [...current, ...update]
})

/** The update's keys are shallowly merged into the current record. */
export const merge = <A extends object>(): Reducer<A> => ({
  name: "merge",
  combine: (current, update) => ({ ...current, ...update })
})

/** The update is added to the current number. */
export const sum: Reducer<number> = { name: "sum", combine: (current, update) => current + update }

/** A reducer of your own; `name` identifies it in the graph hash, so change it when the logic changes. */
export const custom = <A>(name: string, combine: (current: A, update: A) => A): Reducer<A> => ({
  name: `custom:${name}`,
  combine
})

/** One key of the state: its schema, reducer and initial value. */
export interface Channel<A, I = A> {
  readonly schema: Schema.Schema<A, I>
  readonly reducer: Reducer<A>
  readonly initial: (() => A) | undefined
}

/** Declares a state key: a schema, and optionally a reducer (default: last value) and an initial value. */
export const channel = <A, I>(
  schema: Schema.Schema<A, I>,
  options?: { readonly reducer?: Reducer<NoInfer<A>>; readonly initial?: () => NoInfer<A> }
): Channel<A, I> => ({
  schema,
  reducer: options?.reducer ?? lastValue<A>(),
  initial: options?.initial
})

/** A key whose updates are appended, starting from an empty array. */
export const list = <A, I>(item: Schema.Schema<A, I>): Channel<ReadonlyArray<A>, ReadonlyArray<I>> =>
  channel(Schema.Array(item), { reducer: append<A>(), initial: () => [] })

/** A numeric key whose updates are summed, starting from 0. */
export const counter = (): Channel<number, number> => channel(Schema.Number, { reducer: sum, initial: () => 0 })

/** The channels of a state. */
export type Channels = Record<string, Channel<any, any>>

/** The value type of a state described by its channels. */
export type StateOf<C extends Channels> = { readonly [K in keyof C]: C[K] extends Channel<infer A, any> ? A : never }

/** The encoded (JSON) form of a state described by its channels. */
export type EncodedOf<C extends Channels> = { readonly [K in keyof C]: C[K] extends Channel<any, infer I> ? I : never }

/** A state definition: channels plus the derived struct schema, validators and hash material. */
export interface StateDef<C extends Channels> {
  readonly channels: C
  readonly keys: ReadonlyArray<keyof C & string>
  readonly schema: Schema.Schema<StateOf<C>, EncodedOf<C>>
  /** Whether encoding is the identity (plain JSON values), so checkpoints can skip the encode pass. */
  readonly jsonIdentity: boolean
  readonly fingerprint: string
  readonly validators: Readonly<Record<string, (value: unknown) => string | undefined>>
}

/** Defines a state from its channels. */
export const define = <C extends Channels>(channels: C): StateDef<C> => {
  const keys = Object.keys(channels) as Array<keyof C & string>
  const fields: Record<string, Schema.Schema.Any> = {}
  const validators: Record<string, (value: unknown) => string | undefined> = {}
  let jsonIdentity = true
  for (const key of keys) {
    const ch = channels[key]!
    fields[key] = ch.schema
    const validate = ParseResult.validateEither(ch.schema as Schema.Schema<unknown>)
    validators[key] = (value) => {
      const result = validate(value, { errors: "first" })
      return Either.isLeft(result) ? ParseResult.TreeFormatter.formatIssueSync(result.left) : undefined
    }
    jsonIdentity = jsonIdentity && isIdentity(ch.schema.ast)
  }
  const fingerprint = keys.map((k) => `${k}:${String(channels[k]!.schema.ast)}:${channels[k]!.reducer.name}`).join(";")
  return {
    channels,
    keys,
    schema: Schema.Struct(fields) as unknown as Schema.Schema<StateOf<C>, EncodedOf<C>>,
    jsonIdentity,
    fingerprint,
    validators
  }
}

const isIdentity = (ast: SchemaAST.AST): boolean => {
  switch (ast._tag) {
    case "StringKeyword":
    case "NumberKeyword":
    case "BooleanKeyword":
    case "Literal":
    case "UnknownKeyword":
      return true
    case "Union":
      return ast.types.every(isIdentity)
    case "TupleType":
      return ast.elements.every((e) => isIdentity(e.type)) && ast.rest.every((r) => isIdentity(r.type))
    case "TypeLiteral":
      return ast.propertySignatures.every((p) => isIdentity(p.type)) && ast.indexSignatures.every((i) => isIdentity(i.type))
    case "Refinement":
      return isIdentity(ast.from)
    default:
      return false
  }
}

/** The initial state: each key's initial value, overridden by the run's input. */
export const initial = <C extends Channels>(def: StateDef<C>, input: Partial<StateOf<C>>): Record<string, unknown> => {
  const state: Record<string, unknown> = {}
  for (const key of def.keys) {
    if (key in input) state[key] = (input as Record<string, unknown>)[key]
    else {
      const init = def.channels[key]!.initial
      if (init !== undefined) state[key] = init()
    }
  }
  return state
}

/** Merges an already-validated update into a state, key by key with each key's reducer. */
export const reduce = (
  def: StateDef<Channels>,
  state: Record<string, unknown>,
  update: Record<string, unknown>
): Record<string, unknown> => {
  const next = { ...state }
  for (const key in update) {
    const value = update[key]
    if (value === undefined) continue
    const current = next[key]
    next[key] = current === undefined ? value : def.channels[key]!.reducer.combine(current, value)
  }
  return next
}
