// Every registered storage backend runs the conformance suite against real qemu-img/qemu-io.
import { storageConformance } from './conformance.js';
import { storageDrivers } from './registry.js';

for (const [name, make] of Object.entries(storageDrivers)) storageConformance(name, (env) => make(env));
