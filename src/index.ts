/**
 * fibergraph: a durable graph runtime for LLM agents and workflows, built on Effect 3.
 */
export * as CircuitBreaker from "./CircuitBreaker.js"
export * as Errors from "./Errors.js"
export * as Events from "./Events.js"
export * as Graph from "./Graph.js"
export * as Node from "./Node.js"
export * as Runner from "./Runner.js"
export * as State from "./State.js"
export * as Subgraph from "./Subgraph.js"
export * as EventSink from "./services/EventSink.js"
export * as RunStore from "./services/RunStore.js"
export * as RunStoreMemory from "./layers/memory/RunStoreMemory.js"
export * as Agent from "./Agent.js"
export * as ScriptedModel from "./layers/model/ScriptedModel.js"
export * as EventSinkCapture from "./layers/sinks/EventSinkCapture.js"
export * as EventSinkConsole from "./layers/sinks/EventSinkConsole.js"
export * as EventSinkJsonLines from "./layers/sinks/EventSinkJsonLines.js"
