// The platform's npm client (scalingo 0.14.6), unchanged, against the gateway: run by
// tests/test_platform_js.py. Environment: API_URL, TOKEN, APP, and either SOURCE_URL (create a
// deployment from it and follow it) or DEPLOYMENT_ID (follow one created before). Prints one
// JSON object a line: what the client saw, then {"done": ...}; exits 1 on any failure.
"use strict";

const { clientFromToken } = require("scalingo");

const FINAL = ["success", "aborted", "build-error", "crashed-error", "timeout-error", "hook-error"];
const TIMEOUT_MS = 60000;

function print(value) {
  process.stdout.write(JSON.stringify(value) + "\n");
}

async function main() {
  const { API_URL, TOKEN, APP, SOURCE_URL, DEPLOYMENT_ID } = process.env;
  const client = await clientFromToken(TOKEN, { apiUrl: API_URL, authApiUrl: API_URL });
  print({ exchanged: client._token.split(".").length === 3 });

  let target = DEPLOYMENT_ID;
  let finish;
  const finished = new Promise((resolve) => {
    finish = resolve;
  });
  let opened;
  const open = new Promise((resolve) => {
    opened = resolve;
  });
  const listener = await client.Apps.deploymentListener(APP);
  listener.onOpen(() => opened());
  listener.onNew((e) => print({ frame: "new", id: e.id, deployment: e.deployment }));
  listener.onLog((e) => print({ frame: "log", id: e.id, content: e.content }));
  listener.onStatus((e) => {
    print({ frame: "status", id: e.id, status: e.status });
    if (e.id === target && FINAL.includes(e.status)) finish(e.status);
  });
  listener.onClose((e) => print({ closed: e ? e.code : null }));
  await open;

  if (SOURCE_URL) {
    const created = await client.Deployments.create(APP, { source_url: SOURCE_URL });
    print({ created });
    target = created.id;
  }
  const timer = setTimeout(() => finish("timed out"), TIMEOUT_MS);
  const status = await finished;
  clearTimeout(timer);
  listener.close();
  const logs = await client.Deployments.logs(APP, target);
  print({ logs });
  print({ done: status });
}

main().catch((error) => {
  print({ error: String(error), status: error.status, data: error.data });
  process.exit(1);
});
