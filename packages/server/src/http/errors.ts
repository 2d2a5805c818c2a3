import type { FastifyError } from "fastify";
import { MatrixError } from "@revier/protocol";
import { JsonBodyError } from "../lib/json-body.js";

interface AjvError {
  keyword: string;
  instancePath: string;
  params: Record<string, unknown>;
  message?: string;
}

/** Maps whatever was thrown to a MatrixError; anything unexpected becomes a logged 500 without details. */
export function toMatrixError(err: unknown): { error: MatrixError; unexpected: boolean } {
  if (err instanceof MatrixError) return { error: err, unexpected: false };
  if (err instanceof JsonBodyError) {
    if (err.kind === "depth" || err.kind === "nul" || err.kind === "surrogate" || err.kind === "proto") return { error: new MatrixError("M_BAD_JSON", err.message), unexpected: false };
    return { error: new MatrixError("M_NOT_JSON", err.message), unexpected: false };
  }
  const fe = err as FastifyError & { validation?: AjvError[]; validationContext?: string };
  if (fe.validation) return { error: fromValidation(fe.validation, fe.validationContext ?? "body"), unexpected: false };
  switch (fe.code) {
    case "FST_ERR_CTP_BODY_TOO_LARGE":
      return { error: new MatrixError("M_TOO_LARGE", "Request body is too large"), unexpected: false };
    case "FST_ERR_CTP_INVALID_MEDIA_TYPE":
    case "FST_ERR_CTP_EMPTY_JSON_BODY":
    case "FST_ERR_CTP_INVALID_CONTENT_LENGTH":
      return { error: new MatrixError("M_NOT_JSON", "Request body must be JSON (Content-Type: application/json)"), unexpected: false };
    case "FST_ERR_BAD_URL":
    case "FST_ERR_ASYNC_CONSTRAINT":
      return { error: new MatrixError("M_UNRECOGNIZED", "Unrecognized request"), unexpected: false };
  }
  if (typeof fe.statusCode === "number" && fe.statusCode >= 400 && fe.statusCode < 500) {
    return { error: new MatrixError("M_UNKNOWN", fe.message || "Bad request", { status: fe.statusCode }), unexpected: false };
  }
  return { error: new MatrixError("ORG_REVIER_INTERNAL", "Internal server error"), unexpected: true };
}

function fromValidation(errors: AjvError[], context: string): MatrixError {
  const first = errors[0];
  const where = context === "querystring" ? "query parameter" : context === "params" ? "path parameter" : "field";
  if (!first) return new MatrixError("M_BAD_JSON", "Invalid request");
  const path = first.instancePath.replace(/^\//, "").replace(/\//g, ".");
  if (first.keyword === "required") {
    const missing = String(first.params.missingProperty ?? "");
    const full = path ? `${path}.${missing}` : missing;
    return new MatrixError(context === "body" && path ? "M_BAD_JSON" : "M_MISSING_PARAM", `Missing ${where} '${full}'`);
  }
  const detail = `${where} '${path || "(root)"}' ${first.message ?? "is invalid"}`;
  if (context === "body") return new MatrixError(first.keyword === "type" && !path ? "M_NOT_JSON" : "M_BAD_JSON", `Invalid ${detail}`);
  return new MatrixError("M_INVALID_PARAM", `Invalid ${detail}`);
}
