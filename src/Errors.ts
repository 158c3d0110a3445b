/**
 * The typed errors of fibergraph. Every error that is persisted or crosses a process boundary
 * is a `Schema.TaggedError` carrying what an operator needs and a message saying what to do.
 */
import { ParseResult, Schema } from "effect"

/** A graph definition names a node that was never added. */
export class UnknownNode extends Schema.TaggedError<UnknownNode>()("UnknownNode", {
  graphId: Schema.String,
  node: Schema.String,
  referencedFrom: Schema.String
}) {
  override get message() {
    return `graph "${this.graphId}": ${this.referencedFrom} refers to unknown node "${this.node}"; add the node or fix the name`
  }
}

/** A node that no path from the start reaches. */
export class UnreachableNode extends Schema.TaggedError<UnreachableNode>()("UnreachableNode", {
  graphId: Schema.String,
  node: Schema.String
}) {
  override get message() {
    return `graph "${this.graphId}": node "${this.node}" is unreachable from the start; add an edge to it or remove it`
  }
}

/** A node from which no path leads to the end. */
export class NoPathToEnd extends Schema.TaggedError<NoPathToEnd>()("NoPathToEnd", {
  graphId: Schema.String,
  node: Schema.String
}) {
  override get message() {
    return `graph "${this.graphId}": node "${this.node}" has no path to the end; give it an outgoing edge that eventually reaches END`
  }
}

/** The same static edge was declared twice. */
export class DuplicateEdge extends Schema.TaggedError<DuplicateEdge>()("DuplicateEdge", {
  graphId: Schema.String,
  from: Schema.String,
  to: Schema.String
}) {
  override get message() {
    return `graph "${this.graphId}": edge ${this.from} -> ${this.to} is declared twice; remove one`
  }
}

/** Two nodes share a name, or a node uses a reserved name (START, END). */
export class DuplicateNode extends Schema.TaggedError<DuplicateNode>()("DuplicateNode", {
  graphId: Schema.String,
  node: Schema.String
}) {
  override get message() {
    return `graph "${this.graphId}": node name "${this.node}" is used twice or is reserved; give each node its own name`
  }
}

/** A fan-out targets a node that does not exist. */
export class UnknownFanOutTarget extends Schema.TaggedError<UnknownFanOutTarget>()("UnknownFanOutTarget", {
  graphId: Schema.String,
  from: Schema.String,
  to: Schema.String
}) {
  override get message() {
    return `graph "${this.graphId}": fan-out from "${this.from}" targets unknown node "${this.to}"; add the node or fix the target`
  }
}

/** A graph with no nodes, or no entry edge from START. */
export class EmptyGraph extends Schema.TaggedError<EmptyGraph>()("EmptyGraph", {
  graphId: Schema.String,
  reason: Schema.String
}) {
  override get message() {
    return `graph "${this.graphId}" is empty: ${this.reason}`
  }
}

/** One problem found while compiling a graph. */
export const GraphProblem = Schema.Union(
  UnknownNode,
  UnreachableNode,
  NoPathToEnd,
  DuplicateEdge,
  DuplicateNode,
  UnknownFanOutTarget,
  EmptyGraph
)
/** One problem found while compiling a graph. */
export type GraphProblem = typeof GraphProblem.Type

/** Compiling a graph found one or more problems; each is listed as its own typed error. */
export class GraphCompileError extends Schema.TaggedError<GraphCompileError>()("GraphCompileError", {
  graphId: Schema.String,
  problems: Schema.Array(GraphProblem)
}) {
  override get message() {
    return `graph "${this.graphId}" is invalid (${this.problems.length} problem${this.problems.length === 1 ? "" : "s"}):\n` +
      this.problems.map((p) => `  - ${p.message}`).join("\n")
  }
}

/** A state update (or input) holds a value the state schema rejects. */
export class StateValidationError extends Schema.TaggedError<StateValidationError>()("StateValidationError", {
  graphId: Schema.String,
  node: Schema.String,
  key: Schema.String,
  detail: Schema.String
}) {
  override get message() {
    return `graph "${this.graphId}", node "${this.node}": invalid value for state key "${this.key}": ${this.detail}`
  }
}

/** A node wrote a state key it did not declare in `writes` (or a key the state does not have). */
export class WritePermissionError extends Schema.TaggedError<WritePermissionError>()("WritePermissionError", {
  graphId: Schema.String,
  node: Schema.String,
  key: Schema.String,
  allowed: Schema.Array(Schema.String)
}) {
  override get message() {
    return `graph "${this.graphId}", node "${this.node}" wrote "${this.key}" but may only write [${this.allowed.join(", ")}]; ` +
      `declare the key in the node's writes`
  }
}

/** A router, `goto` or fan-out chose a target that the graph did not declare for it. */
export class RoutingError extends Schema.TaggedError<RoutingError>()("RoutingError", {
  graphId: Schema.String,
  node: Schema.String,
  target: Schema.String,
  allowed: Schema.Array(Schema.String)
}) {
  override get message() {
    return `graph "${this.graphId}", node "${this.node}" routed to "${this.target}" which is not among its declared targets ` +
      `[${this.allowed.join(", ")}]; declare it in the edge's targets or the node's goto`
  }
}

/** Where user code outside a node runs: a route, a fan-out's items, a reducer, a subgraph's output mapping, a migration, a START route. */
export const UserFunction = Schema.Literal("route", "fanOut", "reducer", "input", "output", "migrateFrom", "start")
/** Where user code outside a node runs. */
export type UserFunction = typeof UserFunction.Type

/** User code outside a node (a route, a fan-out's items, a reducer, an output mapping, a migration) threw; the run fails with it. */
export class UserCodeError extends Schema.TaggedError<UserCodeError>()("UserCodeError", {
  graphId: Schema.String,
  node: Schema.String,
  function: UserFunction,
  detail: Schema.String
}) {
  override get message() {
    return `graph "${this.graphId}", node "${this.node}": its ${describeFunction[this.function]} threw: ${this.detail}; ` +
      `fix that function so it returns instead of throwing (do fallible work inside a node)`
  }
}

const describeFunction: Record<UserFunction, string> = {
  route: "route function (.route)",
  fanOut: "fan-out item function",
  reducer: "state reducer",
  input: "subgraph input mapping",
  output: "subgraph output mapping",
  migrateFrom: "migrateFrom function",
  start: "START route"
}

/** The message of a thrown value, for an error's detail. */
export const thrownMessage = (cause: unknown): string =>
  cause instanceof Error ? `${cause.name}: ${cause.message}` : typeof cause === "string" ? cause : String(cause)

/**
 * A node attempt threw (or died) instead of failing with a typed error. A node's `retryOn` sees
 * a throw as this error, holding the thrown value as `defect`; a run that fails with it records the thrown value.
 */
export class NodeDefectError extends Schema.TaggedError<NodeDefectError>()("NodeDefectError", {
  node: Schema.String,
  attempt: Schema.Number,
  detail: Schema.String,
  defect: Schema.Unknown
}) {
  override get message() {
    return `node "${this.node}" attempt ${this.attempt} threw: ${this.detail}`
  }
}

/** Two node instances of one step wrote the same last-value state key: which value should win is undefined. */
export class ConflictingUpdateError extends Schema.TaggedError<ConflictingUpdateError>()("ConflictingUpdateError", {
  graphId: Schema.String,
  key: Schema.String,
  nodes: Schema.Array(Schema.String)
}) {
  override get message() {
    return `graph "${this.graphId}": nodes ${this.nodes.map((n) => `"${n}"`).join(" and ")} both wrote state key "${this.key}" ` +
      `in one step; give the key a reducer (State.append, State.merge, State.sum, State.custom), declare it ` +
      `State.lastWriterWins(), or let only one of them write it`
  }
}

/** A node attempt exceeded its timeout. */
export class NodeTimeoutError extends Schema.TaggedError<NodeTimeoutError>()("NodeTimeoutError", {
  node: Schema.String,
  attempt: Schema.Number,
  timeoutMillis: Schema.Number
}) {
  override get message() {
    return `node "${this.node}" attempt ${this.attempt} timed out after ${this.timeoutMillis} ms`
  }
}

/** A node's circuit breaker is open: calls are refused until it cools down. */
export class CircuitOpenError extends Schema.TaggedError<CircuitOpenError>()("CircuitOpenError", {
  key: Schema.String,
  retryAfterMillis: Schema.Number
}) {
  override get message() {
    return `circuit "${this.key}" is open; retry after ${this.retryAfterMillis} ms`
  }
}

/** A node failed for good (retries exhausted or the error was not retryable); the run fails with it. */
export class NodeFailedError extends Schema.TaggedError<NodeFailedError>()("NodeFailedError", {
  runId: Schema.String,
  node: Schema.String,
  index: Schema.Number,
  attempt: Schema.Number,
  errorTag: Schema.String,
  detail: Schema.String
}) {
  override get message() {
    return `run ${this.runId}: node "${this.node}"${this.index > 0 ? `[${this.index}]` : ""} failed after ${this.attempt} attempt(s): ` +
      `${this.errorTag}: ${this.detail}`
  }
}

/** A run or node exhausted a budget (tokens or USD). */
export class BudgetExceededError extends Schema.TaggedError<BudgetExceededError>()("BudgetExceededError", {
  runId: Schema.String,
  scope: Schema.String,
  resource: Schema.Literal("tokens", "usd"),
  limit: Schema.Number,
  requested: Schema.Number
}) {
  override get message() {
    return `run ${this.runId}: ${this.scope} ${this.resource} budget of ${this.limit} would be exceeded (needs ${this.requested}); ` +
      `raise the budget or shorten the work`
  }
}

/** A run reached its maximum number of steps. */
export class MaxStepsExceededError extends Schema.TaggedError<MaxStepsExceededError>()("MaxStepsExceededError", {
  runId: Schema.String,
  maxSteps: Schema.Number
}) {
  override get message() {
    return `run ${this.runId} reached its limit of ${this.maxSteps} steps; look for a loop without an exit or raise maxSteps`
  }
}

/** A run passed its wall-clock deadline. */
export class DeadlineExceededError extends Schema.TaggedError<DeadlineExceededError>()("DeadlineExceededError", {
  runId: Schema.String,
  deadline: Schema.Number
}) {
  override get message() {
    return `run ${this.runId} passed its deadline ${new Date(this.deadline).toISOString()}`
  }
}

/** The writer's claim on a run is stale: another owner has claimed it (or the step moved on). */
export class StaleClaimError extends Schema.TaggedError<StaleClaimError>()("StaleClaimError", {
  runId: Schema.String,
  epoch: Schema.Number,
  currentEpoch: Schema.Number,
  expectedStep: Schema.Number,
  currentStep: Schema.Number,
  /** Why the claim counts as lost when no newer epoch was seen (a lease that ran out). */
  reason: Schema.optional(Schema.String)
}) {
  override get message() {
    const why = this.reason === undefined
      ? `claim epoch ${this.epoch} vs current ${this.currentEpoch}, expected step ${this.expectedStep} vs current ${this.currentStep}`
      : `claim epoch ${this.epoch}: ${this.reason}`
    return `run ${this.runId}: stale write (${why}); this worker lost the run and must stop`
  }
}

/** An event with an already-used sequence number was appended to a run's log. */
export class EventSequenceConflictError extends Schema.TaggedError<EventSequenceConflictError>()(
  "EventSequenceConflictError",
  { runId: Schema.String, seq: Schema.Number, lastSeq: Schema.Number }
) {
  override get message() {
    return `run ${this.runId}: event sequence ${this.seq} conflicts with the log (last sequence ${this.lastSeq}); ` +
      `another writer appended first`
  }
}

/** A run's stored event log or checkpoint is not readable or has a gap. */
export class EventLogCorruptionError extends Schema.TaggedError<EventLogCorruptionError>()("EventLogCorruptionError", {
  runId: Schema.String,
  detail: Schema.String
}) {
  override get message() {
    return `run ${this.runId}: stored history is corrupt: ${this.detail}`
  }
}

/** No run with this id exists in the store. */
export class RunNotFoundError extends Schema.TaggedError<RunNotFoundError>()("RunNotFoundError", {
  runId: Schema.String
}) {
  override get message() {
    return `run ${this.runId} not found`
  }
}

/** A control message (respond, resume) arrived for a run in a status that cannot take it. */
export class RunStatusError extends Schema.TaggedError<RunStatusError>()("RunStatusError", {
  runId: Schema.String,
  status: Schema.String,
  expected: Schema.String
}) {
  override get message() {
    return `run ${this.runId} is ${this.status}; this needs a run that is ${this.expected}`
  }
}

/** A run was stored by a graph whose definition differs from the one asked to resume it. */
export class GraphMismatchError extends Schema.TaggedError<GraphMismatchError>()("GraphMismatchError", {
  runId: Schema.String,
  graphId: Schema.String,
  storedVersion: Schema.String,
  storedHash: Schema.String,
  version: Schema.String,
  hash: Schema.String
}) {
  override get message() {
    return `run ${this.runId} was started by graph "${this.graphId}" version ${this.storedVersion} (${this.storedHash.slice(0, 12)}), ` +
      `not version ${this.version} (${this.hash.slice(0, 12)}); resume it with the old version or declare a checkpoint migration`
  }
}

/** A graph's checkpoint migration failed on a stored run's state. */
export class CheckpointMigrationError extends Schema.TaggedError<CheckpointMigrationError>()("CheckpointMigrationError", {
  runId: Schema.String,
  graphId: Schema.String,
  fromVersion: Schema.String,
  toVersion: Schema.String,
  detail: Schema.String
}) {
  override get message() {
    return `run ${this.runId}: migrating its checkpoint from graph "${this.graphId}" version ${this.fromVersion} to ` +
      `${this.toVersion} failed: ${this.detail}; fix the migration or resume with version ${this.fromVersion}`
  }
}

/** Input given to a run (initial state, human edits) does not decode against the state schema. */
export class InputValidationError extends Schema.TaggedError<InputValidationError>()("InputValidationError", {
  graphId: Schema.String,
  detail: Schema.String
}) {
  override get message() {
    return `graph "${this.graphId}": invalid input: ${this.detail}`
  }
}

/** A node's call at this index differs from the call recorded in the journal (the code or the prompt changed). */
export class JournalDivergenceError extends Schema.TaggedError<JournalDivergenceError>()("JournalDivergenceError", {
  runId: Schema.String,
  key: Schema.String,
  index: Schema.Number,
  kind: Schema.String,
  name: Schema.String,
  recordedName: Schema.String,
  recordedHash: Schema.String,
  requestHash: Schema.String
}) {
  override get message() {
    return `run ${this.runId}: ${this.kind} call ${this.index} of ${this.key} (${this.name}, request ${this.requestHash.slice(0, 12)}) ` +
      `differs from the recorded call (${this.recordedName}, request ${this.recordedHash.slice(0, 12)}); restore the code ` +
      `that made it, or let the node re-record (\`journal: "rerecord"\`)`
  }
}

/** An agent's loop reached its `maxIterations` model calls without a final answer. */
export class AgentMaxIterationsError extends Schema.TaggedError<AgentMaxIterationsError>()("AgentMaxIterationsError", {
  node: Schema.String,
  maxIterations: Schema.Number,
  /** The tools the model still asked for in its last turn. */
  pendingTools: Schema.Array(Schema.String)
}) {
  override get message() {
    return `agent node "${this.node}" made ${this.maxIterations} model calls without a final answer ` +
      `(it still asked for ${this.pendingTools.join(", ") || "no tool"}); raise maxIterations or tighten the prompt and tools`
  }
}

/** An agent's final answer does not decode against its `output` schema, even after a repair turn. */
export class AgentOutputError extends Schema.TaggedError<AgentOutputError>()("AgentOutputError", {
  node: Schema.String,
  /** Where in the answer decoding failed (`$` for the whole answer). */
  path: Schema.String,
  detail: Schema.String
}) {
  override get message() {
    return `agent node "${this.node}": the final answer does not match its output schema at ${this.path}: ${this.detail}; ` +
      `describe the expected shape in the prompt, or loosen the schema`
  }
}

/**
 * A parse error as one line, its problems `path: expected …, got …` joined by `; `, for error
 * details an operator reads (a problem of the value itself has no path).
 */
export const formatParseError = (error: ParseResult.ParseError): string =>
  ParseResult.ArrayFormatter.formatErrorSync(error)
    .map((issue) => {
      const message = issue.message.replace(
        /^Expected ([^]+), actual ([^]+)$/,
        (_, expected: string, actual: string) =>
          `expected ${/^(string|number|boolean|bigint|symbol)$/.test(expected) ? `a ${expected}` : expected}, got ${actual}`
      )
      return issue.path.length === 0 ? message : `${issue.path.join(".")}: ${message}`
    })
    .join("; ")
