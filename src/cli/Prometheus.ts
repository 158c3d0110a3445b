/**
 * Effect's metrics in the Prometheus text exposition format (version 0.0.4): counters, gauges,
 * histograms (cumulative buckets with `+Inf`), summaries (quantiles) and frequencies (one counter
 * series per occurrence, labelled `key`). Families listed in `declared` always get their `HELP`
 * and `TYPE` lines, even before their first series exists.
 */
import { Effect, Metric, Option } from "effect"
import * as MetricState from "effect/MetricState"
import type * as MetricPair from "effect/MetricPair"

/** The content type of the text format. */
export const contentType = "text/plain; version=0.0.4; charset=utf-8"

/** A metric family announced whether or not it has a series yet. */
export interface Family {
  readonly name: string
  readonly type: "counter" | "gauge" | "histogram" | "summary"
  readonly help: string
}

const escapeLabel = (value: string) => value.replace(/\\/g, "\\\\").replace(/\n/g, "\\n").replace(/"/g, "\\\"")
const escapeHelp = (value: string) => value.replace(/\\/g, "\\\\").replace(/\n/g, "\\n")
const sanitize = (name: string) => name.replace(/[^a-zA-Z0-9_:]/g, "_").replace(/^([^a-zA-Z_:])/, "_$1")

const number = (value: number | bigint) =>
  typeof value === "bigint"
    ? value.toString()
    : Number.isNaN(value)
    ? "NaN"
    : value === Number.POSITIVE_INFINITY
    ? "+Inf"
    : value === Number.NEGATIVE_INFINITY
    ? "-Inf"
    : String(value)

const labels = (pairs: ReadonlyArray<readonly [string, string]>) =>
  pairs.length === 0 ? "" : `{${pairs.map(([k, v]) => `${sanitize(k)}="${escapeLabel(v)}"`).join(",")}}`

interface Rendered {
  type: Family["type"]
  help: string | undefined
  readonly lines: Array<string>
}

/** Renders metric pairs (from `Metric.snapshot`) as Prometheus text. */
export const render = (
  pairs: ReadonlyArray<MetricPair.MetricPair.Untyped>,
  declared: ReadonlyArray<Family> = []
): string => {
  const families = new Map<string, Rendered>()
  const family = (name: string, type: Family["type"], help: string | undefined) => {
    let rendered = families.get(name)
    if (rendered === undefined) {
      rendered = { type, help, lines: [] }
      families.set(name, rendered)
    }
    if (rendered.help === undefined) rendered.help = help
    return rendered
  }
  for (const d of declared) family(sanitize(d.name), d.type, d.help)
  const seriesKey = (pair: MetricPair.MetricPair.Untyped) =>
    `${pair.metricKey.name}{${pair.metricKey.tags.map((t) => `${t.key}=${t.value}`).join(",")}}`
  const sorted = [...pairs].sort((a, b) => seriesKey(a).localeCompare(seriesKey(b)))
  for (const { metricKey, metricState } of sorted) {
    const name = sanitize(metricKey.name)
    const help = Option.getOrUndefined(metricKey.description)
    const tags = metricKey.tags.map((t) => [t.key, t.value] as const)
    if (MetricState.isCounterState(metricState)) {
      family(name, "counter", help).lines.push(`${name}${labels(tags)} ${number(metricState.count)}`)
    } else if (MetricState.isGaugeState(metricState)) {
      family(name, "gauge", help).lines.push(`${name}${labels(tags)} ${number(metricState.value)}`)
    } else if (MetricState.isHistogramState(metricState)) {
      const lines = family(name, "histogram", help).lines
      let infinite = false
      for (const [boundary, count] of metricState.buckets) {
        if (boundary === Number.POSITIVE_INFINITY) infinite = true
        lines.push(`${name}_bucket${labels([...tags, ["le", number(boundary)]])} ${count}`)
      }
      if (!infinite) lines.push(`${name}_bucket${labels([...tags, ["le", "+Inf"]])} ${metricState.count}`)
      lines.push(`${name}_sum${labels(tags)} ${number(metricState.sum)}`)
      lines.push(`${name}_count${labels(tags)} ${metricState.count}`)
    } else if (MetricState.isSummaryState(metricState)) {
      const lines = family(name, "summary", help).lines
      for (const [quantile, value] of metricState.quantiles) {
        lines.push(`${name}${labels([...tags, ["quantile", String(quantile)]])} ${number(Option.getOrElse(value, () => Number.NaN))}`)
      }
      lines.push(`${name}_sum${labels(tags)} ${number(metricState.sum)}`)
      lines.push(`${name}_count${labels(tags)} ${metricState.count}`)
    } else if (MetricState.isFrequencyState(metricState)) {
      const lines = family(name, "counter", help).lines
      for (const [key, count] of metricState.occurrences) lines.push(`${name}${labels([...tags, ["key", key]])} ${count}`)
    }
  }
  const out: Array<string> = []
  for (const [name, { help, lines, type }] of [...families].sort(([a], [b]) => a.localeCompare(b))) {
    if (help !== undefined) out.push(`# HELP ${name} ${escapeHelp(help)}`)
    out.push(`# TYPE ${name} ${type}`)
    out.push(...lines)
  }
  return out.length === 0 ? "" : `${out.join("\n")}\n`
}

/** Every metric of the process, rendered. */
export const scrape = (declared: ReadonlyArray<Family> = []): Effect.Effect<string> =>
  Effect.map(Metric.snapshot, (pairs) => render(pairs, declared))
