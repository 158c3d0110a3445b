/**
 * How commands print: aligned tables and `key  value` blocks for people, one JSON document for
 * machines.
 */
import { Console, Effect } from "effect"
import type { Usage } from "../services/RunStore.js"

/** Prints `value` as one line of JSON. */
export const printJson = (value: unknown): Effect.Effect<void> => Console.log(JSON.stringify(value))

/** Renders rows under a header, each column padded to its widest cell. */
export const table = (header: ReadonlyArray<string>, rows: ReadonlyArray<ReadonlyArray<string>>): string => {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((row) => (row[i] ?? "").length)))
  const line = (cells: ReadonlyArray<string>) =>
    cells.map((cell, i) => i === cells.length - 1 ? cell : cell.padEnd(widths[i]!)).join("  ").trimEnd()
  return [line(header), ...rows.map(line)].join("\n")
}

/** Renders `label  value` pairs with the labels aligned. */
export const fields = (pairs: ReadonlyArray<readonly [string, string]>): string => {
  const width = Math.max(0, ...pairs.map(([label]) => label.length))
  return pairs.map(([label, value]) => `${label.padEnd(width)}  ${value}`).join("\n")
}

/** An instant (epoch ms) as ISO 8601 in UTC, or `-`. */
export const instant = (millis: number | null | undefined): string =>
  millis === null || millis === undefined ? "-" : new Date(millis).toISOString()

/** A run's total spending in one phrase. */
export const spending = (usage: Usage): string =>
  `${usage.total.tokens} tokens, $${usage.total.usd.toFixed(4)}`

/** A JSON value on one line, cut to `max` characters. */
export const brief = (value: unknown, max = 100): string => {
  const text = JSON.stringify(value) ?? "undefined"
  return text.length <= max ? text : `${text.slice(0, max - 1)}…`
}
