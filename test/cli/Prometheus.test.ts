/** The Prometheus text rendering of Effect metrics. */
import { assert, describe, it } from "@effect/vitest"
import { Effect, Metric, MetricBoundaries } from "effect"
import * as Prometheus from "../../src/cli/Prometheus.js"

describe("Prometheus", () => {
  it.effect("renders counters, gauges, histograms, summaries and frequencies with escaped labels", () =>
    Effect.gen(function*() {
      const jobs = Metric.counter("test_prom_jobs_total", { description: "Jobs\nseen" })
      yield* Metric.incrementBy(Metric.tagged(jobs, "queue", "a\"b\\c"), 3)
      yield* Metric.set(Metric.gauge("test_prom.depth"), 7)
      const latency = Metric.histogram("test_prom_latency_ms", MetricBoundaries.fromIterable([10, 100]))
      yield* Metric.update(latency, 5)
      yield* Metric.update(latency, 50)
      yield* Metric.update(latency, 500)
      const sizes = Metric.summary({ name: "test_prom_sizes", maxAge: "1 minute", maxSize: 10, error: 0.01, quantiles: [0.5] })
      yield* Metric.update(sizes, 4)
      yield* Metric.update(Metric.frequency("test_prom_kinds"), "x")

      const pairs = (yield* Metric.snapshot).filter((pair) => pair.metricKey.name.startsWith("test_prom"))
      const text = Prometheus.render(pairs, [{ name: "test_prom_declared", type: "gauge", help: "Announced before any series" }])
      assert.strictEqual(
        text,
        [
          "# HELP test_prom_declared Announced before any series",
          "# TYPE test_prom_declared gauge",
          "# TYPE test_prom_depth gauge",
          "test_prom_depth 7",
          "# HELP test_prom_jobs_total Jobs\\nseen",
          "# TYPE test_prom_jobs_total counter",
          "test_prom_jobs_total{queue=\"a\\\"b\\\\c\"} 3",
          "# TYPE test_prom_kinds counter",
          "test_prom_kinds{key=\"x\"} 1",
          "# TYPE test_prom_latency_ms histogram",
          "test_prom_latency_ms_bucket{le=\"10\"} 1",
          "test_prom_latency_ms_bucket{le=\"100\"} 2",
          "test_prom_latency_ms_bucket{le=\"+Inf\"} 3",
          "test_prom_latency_ms_sum 555",
          "test_prom_latency_ms_count 3",
          "# TYPE test_prom_sizes summary",
          "test_prom_sizes{quantile=\"0.5\"} 4",
          "test_prom_sizes_sum 4",
          "test_prom_sizes_count 1",
          ""
        ].join("\n")
      )
    }))
})
