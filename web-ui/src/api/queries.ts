// Reads several pages use.
import { allPages, api, call, type Schemas } from "./client";
import type { Compliance, PlanDocument } from "./shapes";

export type PlanView = Omit<Schemas["PlanView"], "document"> & { document: PlanDocument };

export async function listPlans(): Promise<PlanView[]> {
  const items = await allPages((after) =>
    call(api.GET("/api/v1/plans", { params: { query: { limit: 500, after } } })),
  );
  return items as PlanView[];
}

export async function compliance(plan?: string): Promise<Compliance[]> {
  const list = await call(api.GET("/api/v1/compliance", { params: { query: { plan } } }));
  return list.items;
}

export async function recentRuns(plan?: string, limit = 500): Promise<Schemas["RunView"][]> {
  const page = await call(api.GET("/api/v1/runs", { params: { query: { plan, limit } } }));
  return page.items;
}

export async function recentEvents(plan?: string, max = 2000): Promise<Schemas["EventView"][]> {
  return allPages((after) => call(api.GET("/api/v1/events", { params: { query: { plan, limit: 500, after } } })), max);
}

export async function listSites(): Promise<Schemas["SiteView"][]> {
  return (await call(api.GET("/api/v1/sites"))).items;
}

export async function listPlugins(): Promise<Schemas["PluginView"][]> {
  return (await call(api.GET("/api/v1/plugins"))).items;
}
