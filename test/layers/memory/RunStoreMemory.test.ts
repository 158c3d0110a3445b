import * as RunStoreMemory from "../../../src/layers/memory/RunStoreMemory.js"
import { runStoreContract } from "../../contracts/RunStore.js"

// One store for the whole block (the contract builds the layer once), as the SQL backends run
// it against one shared database: every test uses fresh ids and tenants, so sharing state also
// proves that no test depends on an empty store.
runStoreContract("RunStoreMemory", RunStoreMemory.layer({ retainCheckpoints: 3 }), { retainCheckpoints: 3 })
