/**
 * An `EventSink` that prints one human-readable line per event through Effect's `Console`,
 * e.g. `12:00:00.123 run_abc #7 step 2  NodeCompleted  search[3] (2 attempts, keys: notes)`.
 */
import { Config, Effect, Layer, Option } from "effect"
import { absurd } from "effect/Function"
import type { RunEvent } from "../../Events.js"
import { EventSink } from "../../services/EventSink.js"

/** Options of the console sink. */
export interface Options {
  /** ANSI colour for failures, warnings and terminal events (default: on only when stdout is a TTY and `NO_COLOR` is unset). */
  readonly colors?: boolean
}

/** Options of `format`. */
export interface FormatOptions {
  /** Wrap the line in ANSI colour codes by severity (default false). */
  readonly colors?: boolean
}

type Tone = "plain" | "success" | "warning" | "failure"

const ansi: Record<Exclude<Tone, "plain">, string> = { success: "32", warning: "33", failure: "31" }

const paint = (tone: Tone, text: string) => tone === "plain" ? text : `\u001b[${ansi[tone]}m${text}\u001b[0m`
const dim = (text: string) => `\u001b[2m${text}\u001b[0m`

const pad2 = (n: number) => String(n).padStart(2, "0")

const clockTime = (epochMillis: number): string => {
  const d = new Date(epochMillis)
  if (Number.isNaN(d.getTime())) return String(epochMillis)
  return `${pad2(d.getUTCHours())}:${pad2(d.getUTCMinutes())}:${pad2(d.getUTCSeconds())}.${
    String(d.getUTCMilliseconds()).padStart(3, "0")
  }`
}

const oneLine = (text: string, max: number) => {
  const flat = text.replace(/\s*[\r\n]+\s*/g, " ⏎ ")
  return flat.length <= max ? flat : `${flat.slice(0, max - 1)}…`
}

const show = (value: unknown, max = 120): string => {
  if (typeof value === "string") return oneLine(JSON.stringify(value), max)
  try {
    const json = JSON.stringify(value, (_key, v: unknown) => typeof v === "bigint" ? `${v}n` : v)
    return oneLine(json ?? String(value), max)
  } catch {
    return oneLine(String(value), max)
  }
}

const ref = (event: { readonly node: string; readonly index: number }) => `${event.node}[${event.index}]`
const plural = (n: number, word: string) => `${n} ${word}${n === 1 ? "" : "s"}`
const list = (names: ReadonlyArray<string>) => names.length === 0 ? "none" : names.join(", ")
const problem = (text: string) => oneLine(text, 300)

const describe = (event: RunEvent): { readonly tone: Tone; readonly detail: string } => {
  switch (event._tag) {
    case "RunStarted":
      return { tone: "plain", detail: `graph ${event.graphId}@${event.graphVersion} (${event.graphHash.slice(0, 12)})` }
    case "StepStarted":
      return { tone: "plain", detail: `nodes: ${list(event.nodes)}` }
    case "NodeStarted":
      return { tone: "plain", detail: ref(event) }
    case "NodeRetrying":
      return { tone: "warning", detail: `${ref(event)} attempt ${event.attempt} failed: ${problem(event.error)}` }
    case "NodeCompleted":
      return {
        tone: "plain",
        detail: `${ref(event)} (${plural(event.attempts, "attempt")}, keys: ${list(event.keys)})`
      }
    case "NodeFailed":
      return {
        tone: "failure",
        detail: `${ref(event)} (${plural(event.attempts, "attempt")}) ${event.errorTag}: ${problem(event.error)}`
      }
    case "NodeInterrupted":
      return { tone: "warning", detail: `${ref(event)} ${event.kind} payload: ${show(event.payload)}` }
    case "StepCommitted":
      return { tone: "plain", detail: `next: ${event.next.length === 0 ? "end" : event.next.join(", ")}` }
    case "RunWaiting":
      return {
        tone: "warning",
        detail: `on ${list(event.interrupts.map((i) => `${ref(i)} (${i.kind})`))}${
          event.until === null ? "" : ` until ${clockTime(event.until)}`
        }`
      }
    case "RunResumed":
      return { tone: "plain", detail: `response: ${event.response}` }
    case "RunMigrated":
      return { tone: "warning", detail: `graph version ${event.fromVersion} -> ${event.toVersion} (${event.graphHash.slice(0, 12)})` }
    case "RunCompleted":
      return { tone: "success", detail: "" }
    case "RunFailed":
      return { tone: "failure", detail: `${event.errorTag}: ${problem(event.error)}` }
    case "RunCancelled":
      return { tone: "failure", detail: `reason: ${problem(event.reason)}` }
    case "RunTimedOut":
      return { tone: "failure", detail: `deadline ${clockTime(event.deadline)}` }
    case "BudgetThreshold":
      return {
        tone: event.percent >= 100 ? "failure" : "warning",
        detail: `${event.scope} ${event.resource} at ${event.percent}% (${event.used} of ${event.limit})`
      }
    case "ModelCalled":
      return {
        tone: "plain",
        detail: `${ref(event)} ${event.model} (${event.inputTokens} in, ${event.outputTokens} out, $${event.usd.toFixed(4)})`
      }
    case "ToolCalled":
      return { tone: "plain", detail: `${ref(event)} ${event.tool} input: ${show(event.input)}` }
    case "ToolReturned":
      return event.error === null
        ? { tone: "plain", detail: `${ref(event)} ${event.tool} output: ${show(event.output)}` }
        : { tone: "failure", detail: `${ref(event)} ${event.tool} failed: ${problem(event.error)}` }
    case "Custom":
      return { tone: "plain", detail: `${ref(event)} ${event.name}: ${show(event.data)}` }
    default:
      return absurd(event)
  }
}

/** One line describing an event: time (UTC), run, sequence, step, tag and the tag's details. */
export const format = (event: RunEvent, options: FormatOptions = {}): string => {
  const { detail, tone } = describe(event)
  const time = clockTime(event.at)
  const head = `${options.colors === true ? dim(time) : time} ${event.runId} #${event.seq} step ${event.step}`
  const tag = options.colors === true ? paint(tone, event._tag) : event._tag
  const body = detail === "" ? "" : `  ${options.colors === true && tone === "failure" ? paint(tone, detail) : detail}`
  return `${head}  ${tag}${body}`
}

const colorsByDefault = Effect.map(
  Config.option(Config.string("NO_COLOR")).pipe(Effect.orElseSucceed(() => Option.none<string>())),
  (noColor) => (Option.isNone(noColor) || noColor.value === "") && process.stdout.isTTY === true
)

/** Builds a sink printing each commit's events, one line each, through the `Console` present when it is built. */
export const make = (options: Options = {}): Effect.Effect<EventSink["Type"]> =>
  Effect.gen(function*() {
    const console = yield* Effect.console
    const colors = options.colors ?? (yield* colorsByDefault)
    return EventSink.of({
      write: (events) =>
        events.length === 0 ? Effect.void : console.log(events.map((event) => format(event, { colors })).join("\n"))
    })
  })

/** Provides the console sink as the `EventSink`. */
export const layer = (options: Options = {}): Layer.Layer<EventSink> => Layer.effect(EventSink, make(options))
