// activate() only registers panels (create-foxglove-extension convention); panels arrive with the Foxglove
// panels issue. The view-models they render (e.g. recorderStatus.ts) are plain modules with vitest tests.
import type { ExtensionContext } from "@foxglove/extension";

export function activate(_extensionContext: ExtensionContext): void {
  // panels are registered here
}
