// Deno side of runtimes.mjs: `deno run --allow-read e2e/deno-inspect.mjs FILE` prints the
// JSON document of FILE, streamed from disk through the package's Node/Deno entry.
import { inspectStream } from "../www/pkg/node.js";

const file = await Deno.open(Deno.args[0], { read: true });
const report = await inspectStream(file.readable);
console.log(JSON.stringify(report));
