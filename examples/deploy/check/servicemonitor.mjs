// Checks a ServiceMonitor (JSON, as kustomize rendered it) against the
// prometheus-operator's schema, as an API server with strict field validation would:
//
//     node servicemonitor.mjs TOOLS SERVICEMONITOR.json
//
// TOOLS holds @kubernetes-models/prometheus-operator (the CRDs' schemas, generated into
// TypeScript types and compiled validators) and typescript, from the npm registry.
// Two passes, because each catches what the other does not:
//   - the TypeScript compiler, strict, on the object as a literal of type IServiceMonitor:
//     an unknown field anywhere (`pth:` for `path:`) is an excess property, a wrong type
//     an assignment error; the compiled validators accept unknown fields;
//   - the compiled validator: required fields, enums and patterns (an `interval` of
//     `thirty`), which the types cannot express.
// Exits 1 naming the field on the first failure.
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import path from "node:path";
import { pathToFileURL } from "node:url";

const [tools, file] = process.argv.slice(2);
if (!tools || !file) {
  console.error("usage: servicemonitor.mjs TOOLS SERVICEMONITOR.json");
  process.exit(2);
}
const monitor = JSON.parse(readFileSync(file, "utf8"));
const model = "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/ServiceMonitor";

// The literal one field per line, so a compiler error's line names the field.
const body = JSON.stringify(monitor, null, 2).split("\n");
const header = [`import type { IServiceMonitor } from "${model}";`, "export const monitor: IServiceMonitor = "];
const dir = mkdtempSync(path.join(tools, "check-"));
const source = path.join(dir, "servicemonitor.mts");
writeFileSync(source, header.join("\n") + body.join("\n") + ";\n");
try {
  execFileSync(path.join(tools, "node_modules/.bin/tsc"),
    ["--noEmit", "--strict", "--module", "nodenext", "--moduleResolution", "nodenext", "--target", "es2022", source],
    { encoding: "utf8", stdio: "pipe" });
} catch (e) {
  const out = `${e.stdout ?? ""}${e.stderr ?? ""}`.trim();
  const lines = out.split("\n").map((l) => {
    const at = l.match(/\.mts\((\d+),\d+\): error TS\d+: (.*)/);
    if (!at) return `  ${l}`;
    const field = body[Number(at[1]) - header.length]?.trim() ?? "";
    return `  ${at[2]}\n    at: ${field}`;
  });
  console.error(`ServiceMonitor schema (${model}): rejected by the types\n${lines.join("\n")}`);
  process.exitCode = 1;
} finally {
  rmSync(dir, { recursive: true, force: true });
}
if (process.exitCode) process.exit();

// By its file: the package's exports map answers only `import` from inside TOOLS.
const { ServiceMonitor } = await import(pathToFileURL(path.join(tools, "node_modules", `${model}.js`)).href);
try {
  new ServiceMonitor(monitor).validate();
} catch (e) {
  console.error(`ServiceMonitor schema (${model}): ${e.message}`);
  process.exit(1);
}
console.log(`ServiceMonitor ${monitor.metadata?.name}: valid against ${model} (types strict, patterns)`);
