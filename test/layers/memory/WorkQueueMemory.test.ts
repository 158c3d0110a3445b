import { Layer } from "effect"
import * as MemoryStore from "../../../src/layers/memory/MemoryStore.js"
import * as RunStoreMemory from "../../../src/layers/memory/RunStoreMemory.js"
import * as WorkQueueMemory from "../../../src/layers/memory/WorkQueueMemory.js"
import { workQueueContract } from "../../contracts/WorkQueue.js"

// One queue and one store for the whole block, as the SQL backends run it over one database:
// jobs left behind by one test stay queued for the next, which the contract's time windows allow for.
workQueueContract("WorkQueueMemory (MemoryStore)", MemoryStore.layer())
workQueueContract("WorkQueueMemory", WorkQueueMemory.layer.pipe(Layer.provideMerge(RunStoreMemory.layer())))
