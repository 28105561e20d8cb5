# workerd configuration of the edge example: one module worker (edge/worker.js) with the
# socksgate-wasm package (www/pkg, built by wasm/build.sh) as its modules, the .wasm as a
# compiled module. `workerd serve edge/workerd.capnp --socket-addr http=127.0.0.1:8787`.
using Workerd = import "/workerd/workerd.capnp";

const config :Workerd.Config = (
  services = [ (name = "inspector", worker = .inspector) ],
  sockets = [ (name = "http", address = "127.0.0.1:8787", http = (), service = "inspector") ],
);

const inspector :Workerd.Worker = (
  modules = [
    (name = "edge/worker.js", esModule = embed "worker.js"),
    (name = "www/pkg/workerd.js", esModule = embed "../www/pkg/workerd.js"),
    (name = "www/pkg/stream.js", esModule = embed "../www/pkg/stream.js"),
    (name = "www/pkg/socksgate_wasm.js", esModule = embed "../www/pkg/socksgate_wasm.js"),
    (name = "www/pkg/socksgate_wasm_bg.wasm", wasm = embed "../www/pkg/socksgate_wasm_bg.wasm"),
  ],
  compatibilityDate = "2025-09-01",
);
