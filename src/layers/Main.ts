/**
 * The composition at the edge, in one place: the store named by configuration (its run store and
 * queue from one backend), the circuit breakers, and a runner over them. Each layer here is built
 * once per program: a layer built twice is two pools.
 */
import type { ConfigError } from "effect"
import { Effect, Layer, Option } from "effect"
import * as CircuitBreaker from "../CircuitBreaker.js"
import type { CircuitBreakers } from "../CircuitBreaker.js"
import * as Runner from "../Runner.js"
import * as Store from "./Store.js"

/** What the edge may override in the configured store options. */
export interface StoreOverrides {
  /** The store URL (e.g. from `--store`), instead of the configured one. */
  readonly url?: Option.Option<string> | undefined
  /** The migration mode, instead of `FIBERGRAPH_MIGRATE`. */
  readonly migrate?: Store.MigrateMode | undefined
}

/** The errors opening the configured store can fail with. */
export type StoreError = Store.StoreUrlError | Store.StoreOpenError | ConfigError.ConfigError

/** The store from configuration (`Store.config`), with `overrides`: `Store`, `RunStore`, `WorkQueue`. */
export const store = (overrides: StoreOverrides = {}): Layer.Layer<Store.Provided, StoreError> =>
  Layer.unwrapEffect(Effect.map(Store.config, (options) =>
    Store.layer({
      ...options,
      url: Option.getOrElse(overrides.url ?? Option.none(), () => options.url),
      migrate: overrides.migrate ?? options.migrate ?? Store.defaults.migrate
    })))

/** Everything a program needs to submit, answer, inspect and work runs: the store, its queue, breakers, a runner. */
export const layer = (
  overrides: StoreOverrides = {},
  runner: Runner.Options = {}
): Layer.Layer<Runner.Runner | Store.Provided | CircuitBreakers, StoreError> =>
  Runner.layer(runner).pipe(Layer.provideMerge(Layer.merge(store(overrides), CircuitBreaker.layer)))
