import { login, logout } from "../matrix.js";
import { percentile, pool, round } from "../stats.js";
import type { Scenario } from "../scenario.js";

/**
 * N password logins, `concurrency` at a time, as at shift change. Each new session is logged out
 * again (untimed) so per-user device limits never refuse the next round.
 */
export const loginScenario: Scenario = async (ctx) => {
  const logins = ctx.num("logins", ctx.quick ? 200 : 1000);
  const concurrency = ctx.num("concurrency", 16);
  const accounts = ctx.num("accounts", Math.min(logins, 100));
  const { urls } = ctx.target;
  const creds = await ctx.target.users(accounts, "login");
  const latencies: number[] = [];
  let errors = 0;
  ctx.progress(`${logins} logins, ${concurrency} at a time`);
  const started = performance.now();
  await pool(
    Array.from({ length: logins }, (_, i) => i),
    concurrency,
    async (i) => {
      const c = creds[i % creds.length]!;
      const t0 = performance.now();
      try {
        const s = await login(urls[i % urls.length]!, c.user, c.password);
        const ms = performance.now() - t0;
        latencies.push(ms);
        await logout(s);
      } catch {
        errors++;
      }
    },
  );
  const wall = (performance.now() - started) / 1000;
  // Each cycle is a login and its (untimed) logout, so this rate is a floor for logins alone.
  const rate = latencies.length / wall;
  return {
    parameters: { logins, concurrency, accounts },
    figures: { logins_per_s: round(rate), login_p50_ms: round(percentile(latencies, 50)), login_p99_ms: round(percentile(latencies, 99)), wall_s: round(wall), errors },
    checks: [{ what: "errors", target: "0", pass: errors === 0 }],
  };
};
