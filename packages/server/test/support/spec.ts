/**
 * Validates response bodies against the Matrix client-server OpenAPI definitions.
 *
 * The spec is read from a checkout of matrix-spec that lives beside the repository
 * (`../shared/matrix-spec`), or from `REVIER_MATRIX_SPEC`. Every `$ref` is inlined up front so
 * each response schema is self-contained; compilation is deferred until a test actually asks
 * for a given operation and status, so a test file that checks three endpoints does not pay for
 * several hundred validators.
 */
import { AssertionError } from "node:assert";
import { existsSync, readFileSync, readdirSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { parse as parseYaml } from "yaml";
import Ajv2020Module from "ajv/dist/2020.js";
import addFormatsModule from "ajv-formats";
import type { ErrorObject, ValidateFunction } from "ajv";

export type JsonSchema = Record<string, unknown> | boolean;

export interface SpecOperation {
  /** Upper-case HTTP method. */
  method: string;
  /** Full path template including the server base path, e.g. `/_matrix/client/v3/rooms/{roomId}/messages`. */
  path: string;
  operationId: string;
  /** Spec file relative to `data/api/client-server/`, e.g. `message_pagination.yaml`. */
  file: string;
  /** `info.title` of the spec file, used to group the conformance report. */
  section: string;
  deprecated: boolean;
  /** JSON response schema per documented status code; undefined when the response has no JSON body. */
  responses: Record<string, JsonSchema | undefined>;
}

export interface ClientServerSpec {
  specDir: string;
  operations: readonly SpecOperation[];
}

const HTTP_METHODS = ["get", "put", "post", "delete", "options", "head", "patch", "trace"] as const;

// Keys whose children are names rather than keywords: a property called `example` or `format`
// must survive the keyword clean-up below.
const NAME_MAP_KEYS = new Set(["properties", "patternProperties", "$defs", "definitions", "dependentSchemas"]);

// Keywords that only annotate; a `$ref` with nothing but these beside it can simply be merged.
const ANNOTATION_KEYS = new Set(["description", "title", "deprecated", "summary", "readOnly", "writeOnly"]);

function findRepoRoot(): string {
  let dir = path.dirname(fileURLToPath(import.meta.url));
  for (;;) {
    const pkg = path.join(dir, "package.json");
    if (existsSync(pkg)) {
      const parsed = JSON.parse(readFileSync(pkg, "utf8")) as { workspaces?: unknown };
      if (parsed.workspaces) return dir;
    }
    const parent = path.dirname(dir);
    if (parent === dir) throw new Error("cannot locate the repository root (no package.json with workspaces above spec.ts)");
    dir = parent;
  }
}

/** Directory of the matrix-spec checkout (the one containing `data/`). */
export function matrixSpecDir(): string {
  const override = process.env.REVIER_MATRIX_SPEC;
  if (override) return path.resolve(override);
  return path.resolve(findRepoRoot(), "../shared/matrix-spec");
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function decodePointerToken(token: string): string {
  return decodeURIComponent(token).replace(/~1/g, "/").replace(/~0/g, "~");
}

/**
 * Inlines `$ref`s across YAML and JSON files. Results are memoised per target so shared
 * definitions (client events, error bodies) are resolved once and shared by identity.
 */
class RefResolver {
  private readonly docs = new Map<string, unknown>();
  private readonly memo = new Map<string, unknown>();
  private readonly active = new Set<string>();
  readonly formats = new Set<string>();

  load(file: string): unknown {
    let doc = this.docs.get(file);
    if (doc === undefined) {
      // YAML is a superset of JSON, so one parser covers both kinds of referenced file.
      doc = parseYaml(readFileSync(file, "utf8")) as unknown;
      this.docs.set(file, doc);
    }
    return doc;
  }

  resolveRef(ref: string, fromFile: string): unknown {
    const hash = ref.indexOf("#");
    const filePart = hash === -1 ? ref : ref.slice(0, hash);
    const pointer = hash === -1 ? "" : ref.slice(hash + 1);
    const file = filePart ? path.resolve(path.dirname(fromFile), filePart) : fromFile;
    const key = `${file}#${pointer}`;
    if (this.memo.has(key)) return this.memo.get(key);
    if (this.active.has(key)) {
      // A recursive definition cannot be inlined; the inner occurrence accepts anything,
      // which still validates everything above the recursion point.
      return { description: `recursive reference to ${path.basename(file)}#${pointer}` };
    }
    if (!existsSync(file)) throw new Error(`unresolvable $ref ${ref} from ${fromFile}: ${file} does not exist`);
    let target = this.load(file);
    for (const token of pointer.split("/").filter((t) => t !== "")) {
      const name = decodePointerToken(token);
      if (Array.isArray(target)) target = target[Number(name)];
      else if (isRecord(target)) target = target[name];
      else target = undefined;
      if (target === undefined) throw new Error(`unresolvable $ref ${ref} from ${fromFile}: pointer ${pointer} not found`);
    }
    this.active.add(key);
    try {
      const resolved = this.resolve(target, file, false);
      this.memo.set(key, resolved);
      return resolved;
    } finally {
      this.active.delete(key);
    }
  }

  resolve(node: unknown, file: string, isNameMap: boolean): unknown {
    if (Array.isArray(node)) return node.map((item) => this.resolve(item, file, false));
    if (!isRecord(node)) return node;
    if (!isNameMap && typeof node.$ref === "string") {
      const target = this.resolveRef(node.$ref, file);
      const siblings = Object.keys(node).filter((k) => k !== "$ref" && k !== "example" && k !== "examples");
      if (siblings.length === 0) return target;
      const rest: Record<string, unknown> = {};
      for (const k of siblings) rest[k] = node[k];
      const resolvedRest = this.resolve(rest, file, false) as Record<string, unknown>;
      if (isRecord(target) && siblings.every((k) => ANNOTATION_KEYS.has(k) || k.startsWith("x-"))) {
        return { ...target, ...resolvedRest };
      }
      // Keywords next to a $ref constrain in addition to the target (2020-12 semantics).
      return { ...resolvedRest, allOf: [target] };
    }
    const out: Record<string, unknown> = {};
    for (const [key, value] of Object.entries(node)) {
      if (!isNameMap) {
        // Examples are documentation, sometimes with `$ref`s of their own; nested `$id` and
        // `$schema` from event schema files would clash once inlined into one document.
        if (key === "example" || key === "examples" || key === "$id" || key === "$schema") continue;
        if (key === "format" && typeof value === "string") this.formats.add(value);
      }
      out[key] = this.resolve(value, file, !isNameMap && NAME_MAP_KEYS.has(key));
    }
    return out;
  }
}

function basePathOf(doc: Record<string, unknown>): string {
  const servers = doc.servers;
  if (!Array.isArray(servers) || servers.length === 0) return "";
  const server = servers[0] as { url?: unknown; variables?: Record<string, { default?: unknown }> };
  if (typeof server.url !== "string") return "";
  const vars = server.variables ?? {};
  const url = server.url.replace(/\{([^}]+)\}/g, (_m, name: string) => String(vars[name]?.default ?? ""));
  let pathname: string;
  if (url.startsWith("/")) pathname = url;
  else {
    try {
      pathname = new URL(url).pathname;
    } catch {
      return "";
    }
  }
  return pathname.replace(/\/+$/, "");
}

let cached: ClientServerSpec | undefined;
let cachedFormats: Set<string> | undefined;

/** Parses and resolves every client-server API file. The result is cached for the process. */
export function loadClientServerSpec(): ClientServerSpec {
  if (cached) return cached;
  const specDir = matrixSpecDir();
  const apiDir = path.join(specDir, "data/api/client-server");
  if (!existsSync(apiDir)) {
    throw new Error(`Matrix spec not found at ${specDir} (expected ${apiDir}); set REVIER_MATRIX_SPEC to a matrix-spec checkout`);
  }
  const resolver = new RefResolver();
  const operations: SpecOperation[] = [];
  const files = readdirSync(apiDir).filter((f) => /\.ya?ml$/.test(f)).sort();
  for (const name of files) {
    const file = path.join(apiDir, name);
    const doc = resolver.load(file);
    if (!isRecord(doc) || !isRecord(doc.paths)) continue;
    const base = basePathOf(doc);
    const section = isRecord(doc.info) && typeof doc.info.title === "string" ? doc.info.title : name;
    for (const [rawPath, rawItem] of Object.entries(doc.paths)) {
      // peeking_events.yaml spells its path "/events " so that it does not collide with the
      // deprecated /events of old_sync.yaml when the files are merged; the space is not real.
      const fullPath = base + rawPath.trim();
      const item = isRecord(rawItem) && typeof rawItem.$ref === "string" ? resolver.resolveRef(rawItem.$ref, file) : rawItem;
      if (!isRecord(item)) continue;
      for (const method of HTTP_METHODS) {
        const op = item[method];
        if (!isRecord(op)) continue;
        const responses: Record<string, JsonSchema | undefined> = {};
        const rawResponses = isRecord(op.responses) ? op.responses : {};
        for (const [status, rawResponse] of Object.entries(rawResponses)) {
          const response = resolver.resolve(rawResponse, file, false);
          const content = isRecord(response) && isRecord(response.content) ? response.content : undefined;
          const json = content?.["application/json"];
          const schema = isRecord(json) ? json.schema : undefined;
          responses[status] = isRecord(schema) || typeof schema === "boolean" ? schema : undefined;
        }
        operations.push({
          method: method.toUpperCase(),
          path: fullPath,
          operationId: typeof op.operationId === "string" ? op.operationId : `${method} ${fullPath}`,
          file: name,
          section,
          deprecated: op.deprecated === true,
          responses,
        });
      }
    }
  }
  cachedFormats = resolver.formats;
  cached = { specDir, operations };
  return cached;
}

/** Every operation of the client-server API, in spec file order. */
export function listSpecOperations(): readonly SpecOperation[] {
  return loadClientServerSpec().operations;
}

// ajv ships CommonJS with `exports.default`; under NodeNext the default import is the module object.
type Ajv2020Class = typeof Ajv2020Module.default;
const Ajv2020 = ((Ajv2020Module as unknown as { default?: Ajv2020Class }).default ?? Ajv2020Module) as Ajv2020Class;
type AddFormats = typeof addFormatsModule.default;
const addFormats = ((addFormatsModule as unknown as { default?: AddFormats }).default ?? addFormatsModule) as AddFormats;

/**
 * The identifier grammars from the spec's appendices, kept deliberately loose: room IDs lost
 * their server part in room version 12 and historical user IDs allow characters outside the
 * modern grammar, so only the sigil and overall shape are checked.
 */
const MATRIX_FORMATS: Record<string, RegExp> = {
  "mx-user-id": /^@[^:]*:.+$/,
  "mx-room-id": /^!.+$/,
  "mx-event-id": /^\$.+$/,
  "mx-room-alias": /^#[^:]*:.+$/,
  "mx-server-name": /^(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+)(?::\d{1,5})?$/,
  "mx-mxc-uri": /^mxc:\/\/[^/]+\/.+$/,
  "mx-unpadded-base64": /^[A-Za-z0-9+/]*$/,
  "mx-urlsafe-unpadded-base64": /^[A-Za-z0-9_-]*$/,
};

type AjvInstance = InstanceType<Ajv2020Class>;
let ajvInstance: AjvInstance | undefined;

function ajv(): AjvInstance {
  if (ajvInstance) return ajvInstance;
  const spec = loadClientServerSpec();
  const instance = new Ajv2020({ strict: false, allErrors: true, validateFormats: true, logger: false });
  addFormats(instance);
  for (const [name, re] of Object.entries(MATRIX_FORMATS)) instance.addFormat(name, re);
  // Anything the spec names that we cannot check (future mx-* formats, OpenAPI's own) passes.
  const declared = new Set(cachedFormats ?? []);
  const formatsFile = path.join(spec.specDir, "data/string-formats.yaml");
  if (existsSync(formatsFile)) {
    const listed = parseYaml(readFileSync(formatsFile, "utf8")) as unknown;
    if (isRecord(listed)) for (const name of Object.keys(listed)) declared.add(name);
  }
  for (const name of declared) if (!instance.formats[name]) instance.addFormat(name, true);
  ajvInstance = instance;
  return instance;
}

const validators = new Map<string, ValidateFunction>();

/** Compiles (once) the validator for one documented response; undefined when there is no JSON body. */
export function responseValidator(op: SpecOperation, status: string): ValidateFunction | undefined {
  const schema = op.responses[status];
  if (schema === undefined) return undefined;
  const key = `${op.file} ${op.method} ${op.path} ${status}`;
  let validate = validators.get(key);
  if (!validate) {
    validate = ajv().compile(schema);
    validators.set(key, validate);
  }
  return validate;
}

function templateShape(p: string): string {
  return p.replace(/\{[^}]*\}/g, "{}");
}

/** Operations for a method and path template; parameter names may differ from the spec's. */
export function findSpecOperations(method: string, pathTemplate: string): SpecOperation[] {
  const m = method.toUpperCase();
  const ops = listSpecOperations().filter((op) => op.method === m);
  const exact = ops.filter((op) => op.path === pathTemplate);
  if (exact.length > 0) return exact;
  const shape = templateShape(pathTemplate);
  return ops.filter((op) => templateShape(op.path) === shape);
}

function valueAt(body: unknown, pointer: string): unknown {
  let cur = body;
  for (const token of pointer.split("/").slice(1)) {
    const name = token.replace(/~1/g, "/").replace(/~0/g, "~");
    if (Array.isArray(cur)) cur = cur[Number(name)];
    else if (isRecord(cur)) cur = cur[name];
    else return undefined;
  }
  return cur;
}

function excerpt(value: unknown, max = 120): string {
  let text: string;
  try {
    text = JSON.stringify(value) ?? String(value);
  } catch {
    text = String(value);
  }
  return text.length > max ? `${text.slice(0, max - 1)}…` : text;
}

function describeError(body: unknown, err: ErrorObject): string {
  let detail = "";
  const params = err.params as Record<string, unknown>;
  if (err.keyword === "additionalProperties" && typeof params.additionalProperty === "string") detail = ` (${params.additionalProperty})`;
  else if (err.keyword === "enum" && Array.isArray(params.allowedValues)) detail = ` ${excerpt(params.allowedValues, 80)}`;
  return `${err.instancePath || "(root)"}: ${err.message ?? err.keyword}${detail} — got ${excerpt(valueAt(body, err.instancePath))}`;
}

const MAX_LISTED_ERRORS = 25;

/**
 * Throws an AssertionError unless `body` is a valid `status` response of the operation at
 * `pathTemplate` (the spec's full template, e.g. `/_matrix/client/v3/rooms/{roomId}/messages`).
 * Also throws when the operation or the status is not in the spec, so a typo cannot pass silently.
 */
export function assertConformsToSpec(method: string, pathTemplate: string, status: number, body: unknown): void {
  const ops = findSpecOperations(method, pathTemplate);
  const label = `${method.toUpperCase()} ${pathTemplate}`;
  if (ops.length === 0) {
    throw new AssertionError({ message: `${label} is not an operation in the Matrix client-server spec`, operator: "assertConformsToSpec" });
  }
  const statusKey = String(status);
  const candidates = ops.filter((op) => Object.hasOwn(op.responses, statusKey));
  if (candidates.length === 0) {
    const documented = [...new Set(ops.flatMap((op) => Object.keys(op.responses)))].join(", ");
    throw new AssertionError({ message: `${label} does not document status ${status} (documented: ${documented})`, operator: "assertConformsToSpec" });
  }
  const failures: string[] = [];
  // Two operations can share a method and path (the deprecated /events and its peeking variant);
  // matching either is conformance.
  for (const op of candidates) {
    const validate = responseValidator(op, statusKey);
    if (!validate || validate(body)) return;
    const errors = validate.errors ?? [];
    const lines = [...new Set(errors.map((e) => describeError(body, e)))];
    const shown = lines.slice(0, MAX_LISTED_ERRORS).map((l) => `  - ${l}`);
    if (lines.length > MAX_LISTED_ERRORS) shown.push(`  … and ${lines.length - MAX_LISTED_ERRORS} more`);
    failures.push(`${op.file} (${op.operationId}):\n${shown.join("\n")}`);
  }
  throw new AssertionError({
    message: `${label} ${status} body does not conform to the spec\n${failures.join("\n")}`,
    operator: "assertConformsToSpec",
  });
}
