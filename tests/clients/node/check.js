// The npm `consul` client against a metafs server: agent.self, catalog.service.list,
// health.service, then a watch of health.service. Each result is one JSON line on stdout;
// after "watching" the caller changes the service, and the first change seen is printed.
// Usage: node check.js PORT TOKEN SERVICE
"use strict";
const Consul = require("consul");

async function main() {
  const [port, token, service] = process.argv.slice(2);
  const consul = new Consul({ host: "127.0.0.1", port: Number(port), defaults: { token } });
  const say = (what, data) => console.log(JSON.stringify({ what, data }));
  say("agent.self", await consul.agent.self());
  say("catalog.service.list", await consul.catalog.service.list());
  say("health.service", await consul.health.service({ service, passing: true }));
  const watch = consul.watch({
    method: consul.health.service,
    options: { service, wait: "20s" },
    backoffFactor: 100,
  });
  const timer = setTimeout(() => {
    say("timeout", null);
    watch.end();
    process.exit(2);
  }, 30000);
  let first = true;
  watch.on("change", (data, res) => {
    say(first ? "watching" : "changed", { data, index: res.headers["x-consul-index"] });
    if (!first) {
      clearTimeout(timer);
      watch.end();
    }
    first = false;
  });
  watch.on("error", (err) => {
    say("error", String(err));
    process.exit(1);
  });
}

main().catch((err) => {
  console.log(JSON.stringify({ what: "error", data: String(err) }));
  process.exit(1);
});
