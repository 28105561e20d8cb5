// `deno check e2e/typecheck.ts` (run by runtimes.mjs): the package's TypeScript declarations
// describe what the entries export, and a typical use type-checks.
// @ts-types="../www/pkg/ready.d.ts"
import { Inspector, inspect, inspectStream, version, wasmMemoryBytes } from "../www/pkg/node.js";

export async function summarise(stream: ReadableStream<Uint8Array>): Promise<string> {
  const report = await inspectStream(stream, false, (session) => console.log(session.client));
  const inspector: Inspector = new Inspector(false);
  const ended: string = inspector.push(new Uint8Array(0));
  const memory: number = wasmMemoryBytes();
  const batch: string = inspect(new Uint8Array(0), false);
  return `${version()} ${report.sessions.length} ${ended} ${memory} ${batch} ${inspector.bytesRead}`;
}
