// Automatic balancing (`cluster.balance: automatic`): one round per period on the active controller, with hysteresis
// so that VMs never ping-pong. Pure: the clock is an input (auto.test.ts replays loads round by round).
// - start band: act only when a spread exceeds the threshold by AUTO_TRIGGER_MARGIN_POINTS (a plan then brings it
//   within the threshold itself, so a cluster just balanced sits inside a band it will not leave on noise);
// - persistence: the spread must stay out of the band for AUTO_SUSTAIN_ROUNDS rounds in a row (a spike does nothing);
// - cooldown: a VM the balancer moved does not move again for AUTO_COOLDOWN_MS;
// - pace: at most AUTO_MOVES_PER_ROUND moves per round; the next round re-measures before doing more.
import type { BalanceInput, BalanceMove, BalancePlan } from './plan.js';
import { planBalance } from './plan.js';

/** Points above the threshold a spread must reach before an automatic round acts. */
export const AUTO_TRIGGER_MARGIN_POINTS = 5;
/** Rounds in a row a spread must stay above threshold + margin. */
export const AUTO_SUSTAIN_ROUNDS = 2;
/** A VM moved by the balancer stays put this long. */
export const AUTO_COOLDOWN_MS = 15 * 60_000;
/** Moves one automatic round starts at most. */
export const AUTO_MOVES_PER_ROUND = 2;
/** The period of automatic rounds. */
export const AUTO_INTERVAL_MS = 60_000;

/** What automatic balancing remembers between rounds (in memory: a new active controller starts afresh). */
export interface AutoMemory {
  /** Rounds in a row out of the band. */
  overRounds: number;
  /** VM -> when the balancer last moved it (ms). */
  moved: Record<string, number>;
}

/** A fresh memory. */
export function emptyAutoMemory(): AutoMemory {
  return { overRounds: 0, moved: {} };
}

/** One round's outcome. */
export interface AutoRound {
  memory: AutoMemory;
  plan: BalancePlan;
  /** Moves to run now (a prefix of the plan's). */
  moves: BalanceMove[];
  /** Why it acts or waits, in words. */
  reason: string;
}

/** One automatic round at `now` over `input` (the gathered loads). */
export function autoBalanceRound(memory: AutoMemory, input: BalanceInput, now: number): AutoRound {
  const moved: Record<string, number> = {};
  for (const [vm, at] of Object.entries(memory.moved)) if (now - at < AUTO_COOLDOWN_MS) moved[vm] = at;
  const vms = input.vms.map((v) =>
    moved[v.name] !== undefined && !v.pinned
      ? {
          ...v,
          pinned: `moved by the balancer ${Math.round((now - moved[v.name]!) / 1000)} s ago (cooldown)`,
        }
      : v,
  );
  const plan = planBalance({ ...input, vms });
  const t = plan.thresholdPoints;
  const band = t + AUTO_TRIGGER_MARGIN_POINTS;
  const s = plan.before.spread;
  const spreads = `CPU spread ${s.cpu}, memory spread ${s.memory} points`;
  if (s.cpu <= band && s.memory <= band)
    return {
      memory: { overRounds: 0, moved },
      plan,
      moves: [],
      reason: `${spreads}: within the threshold ${t} + margin ${AUTO_TRIGGER_MARGIN_POINTS}, nothing to do`,
    };
  const overRounds = memory.overRounds + 1;
  if (overRounds < AUTO_SUSTAIN_ROUNDS)
    return {
      memory: { overRounds, moved },
      plan,
      moves: [],
      reason: `${spreads}: above ${band} for ${overRounds} round(s); acts once it lasts ${AUTO_SUSTAIN_ROUNDS}`,
    };
  const moves = plan.moves.slice(0, AUTO_MOVES_PER_ROUND);
  for (const m of moves) moved[m.vm] = now;
  return {
    memory: { overRounds: 0, moved },
    plan,
    moves,
    reason: moves.length
      ? `${spreads}: above ${band} for ${overRounds} rounds; moving ${moves.map((m) => `${m.vm} ${m.from} -> ${m.to}`).join(', ')}`
      : `${spreads}: above ${band} but no move helps (${plan.notes.join('; ') || 'see the plan'})`,
  };
}
