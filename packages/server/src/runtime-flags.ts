/**
 * Node flags `revier serve` is meant to run with: `npm start`, the systemd unit in
 * docs/operations.md and the bench's server processes all pass these (a test keeps them in step).
 * V8 reads them when the process starts; set later (v8.setFlagsFromString) they change nothing.
 *
 * `--max-semi-space-size=64`: a long-poll answer allocates tens of kilobytes that die young,
 * while thousands of parked long-polls live for up to a second. With V8's default 16 MB semi
 * space, a 5,000-member wave filled the young generation every few dozen milliseconds, and each
 * scavenge copied every waiting request made since the last one. With a four times larger one
 * the collector's time per answer in that wave fell by about 30 %. The cost: once load has grown
 * the young generation to its 128 MB, it stays there (about 100 MB more resident memory than with
 * the default; see docs/scaling.md).
 */
export const SERVER_NODE_FLAGS: readonly string[] = ["--max-semi-space-size=64"];
