/**
 * A small RFC 4180 reader: commas, double-quoted fields with `""` escapes and embedded line
 * breaks, CRLF or LF. Returns each record with the line it started on, for per-row error reports.
 */
export function parseCsv(text: string): { line: number; fields: string[] }[] {
  const records: { line: number; fields: string[] }[] = [];
  let fields: string[] = [];
  let field = "";
  let quoted = false;
  let line = 1;
  let recordLine = 1;
  let i = 0;
  const src = text.startsWith("\uFEFF") ? text.slice(1) : text;
  const endRecord = () => {
    fields.push(field);
    if (!(fields.length === 1 && fields[0]!.trim() === "")) records.push({ line: recordLine, fields });
    fields = [];
    field = "";
    recordLine = line;
  };
  while (i < src.length) {
    const ch = src[i]!;
    if (quoted) {
      if (ch === '"') {
        if (src[i + 1] === '"') {
          field += '"';
          i += 2;
          continue;
        }
        quoted = false;
      } else {
        if (ch === "\n") line++;
        field += ch;
      }
      i++;
      continue;
    }
    if (ch === '"' && field === "") quoted = true;
    else if (ch === ",") {
      fields.push(field);
      field = "";
    } else if (ch === "\r" && src[i + 1] === "\n") {
      i++;
      line++;
      endRecord();
    } else if (ch === "\n") {
      line++;
      endRecord();
    } else field += ch;
    i++;
  }
  if (field !== "" || fields.length > 0) endRecord();
  return records;
}
