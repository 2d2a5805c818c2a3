/**
 * Writes docs/conformance.md: every client-server endpoint of the Matrix spec, whether Revier
 * serves it and which tests validate its responses against the spec.
 *
 *   npm run conformance                      regenerate docs/conformance.md
 *   npm run conformance -- --out FILE        write the report elsewhere
 *   npm run conformance -- --check           write nothing; exit 1 if an implemented endpoint has
 *                                            no test validating it, listing the offenders
 */
import { mkdirSync, writeFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { implementedRoutes } from "../packages/server/src/http/route-table.js";
import { listSpecOperations, matrixSpecDir } from "../packages/server/test/support/spec.js";
import { buildConformanceReport, scanCoverage } from "./conformance-lib.js";

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");

function parseArgs(argv: string[]): { check: boolean; out: string | undefined } {
  let check = false;
  let out: string | undefined;
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === "--check") check = true;
    else if (arg === "--out") {
      out = argv[++i];
      if (!out) throw new Error("--out needs a file name");
    } else if (arg?.startsWith("--out=")) out = arg.slice("--out=".length);
    else throw new Error(`unknown argument ${arg}`);
  }
  return { check, out };
}

async function main(): Promise<number> {
  const args = parseArgs(process.argv.slice(2));
  const operations = listSpecOperations();
  const routes = await implementedRoutes();
  const coverage = await scanCoverage(repoRoot);
  const specDir = matrixSpecDir();
  const rel = path.relative(repoRoot, specDir).split(path.sep).join("/");
  // A path outside the repository (the CI checkout) is meaningless to readers, so name it generically.
  const specSource = rel.startsWith("..") || path.isAbsolute(rel) ? "the Matrix spec's client-server OpenAPI files" : `\`${rel}\``;
  const report = buildConformanceReport({ operations, routes, coverage, specSource });

  const summary = `${report.specEndpoints} spec endpoints, ${report.implemented} implemented, ${report.covered} covered, ${report.ownRoutes.length} own routes`;
  if (args.check) {
    console.log(summary);
    if (report.uncovered.length === 0) return 0;
    console.error(`${report.uncovered.length} implemented endpoint(s) have no test calling assertConformsToSpec:`);
    for (const op of report.uncovered) console.error(`  ${op.method} ${op.path}  (${op.file ?? "?"})`);
    return 1;
  }
  const outFile = path.resolve(repoRoot, args.out ?? "docs/conformance.md");
  mkdirSync(path.dirname(outFile), { recursive: true });
  writeFileSync(outFile, report.markdown);
  console.log(`${path.relative(repoRoot, outFile)}: ${summary}`);
  return 0;
}

main().then(
  // Importing the route table may load modules that keep handles open; the report is done.
  (code) => process.exit(code),
  (err: unknown) => {
    console.error(err);
    process.exit(1);
  },
);
