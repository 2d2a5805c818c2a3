/**
 * Node flags `revier serve` is meant to run with: `npm start`, the systemd unit in
 * docs/operations.md and the bench's server processes all pass these (a test keeps them in step).
 * V8 reads them when the process starts; set later (v8.setFlagsFromString) they change nothing.
 *
 * `--max-semi-space-size=32`: a long-poll answer allocates tens of kilobytes that die young,
 * while thousands of parked long-polls live for up to a second. With V8's default 16 MB semi
 * space, a 5,000-member wave filled the young generation every few dozen milliseconds, and each
 * scavenge copied every waiting request made since the last one. With a four times larger one
 * (64 MB) the collector's time per answer in that wave fell by about 30 %; 32 MB did as well in
 * three alternating pairs against 64 MB, at 50–100 MB less resident memory. The cost against the
 * default: once load has grown the young generation to its 64 MB, it stays there (see
 * docs/scaling.md).
 */
export const SERVER_NODE_FLAGS: readonly string[] = ["--max-semi-space-size=32"];
