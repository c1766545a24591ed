// Hash routes (#/plans/shop): the host serves one page, and every route is
// a link that can be bookmarked or opened in a new tab.
import { useEffect, useState } from "react";

export function currentPath(): string {
  const h = window.location.hash.replace(/^#/, "");
  return h.startsWith("/") ? h : "/";
}

export function useHashPath(): string {
  const [path, setPath] = useState(currentPath);
  useEffect(() => {
    const on = () => setPath(currentPath());
    window.addEventListener("hashchange", on);
    return () => window.removeEventListener("hashchange", on);
  }, []);
  return path;
}

export function navigate(path: string) {
  window.location.hash = path;
}

/** Match `/plans/:name` against a path; the params, or null. */
export function match(pattern: string, path: string): Record<string, string> | null {
  const [pathname] = path.split("?");
  const p = pattern.split("/");
  const a = (pathname ?? "").split("/");
  if (p.length !== a.length) return null;
  const params: Record<string, string> = {};
  for (let i = 0; i < p.length; i++) {
    const seg = p[i]!;
    if (seg.startsWith(":")) params[seg.slice(1)] = decodeURIComponent(a[i]!);
    else if (seg !== a[i]) return null;
  }
  return params;
}

/** The query string of the hash route as a map. */
export function query(path: string): URLSearchParams {
  return new URLSearchParams(path.split("?")[1] ?? "");
}
