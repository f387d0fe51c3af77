// A fake PanelExtensionContext for vitest + jsdom: records what the panel watches and subscribes to, lets a test
// deliver a render (as Foxglove does) and answers callService from a table of handlers.
import type { PanelExtensionContext, RenderState } from "@foxglove/extension";
import { act } from "react";

export type ServiceHandler = (request: unknown) => unknown;

export class FakeContext {
  readonly panelElement = document.createElement("div");
  readonly initialState = undefined;
  watched = new Set<string>();
  subscribed: string[] = [];
  calls: { service: string; request: unknown }[] = [];
  parameters: { name: string; value: unknown }[] = [];
  handlers = new Map<string, ServiceHandler>();
  renders = 0;
  done = 0;
  onRender?: (state: RenderState, done: () => void) => void;

  constructor(readonly withServices = true) {
    document.body.appendChild(this.panelElement);
  }

  asContext(): PanelExtensionContext {
    const ctx: Record<string, unknown> = {
      panelElement: this.panelElement,
      initialState: this.initialState,
      dataSourceProfile: "ros2",
      layout: {},
      watch: (field: string) => this.watched.add(field),
      saveState: () => undefined,
      setParameter: (name: string, value: unknown) => this.parameters.push({ name, value }),
      setPreviewTime: () => undefined,
      seekPlayback: () => undefined,
      subscribe: (subs: ({ topic: string } | string)[]) => {
        this.subscribed = subs.map((s) => (typeof s === "string" ? s : s.topic));
      },
      unsubscribeAll: () => {
        this.subscribed = [];
      },
      subscribeAppSettings: () => undefined,
      setSharedPanelState: () => undefined,
      setVariable: () => undefined,
      setDefaultPanelTitle: () => undefined,
      updatePanelSettingsEditor: () => undefined,
    };
    if (this.withServices) {
      ctx.callService = async (service: string, request: unknown) => {
        this.calls.push({ service, request });
        const handler = this.handlers.get(service);
        if (!handler) {
          throw new Error(`Service ${service} is not available`);
        }
        return handler(request);
      };
    }
    Object.defineProperty(ctx, "onRender", {
      get: () => this.onRender,
      set: (fn) => {
        this.onRender = fn;
      },
    });
    return ctx as unknown as PanelExtensionContext;
  }

  /** Delivers messages as one render (currentFrame), like Foxglove does while playing. */
  async render(messages: Record<string, unknown>): Promise<void> {
    const currentFrame = Object.entries(messages).map(([topic, message]) => ({
      topic, schemaName: "", receiveTime: { sec: 0, nsec: 0 }, message, sizeInBytes: 0,
    }));
    await act(async () => {
      this.renders += 1;
      this.onRender?.({ currentFrame } as RenderState, () => {
        this.done += 1;
      });
    });
  }

  text(): string {
    return this.panelElement.textContent ?? "";
  }

  button(label: string): HTMLButtonElement {
    const found = [...this.panelElement.querySelectorAll("button")].find((b) => b.textContent?.includes(label));
    if (!found) {
      throw new Error(`no button "${label}" in: ${this.text()}`);
    }
    return found;
  }

  async click(el: Element): Promise<void> {
    await act(async () => {
      (el as HTMLElement).click();
      await new Promise((r) => setTimeout(r, 0));
    });
  }
}

export async function mount(init: (ctx: PanelExtensionContext) => () => void, fake: FakeContext):
  Promise<() => void> {
  let cleanup: () => void = () => undefined;
  await act(async () => {
    cleanup = init(fake.asContext());
  });
  return () => act(() => cleanup());
}
