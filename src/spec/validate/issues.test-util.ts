// What the spec validation tests share: a spec's issues as loadSpec reports them, and one issue expected among them.
import { expect } from 'vitest';
import { InvalidSpecError, type SpecIssue } from '../../shared/errors.js';
import { loadSpec } from '../load.js';

/** The issues `loadSpec` reports for `spec` (as JSON text): none when it loads. */
export function specIssues(spec: unknown): SpecIssue[] {
  try {
    loadSpec(JSON.stringify(spec));
  } catch (e) {
    if (e instanceof InvalidSpecError) return e.issues;
    throw e;
  }
  return [];
}

/** Expects an issue at `path` whose message holds `fragment` (all issues shown when it is missing). */
export function expectIssue(issues: SpecIssue[], path: string, fragment: string): void {
  expect(issues, JSON.stringify(issues, null, 1)).toContainEqual({
    path,
    message: expect.stringContaining(fragment),
  });
}
