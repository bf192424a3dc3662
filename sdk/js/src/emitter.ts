/** Event name → listener arguments (an interface such as `{ message: [m: Message] }`). */
export type EventMap<E> = { [K in keyof E]: unknown[] };

export type Listener<A extends unknown[]> = (...args: A) => void;

/**
 * A small typed event emitter (no dependency on Node's `events` or the DOM's `EventTarget`, so
 * the same code runs in browsers and Node). A throwing listener does not stop the others: its
 * error is reported asynchronously, like an uncaught error in a DOM event handler.
 */
export class Emitter<E extends EventMap<E>> {
  private listeners: { [K in keyof E]?: Set<Listener<E[K]>> } = {};

  /** Adds a listener; returns a function that removes it. */
  on<K extends keyof E>(event: K, fn: Listener<E[K]>): () => void {
    (this.listeners[event] ??= new Set()).add(fn);
    return () => this.off(event, fn);
  }

  /** Adds a listener that runs once. */
  once<K extends keyof E>(event: K, fn: Listener<E[K]>): () => void {
    const off = this.on(event, (...args: E[K]) => {
      off();
      fn(...args);
    });
    return off;
  }

  off<K extends keyof E>(event: K, fn: Listener<E[K]>): void {
    this.listeners[event]?.delete(fn);
  }

  protected emit<K extends keyof E>(event: K, ...args: E[K]): void {
    const set = this.listeners[event];
    if (!set) return;
    for (const fn of [...set]) {
      try {
        fn(...args);
      } catch (e) {
        queueMicrotask(() => {
          throw e;
        });
      }
    }
  }
}
