/**
 * What a start opened, in the order it opened it. A start that fails halfway and a stop both run it backwards, so
 * that nothing is closed while something opened after it still uses it (the fast path before the tunnel it
 * redirects into, the data path before its sockets).
 */
export class Undo {
  private readonly steps: (() => void | Promise<void>)[] = [];

  push(step: () => void | Promise<void>): void {
    this.steps.push(step);
  }

  /** Runs every step, newest first, once: a second run finds nothing left. */
  async run(): Promise<void> {
    for (const step of this.steps.splice(0).reverse()) await step();
  }
}
