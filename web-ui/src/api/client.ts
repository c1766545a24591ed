// The API client: typed from the host's OpenAPI document (schema.gen.ts is
// generated from docs/api/openapi.json at build time, so a change to the
// API that breaks the UI fails `npm run build`). Every error is RFC 9457
// problem+json; `ApiError` carries it to the page that shows it.
import createClient from "openapi-fetch";
import type { components, paths } from "./schema.gen";

export type Schemas = components["schemas"];
export type Problem = Schemas["Problem"];
export type FieldProblem = Schemas["FieldProblem"];
export type Role = Schemas["Role"];

const TOKEN_KEY = "rebound.token";
const EXPIRES_KEY = "rebound.token.expires_at";

// Kept for the tab only (sessionStorage): closing it signs out.
let token: string | null = globalThis.sessionStorage?.getItem(TOKEN_KEY) ?? null;
let expiresAt: number | null = Number(globalThis.sessionStorage?.getItem(EXPIRES_KEY)) || null;
const expiredListeners = new Set<() => void>();

/** Hold `value` as the bearer token; `expiresIn` (seconds) when it expires. */
export function setToken(value: string | null, expiresIn?: number) {
  token = value;
  expiresAt = value && expiresIn ? Date.now() + expiresIn * 1000 : null;
  if (value) sessionStorage.setItem(TOKEN_KEY, value);
  else sessionStorage.removeItem(TOKEN_KEY);
  if (expiresAt) sessionStorage.setItem(EXPIRES_KEY, String(expiresAt));
  else sessionStorage.removeItem(EXPIRES_KEY);
}

export function currentToken(): string | null {
  return token;
}

/** When the token held expires (ms since the epoch); null for one that does not (an API token). */
export function tokenExpiresAt(): number | null {
  return token ? expiresAt : null;
}

/** Called when the host answers 401 to a signed-in session. */
export function onSessionExpired(listener: () => void): () => void {
  expiredListeners.add(listener);
  return () => expiredListeners.delete(listener);
}

export class ApiError extends Error {
  readonly status: number;
  readonly problem: Problem;
  constructor(status: number, problem: Problem) {
    super(problem.detail || problem.title || `HTTP ${status}`);
    this.status = status;
    this.problem = problem;
  }
  get fieldErrors(): FieldProblem[] {
    return this.problem.errors ?? [];
  }
}

export const api = createClient<paths>({ baseUrl: "" });

api.use({
  onRequest({ request }) {
    if (token) request.headers.set("Authorization", `Bearer ${token}`);
    return request;
  },
  onResponse({ response, request }) {
    // A refused sign-in or renewal is that call's own answer, not an
    // expired session.
    const signingIn = ["/auth/login", "/auth/renew", "/auth/oidc/refresh"].some((p) => request.url.endsWith(p));
    if (response.status === 401 && token && !signingIn) {
      expiredListeners.forEach((l) => l());
    }
    return response;
  },
});

async function problemOf(response: Response, body: unknown): Promise<Problem> {
  if (body && typeof body === "object" && "status" in body) return body as Problem;
  return {
    type: "about:blank",
    title: response.statusText || "Error",
    status: response.status,
    detail: `The host answered ${response.status} ${response.statusText}.`,
  };
}

/** Unwrap an openapi-fetch result: the data, or an ApiError. */
export async function call<T>(
  pending: Promise<{ data?: T; error?: unknown; response: Response }>,
): Promise<T> {
  let result;
  try {
    result = await pending;
  } catch (e) {
    throw new ApiError(0, {
      type: "about:blank",
      title: "Network error",
      status: 0,
      detail: `The host could not be reached (${e instanceof Error ? e.message : String(e)}).`,
    });
  }
  const { data, error, response } = result;
  if (!response.ok) throw new ApiError(response.status, await problemOf(response, error));
  return data as T;
}

/** Every page of a paginated list (`{items, next}`), up to `max` items. */
export async function allPages<T>(
  page: (after?: string) => Promise<{ items: T[]; next?: string | null }>,
  max = 5000,
): Promise<T[]> {
  const items: T[] = [];
  let after: string | undefined;
  for (;;) {
    const p = await page(after);
    items.push(...p.items);
    if (!p.next || items.length >= max) return items;
    after = p.next;
  }
}

export function errorText(e: unknown): string {
  if (e instanceof ApiError) return e.message;
  if (e instanceof Error) return e.message;
  return String(e);
}
