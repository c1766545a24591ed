// An OpenID provider for the browser tests: node-oidc-provider (a certified
// implementation, not ours) on loopback, with Rebound's web UI registered
// as a public client that must use PKCE, and access tokens issued as JWTs
// (RFC 9068) for the API's audience with the user's Rebound roles in a
// `roles` claim. Its development login form takes any name; the password
// is not checked. Users: `olivia` is an operator, anyone else has no role.
// Access tokens live 20 seconds, and every sign-in also gets a refresh
// token (rotated on each use, as for any public client), so the browser
// test sees the UI renew a session before its token expires. The same
// client serves `rebound login --oidc` (e2e/cli-login.test.mjs), whose
// redirect comes back to a loopback port of its own, or which signs in with
// a user code (the device authorization grant).
//
// `REBOUND_UI_URL=http://127.0.0.1:PORT/ node e2e/idp.mjs` prints
// `idp on http://127.0.0.1:PORT2` and serves until it is killed.
// host/rebound/tests/ui_test.rs starts it before the host, which trusts it
// as `[[api.auth.oidc]]` with client id `rebound-ui` and scope
// `openid rebound`.
import { generateKeyPairSync } from "node:crypto";
import { createServer } from "node:http";
import Provider from "oidc-provider";

const REDIRECT = process.env.REBOUND_UI_URL;
if (!REDIRECT) throw new Error("REBOUND_UI_URL names the web UI the provider redirects back to");

const ROLES = { olivia: ["operator"] };

const { privateKey } = generateKeyPairSync("rsa", { modulusLength: 2048 });
const jwk = { ...privateKey.export({ format: "jwk" }), kid: "lab-idp-1", alg: "RS256", use: "sig" };

const server = createServer();
await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
const issuer = `http://127.0.0.1:${server.address().port}`;

const provider = new Provider(issuer, {
  clients: [
    {
      client_id: "rebound-ui",
      token_endpoint_auth_method: "none",
      // A native client: a redirect to a loopback address matches on any
      // port (RFC 8252 §7.3), which `rebound login --oidc` listens on.
      application_type: "native",
      redirect_uris: [REDIRECT, "http://127.0.0.1/callback"],
      post_logout_redirect_uris: [REDIRECT],
      grant_types: ["authorization_code", "refresh_token", "urn:ietf:params:oauth:grant-type:device_code"],
      response_types: ["code"],
    },
  ],
  jwks: { keys: [jwk] },
  pkce: { required: () => true },
  // As Keycloak does for its clients by default: no `offline_access` needed.
  issueRefreshToken: async (_ctx, client) => client.grantTypeAllowed("refresh_token"),
  scopes: ["openid", "rebound"],
  async findAccount(_ctx, id) {
    return { accountId: id, claims: async () => ({ sub: id, name: id }) };
  },
  features: {
    devInteractions: { enabled: true },
    // RFC 8628, for `rebound login --oidc --device`.
    deviceFlow: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: async () => "urn:rebound:api",
      useGrantedResource: async () => true,
      getResourceServerInfo: async () => ({
        scope: "rebound",
        audience: "rebound-api",
        accessTokenTTL: 20,
        accessTokenFormat: "jwt",
        jwt: { sign: { alg: "RS256" } },
      }),
    },
  },
  async extraTokenClaims(_ctx, token) {
    return { roles: ROLES[token.accountId] ?? [] };
  },
});
provider.on("server_error", (_ctx, err) => console.error("idp error:", err));
server.on("request", provider.callback());
console.log(`idp on ${issuer}`);
