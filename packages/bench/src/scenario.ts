import type { Target } from "./target.js";

export interface ScenarioContext {
  target: Target;
  quick: boolean;
  /** Numeric options from the command line (`--senders 50`, `--members 5000`, …). */
  num(name: string, fallback: number): number;
  progress(message: string): void;
}

/** A target from the issue, reported beside the figure; never a unit-test assertion. */
export interface Check {
  what: string;
  target: string;
  pass: boolean;
}

export interface ScenarioResult {
  parameters: Record<string, number>;
  figures: Record<string, number>;
  checks: Check[];
  /** Caveats a reader of the figures needs (capped sizes, extrapolations, machine noise). */
  notes?: string[];
  /** Series behind the figures (memory per step, samples); JSON only. */
  detail?: Record<string, unknown>;
}

export type Scenario = (ctx: ScenarioContext) => Promise<ScenarioResult>;
