// Cross-cutting: the operation context every mutating driver, agent and lab call takes.

/** Operation context of mutating calls: cancellation and progress lines. */
export interface OpContext {
  signal?: AbortSignal;
  progress?: (message: string) => void;
}
