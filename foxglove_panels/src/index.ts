// activate() only registers panels (create-foxglove-extension convention). Each panel file is wiring; the logic
// lives in plain .ts modules (hilSession, trainingDashboard, datasetBrowser, modelComparison, ros) with vitest tests.
import type { ExtensionContext } from "@foxglove/extension";

import { initDatasetBrowserPanel } from "./panels/DatasetBrowserPanel";
import { initHilSessionPanel } from "./panels/HilSessionPanel";
import { initModelComparisonPanel } from "./panels/ModelComparisonPanel";
import { initTrainingDashboardPanel } from "./panels/TrainingDashboardPanel";

// Panel names are what layouts reference: "<publisher>.<extension name>.<panel name>"
export const PANELS = {
  "Training Dashboard": initTrainingDashboardPanel,
  "Dataset Browser": initDatasetBrowserPanel,
  "Model Comparison": initModelComparisonPanel,
  "HIL Session": initHilSessionPanel,
} as const;

export function activate(extensionContext: ExtensionContext): void {
  for (const [name, initPanel] of Object.entries(PANELS)) {
    extensionContext.registerPanel({ name, initPanel });
  }
}
