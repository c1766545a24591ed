//! Who is calling, and may they: bearer JWTs from the local issuer (HS256,
//! its key generated on first start and kept in the store) or from
//! external OIDC issuers (RS256/ES256 keys from their JWKS), and scoped API
//! tokens (`rbt_…`, stored as SHA-256 digests). Every JWT is checked for
//! signature, expiry, not-before, issuer and audience, with the algorithm
//! pinned per issuer and the key chosen by `kid` — a token never picks its
//! own algorithm or key.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::sync::{Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use argon2::Argon2;
use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use base64::Engine;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rebound_store::{Store, StoreError, TokenRecord, UserRecord};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use utoipa::ToSchema;

use crate::problem::Problem;
use crate::sign_in::{
    self, OidcCodeRequest, OidcDeviceRequest, OidcRefreshRequest, SignInProvider,
};
use crate::throttle::LoginThrottle;

/// The prefix of API tokens, so a leaked one is recognisable.
pub const TOKEN_PREFIX: &str = "rbt_";

/// The store's name of the local issuer's signing key.
const LOCAL_KEY: &str = "jwt-hs256";

/// What a principal may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    Viewer,
    PluginPublisher,
    Operator,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Viewer => "viewer",
            Self::PluginPublisher => "plugin-publisher",
            Self::Operator => "operator",
            Self::Admin => "admin",
        }
    }

    /// Whether this role may do `need`.
    pub fn allows(self, need: Need) -> bool {
        match need {
            Need::Read => true,
            Need::Operate => matches!(self, Self::Operator | Self::Admin),
            Need::Publish => matches!(self, Self::PluginPublisher | Self::Admin),
            Need::Administer => self == Self::Admin,
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "viewer" => Ok(Self::Viewer),
            "plugin-publisher" => Ok(Self::PluginPublisher),
            "operator" => Ok(Self::Operator),
            "admin" => Ok(Self::Admin),
            other => Err(format!(
                "unknown role '{other}'; roles are admin, operator, viewer, plugin-publisher"
            )),
        }
    }
}

/// What an endpoint requires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Any authenticated principal.
    Read,
    /// Runs and approvals: operator or admin.
    Operate,
    /// Plugins: plugin-publisher or admin.
    Publish,
    /// Plans, tokens, users, the audit log, quarantine: admin.
    Administer,
}

/// The authenticated caller, as the audit log names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct Principal {
    /// `user:NAME`, `token:ID` or `oidc:SUBJECT@ISSUER`.
    pub name: String,
    pub role: Role,
}

impl Principal {
    /// Refuse with 403 unless the role allows `need`.
    pub fn require(&self, need: Need) -> Result<(), Problem> {
        if self.role.allows(need) {
            Ok(())
        } else {
            let wants = match need {
                Need::Read => "any role",
                Need::Operate => "the operator or admin role",
                Need::Publish => "the plugin-publisher or admin role",
                Need::Administer => "the admin role",
            };
            Err(Problem::forbidden(format!(
                "{} has the {} role; this needs {wants}",
                self.name, self.role
            )))
        }
    }
}

/// An external OIDC issuer whose tokens are accepted.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcIssuer {
    /// The `iss` its tokens carry.
    pub issuer: String,
    /// The `aud` its tokens must carry for this host.
    pub audience: String,
    /// Where its signing keys are published.
    pub jwks_url: String,
    /// `RS256` or `ES256`: the only algorithm accepted from it.
    pub algorithm: String,
    /// The claim naming the caller's Rebound role (a string or an array;
    /// the highest known role wins).
    #[serde(default = "default_role_claim")]
    pub role_claim: String,
    /// The web UI's client id at this issuer (a public client, with PKCE):
    /// set, the UI offers "Sign in with …" for it ([`crate::sign_in`]);
    /// unset, its tokens are accepted but the UI has no button for it.
    #[serde(default)]
    pub client_id: Option<String>,
    /// The button's label (default: the issuer's host).
    #[serde(default)]
    pub name: Option<String>,
    /// The scopes the UI asks for: those that make the issuer put
    /// `audience` in the access token it issues.
    #[serde(default = "default_scope")]
    pub scope: String,
}

fn default_role_claim() -> String {
    "roles".into()
}

fn default_scope() -> String {
    "openid".into()
}

/// Authentication settings (`[auth]` of the API config).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// The local issuer's `iss`.
    pub issuer: String,
    /// The `aud` local tokens carry and require.
    pub audience: String,
    /// Lifetime of a token from `POST /api/v1/auth/login`.
    pub token_ttl_seconds: u64,
    /// Clock skew tolerated on `exp` and `nbf`.
    pub leeway_seconds: u64,
    /// The least time between two fetches of an OIDC issuer's JWKS that
    /// tokens with unknown key ids prompt (its keys rotated), so forged
    /// key ids cannot make the host hammer the issuer.
    pub jwks_refresh_seconds: u64,
    /// How long an OIDC issuer's fetched keys are trusted without fetching
    /// its JWKS again: a key the issuer removed (retired, or revoked after
    /// a leak) is refused at most this long after, even when every token
    /// names a key the host knows.
    pub jwks_max_age_seconds: u64,
    /// How long after signing in with the password a local session may
    /// still be renewed (`POST /api/v1/auth/renew`); then the user signs
    /// in again.
    pub session_max_seconds: u64,
    /// Failed password sign-ins in a row a user is allowed before it must
    /// wait `login_lockout_seconds` (doubling with each failure after, up
    /// to a quarter hour) — right password or wrong.
    pub login_attempts: u32,
    pub login_lockout_seconds: u64,
    pub oidc: Vec<OidcIssuer>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            issuer: "rebound".into(),
            audience: "rebound-api".into(),
            token_ttl_seconds: 3600,
            leeway_seconds: 30,
            jwks_refresh_seconds: 60,
            jwks_max_age_seconds: 3600,
            session_max_seconds: 12 * 3600,
            login_attempts: 5,
            login_lockout_seconds: 30,
            oidc: Vec::new(),
        }
    }
}

/// Why authentication could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum AuthSetupError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("OIDC issuer '{issuer}': {reason}")]
    Oidc { issuer: String, reason: String },
    #[error("hashing a password: {0}")]
    Hash(String),
    #[error("building the HTTP client for OIDC issuers: {0}")]
    Http(String),
}

struct Issuer {
    issuer: String,
    audience: String,
    algorithm: Algorithm,
    keys: RwLock<HashMap<String, DecodingKey>>,
    /// `None`: the local issuer (role in the `role` claim).
    role_claim: Option<String>,
    /// An OIDC issuer's JWKS; `None` for the local issuer.
    jwks: Option<Jwks>,
}

/// Where an OIDC issuer's keys come from, and when they were fetched.
struct Jwks {
    url: String,
    /// The last fetch begun: a token with a key id the host does not know
    /// (the issuer rotated its keys) has the JWKS fetched again, at most
    /// once per `jwks_refresh_seconds`.
    tried: Mutex<Instant>,
    /// The last fetch that replaced the keys: older than
    /// `jwks_max_age_seconds`, they are fetched again before a token is
    /// trusted.
    fetched: Mutex<Instant>,
}

/// Local claims.
#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    sub: String,
    iss: String,
    aud: String,
    exp: u64,
    nbf: u64,
    iat: u64,
    /// When the user signed in with the password (OIDC's claim name): a
    /// renewed token keeps it, so the password and session-age checks
    /// count from the sign-in, not the renewal.
    auth_time: u64,
    role: String,
}

/// A token issued by `POST /api/v1/auth/login`, or redeemed from an
/// issuer by `POST /api/v1/auth/oidc`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct IssuedToken {
    pub access_token: String,
    /// Always `Bearer`.
    pub token_type: String,
    pub expires_in: u64,
    /// The issuer's ID token (OIDC sign-in only): the web UI names it
    /// (`id_token_hint`) when it ends the session at the issuer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id_token: Option<String>,
    /// The issuer's refresh token (OIDC sign-in only, when the issuer
    /// gives one): `POST /api/v1/auth/oidc/refresh` trades it for a new
    /// access token before this one expires.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
}

/// The verifier of every credential the API accepts.
pub struct Auth {
    local_kid: String,
    local_key: EncodingKey,
    ttl: u64,
    leeway: u64,
    session_max: u64,
    throttle: LoginThrottle,
    issuers: Vec<Issuer>,
    /// The issuers the web UI offers sign-in with.
    providers: Vec<SignInProvider>,
    /// For the issuers' endpoints.
    http: reqwest::Client,
    jwks_refresh: Duration,
    jwks_max_age: Duration,
    /// Verified against when the user does not exist, so a wrong name
    /// costs as long as a wrong password.
    dummy_hash: String,
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Auth")
            .field("local_kid", &self.local_kid)
            .field(
                "issuers",
                &self.issuers.iter().map(|i| &i.issuer).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// An argon2id PHC hash of a password.
pub fn hash_password(password: &str) -> Result<String, AuthSetupError> {
    Argon2::default()
        .hash_password(password.as_bytes(), &SaltString::generate(&mut OsRng))
        .map(|h| h.to_string())
        .map_err(|e| AuthSetupError::Hash(e.to_string()))
}

fn verify_password(password: &str, hash: &str) -> bool {
    PasswordHash::new(hash).is_ok_and(|parsed| {
        Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok()
    })
}

/// A fresh random secret, hex.
fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::Rng::fill(&mut rand::thread_rng(), &mut buf[..]);
    hex::encode(buf)
}

fn digest(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

impl Auth {
    /// Load (or, on the store's first start, generate) the local signing
    /// key, and fetch each OIDC issuer's JWKS.
    pub async fn start(store: &Store, config: &AuthConfig) -> Result<Self, AuthSetupError> {
        let secret = store.host_key(LOCAL_KEY, &random_hex(32)).await?;
        let local_kid = format!("local-{}", &digest(&secret)[..12]);
        let mut issuers = vec![Issuer {
            issuer: config.issuer.clone(),
            audience: config.audience.clone(),
            algorithm: Algorithm::HS256,
            keys: RwLock::new(HashMap::from([(
                local_kid.clone(),
                DecodingKey::from_secret(secret.as_bytes()),
            )])),
            role_claim: None,
            jwks: None,
        }];
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| AuthSetupError::Http(e.to_string()))?;
        let mut providers = Vec::new();
        for oidc in &config.oidc {
            issuers.push(fetch_issuer(&http, oidc).await?);
            providers.extend(sign_in::discover(&http, oidc).await?);
        }
        let dummy_hash = hash_password(&random_hex(16))?;
        Ok(Self {
            local_key: EncodingKey::from_secret(secret.as_bytes()),
            local_kid,
            ttl: config.token_ttl_seconds,
            leeway: config.leeway_seconds,
            session_max: config.session_max_seconds,
            throttle: LoginThrottle::new(
                config.login_attempts,
                Duration::from_secs(config.login_lockout_seconds),
            ),
            issuers,
            providers,
            http,
            jwks_refresh: Duration::from_secs(config.jwks_refresh_seconds),
            jwks_max_age: Duration::from_secs(config.jwks_max_age_seconds),
            dummy_hash,
        })
    }

    /// Issue a local token for a user who signs in now.
    pub fn issue(&self, user: &str, role: Role) -> Result<IssuedToken, Problem> {
        self.issue_signed_in_at(user, role, now())
    }

    /// Issue a local token for a user who signed in at `auth_time`.
    fn issue_signed_in_at(
        &self,
        user: &str,
        role: Role,
        auth_time: u64,
    ) -> Result<IssuedToken, Problem> {
        let local = &self.issuers[0];
        let now = now();
        let claims = Claims {
            sub: user.to_owned(),
            iss: local.issuer.clone(),
            aud: local.audience.clone(),
            exp: now + self.ttl,
            nbf: now,
            iat: now,
            auth_time,
            role: role.as_str().to_owned(),
        };
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(self.local_kid.clone());
        let token = jsonwebtoken::encode(&header, &claims, &self.local_key)
            .map_err(|e| Problem::internal(&e))?;
        Ok(IssuedToken {
            access_token: token,
            token_type: "Bearer".into(),
            expires_in: self.ttl,
            id_token: None,
            refresh_token: None,
        })
    }

    /// Check a user's password and issue a token.
    pub async fn login(
        &self,
        store: &Store,
        username: &str,
        password: &str,
    ) -> Result<(IssuedToken, Principal), Problem> {
        self.throttle.check(store, username).await?;
        let user = store.user(username).await?;
        let hash = user
            .as_ref()
            .map_or(self.dummy_hash.clone(), |u| u.password_hash.clone());
        let password = password.to_owned();
        let ok = tokio::task::spawn_blocking(move || verify_password(&password, &hash))
            .await
            .map_err(|e| Problem::internal(&e))?;
        let refused = || Problem::unauthorized("username or password is wrong");
        let user = match user {
            Some(user) if ok => user,
            _ => {
                self.throttle.failed(store, username).await?;
                return Err(refused());
            }
        };
        self.throttle.succeeded(store, username).await?;
        let role = user
            .role
            .parse::<Role>()
            .map_err(|e| Problem::internal(&e))?;
        Ok((
            self.issue(&user.name, role)?,
            Principal {
                name: format!("user:{}", user.name),
                role,
            },
        ))
    }

    /// The issuers the web UI offers sign-in with.
    pub fn providers(&self) -> &[SignInProvider] {
        &self.providers
    }

    /// Redeem an authorization code at its issuer and check the access
    /// token it gives as any bearer token is checked.
    pub async fn sign_in_with_code(
        &self,
        request: &OidcCodeRequest,
    ) -> Result<(IssuedToken, Principal), Problem> {
        request.check()?;
        let provider = self.sign_in_provider(&request.issuer)?;
        let tokens = sign_in::redeem(&self.http, provider, request).await?;
        self.signed_in(provider, tokens).await
    }

    /// Trade a sign-in's refresh token at its issuer for a new access token,
    /// checked as the first was: a user the issuer no longer gives a
    /// Rebound role is refused here, with the reason.
    pub async fn refresh_sign_in(
        &self,
        request: &OidcRefreshRequest,
    ) -> Result<(IssuedToken, Principal), Problem> {
        request.check()?;
        let provider = self.sign_in_provider(&request.issuer)?;
        let tokens = sign_in::refresh(&self.http, provider, &request.refresh_token).await?;
        self.signed_in(provider, tokens).await
    }

    /// Redeem the device code of a device authorization (RFC 8628) the
    /// user approved at the issuer, checked as every bearer token is.
    pub async fn sign_in_with_device_code(
        &self,
        request: &OidcDeviceRequest,
    ) -> Result<(IssuedToken, Principal), Problem> {
        request.check()?;
        let provider = self.sign_in_provider(&request.issuer)?;
        if provider.device_authorization_endpoint.is_none() {
            return Err(Problem::bad_request(format!(
                "{} offers no device authorization (its discovery document names no \
                 `device_authorization_endpoint`); sign in with the browser instead",
                provider.name
            )));
        }
        let tokens =
            sign_in::redeem_device_code(&self.http, provider, &request.device_code).await?;
        self.signed_in(provider, tokens).await
    }

    fn sign_in_provider(&self, issuer: &str) -> Result<&SignInProvider, Problem> {
        self.providers
            .iter()
            .find(|p| p.issuer == issuer)
            .ok_or_else(|| {
                Problem::bad_request(format!(
                    "'{issuer}' is not an issuer this host offers sign-in with; GET /api/v1/auth/providers lists them"
                ))
            })
    }

    /// Check the access token an issuer gave, as any bearer token is checked,
    /// and answer it with its lifetime and the issuer's other tokens.
    async fn signed_in(
        &self,
        provider: &SignInProvider,
        tokens: sign_in::Tokens,
    ) -> Result<(IssuedToken, Principal), Problem> {
        let token = tokens.access_token;
        let principal = self.verify_jwt(&token).await.map_err(|mut problem| {
            let issuer = self.issuers.iter().find(|i| i.issuer == provider.issuer);
            problem.detail = format!(
                "the access token {} issued is not one this host accepts ({}): the issuer must \
                 put audience '{}' and a Rebound role in the `{}` claim",
                provider.name,
                problem.detail,
                issuer.map_or("", |i| i.audience.as_str()),
                issuer
                    .and_then(|i| i.role_claim.as_deref())
                    .unwrap_or("roles"),
            );
            problem
        })?;
        let expires_in = unverified_claims(&token)
            .and_then(|c| c["exp"].as_u64())
            .map_or(0, |exp| exp.saturating_sub(now()));
        Ok((
            IssuedToken {
                access_token: token,
                token_type: "Bearer".into(),
                expires_in,
                id_token: tokens.id_token,
                refresh_token: tokens.refresh_token,
            },
            principal,
        ))
    }

    /// Create a scoped API token; its secret is returned once and only its
    /// digest is stored.
    pub async fn create_token(
        &self,
        store: &Store,
        name: &str,
        role: Role,
        principal: &Principal,
    ) -> Result<(TokenRecord, String), Problem> {
        let secret = format!("{TOKEN_PREFIX}{}", random_hex(32));
        let record = TokenRecord {
            id: format!("tok-{}", random_hex(8)),
            name: name.to_owned(),
            role: role.as_str().to_owned(),
            digest: digest(&secret),
            created_by: principal.name.clone(),
            created_at_ms: i64::try_from(now().saturating_mul(1000)).unwrap_or(i64::MAX),
            revoked_at_ms: None,
        };
        store.create_token(&record, &principal.name).await?;
        Ok((record, secret))
    }

    /// A new token for the local sign-in whose token `authorization`
    /// carries, before that one expires: checked as every call's token is
    /// (a removed user, a password set since the sign-in, are refused), it
    /// keeps the sign-in's `auth_time`, and is refused once the sign-in is
    /// older than `session_max_seconds`.
    pub async fn renew(
        &self,
        store: &Store,
        authorization: Option<&str>,
    ) -> Result<(IssuedToken, Principal), Problem> {
        let principal = self.authenticate(store, authorization).await?;
        let token = bearer(authorization)?;
        if token.starts_with(TOKEN_PREFIX) {
            return Err(Problem::bad_request(
                "an API token does not expire; there is nothing to renew",
            ));
        }
        let Some(user) = principal.name.strip_prefix("user:") else {
            return Err(Problem::bad_request(
                "only a local sign-in is renewed here; an OIDC sign-in is renewed with \
                 POST /api/v1/auth/oidc/refresh",
            ));
        };
        let claims = unverified_claims(token).unwrap_or_default();
        let signed_in = claims["auth_time"]
            .as_u64()
            .or_else(|| claims["iat"].as_u64())
            .unwrap_or(0);
        if now().saturating_sub(signed_in) > self.session_max {
            return Err(Problem::unauthorized(format!(
                "token refused: this sign-in began more than {} hours ago (session_max_seconds); \
                 log in again",
                self.session_max / 3600
            )));
        }
        let issued = self.issue_signed_in_at(user, principal.role, signed_in)?;
        Ok((issued, principal))
    }

    /// The principal an `Authorization` header value names.
    pub async fn authenticate(
        &self,
        store: &Store,
        authorization: Option<&str>,
    ) -> Result<Principal, Problem> {
        let token = bearer(authorization)?;
        if token.starts_with(TOKEN_PREFIX) {
            let record = store
                .token_by_digest(&digest(token))
                .await?
                .ok_or_else(|| Problem::unauthorized("API token unknown or revoked"))?;
            let role = record
                .role
                .parse::<Role>()
                .map_err(|e| Problem::internal(&e))?;
            return Ok(Principal {
                name: format!("token:{}", record.id),
                role,
            });
        }
        let (principal, signed_in_at) = self.verify_jwt_claims(token).await?;
        // A local user's token is good only while the user exists and its
        // password is the one set before the token was issued, and carries
        // the role the user has now: removing a user, setting its password
        // or changing its role takes effect at once, not when its tokens
        // expire.
        if let Some(name) = principal.name.strip_prefix("user:") {
            let user = store.user_summary(name).await?.ok_or_else(|| {
                Problem::unauthorized(format!(
                    "token refused: user '{name}' no longer exists; ask an admin for an account"
                ))
            })?;
            // Whole seconds, as `auth_time` is: a sign-in in the same
            // second as the change still passes. A renewed token counts
            // from the sign-in it renews.
            let changed = user.password_changed_at_ms.map_or(0, |ms| ms / 1000);
            if signed_in_at.unwrap_or(0) < changed {
                return Err(Problem::unauthorized(format!(
                    "token refused: the password of '{name}' was set after this sign-in; log in again"
                )));
            }
            let role = user
                .role
                .parse::<Role>()
                .map_err(|e| Problem::internal(&e))?;
            return Ok(Principal {
                name: principal.name,
                role,
            });
        }
        Ok(principal)
    }

    /// Verify a JWT against the issuer its `iss` names, with that issuer's
    /// pinned algorithm and the key its `kid` names.
    pub async fn verify_jwt(&self, token: &str) -> Result<Principal, Problem> {
        self.verify_jwt_claims(token).await.map(|(p, _)| p)
    }

    /// [`Auth::verify_jwt`], with when its holder signed in (seconds): its
    /// `auth_time`, else its `iat`, when it has one.
    async fn verify_jwt_claims(&self, token: &str) -> Result<(Principal, Option<i64>), Problem> {
        let refuse = |why: &str| Problem::unauthorized(format!("token refused: {why}"));
        let header = jsonwebtoken::decode_header(token)
            .map_err(|_| refuse("not a JWT with a supported algorithm"))?;
        let iss = unverified_issuer(token).ok_or_else(|| refuse("no `iss` claim"))?;
        let issuer = self
            .issuers
            .iter()
            .find(|i| i.issuer == iss)
            .ok_or_else(|| refuse(&format!("issuer '{iss}' is not trusted by this host")))?;
        if header.alg != issuer.algorithm {
            return Err(refuse(&format!(
                "issuer '{iss}' signs with {:?}, not {:?}",
                issuer.algorithm, header.alg
            )));
        }
        let kid = header
            .kid
            .as_deref()
            .ok_or_else(|| refuse("no `kid` in the header"))?;
        let mut key = issuer.key(kid);
        if (key.is_none() || issuer.keys_older_than(self.jwks_max_age))
            && self.refresh_keys(issuer).await
        {
            key = issuer.key(kid);
        }
        let key =
            key.ok_or_else(|| refuse(&format!("unknown key id '{kid}' for issuer '{iss}'")))?;
        let mut validation = Validation::new(issuer.algorithm);
        validation.set_issuer(&[&issuer.issuer]);
        validation.set_audience(&[&issuer.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.validate_nbf = true;
        validation.leeway = self.leeway;
        let data = jsonwebtoken::decode::<serde_json::Value>(token, &key, &validation).map_err(
            |e| match e.kind() {
                ErrorKind::ExpiredSignature => refuse("expired; log in again"),
                ErrorKind::ImmatureSignature => refuse("not valid yet (nbf in the future)"),
                ErrorKind::InvalidIssuer => refuse("wrong issuer"),
                ErrorKind::InvalidAudience => refuse("wrong audience"),
                ErrorKind::InvalidSignature => refuse("signature does not verify"),
                ErrorKind::MissingRequiredClaim(c) => refuse(&format!("missing claim `{c}`")),
                _ => refuse("malformed"),
            },
        )?;
        let claims = data.claims;
        let sub = claims["sub"]
            .as_str()
            .ok_or_else(|| refuse("`sub` is not a string"))?;
        let role = match &issuer.role_claim {
            None => claims["role"].as_str().and_then(|r| r.parse().ok()),
            Some(claim) => highest_role(&claims[claim.as_str()]),
        };
        let role = role.ok_or_else(|| {
            Problem::forbidden(format!(
                "token of '{sub}' carries no Rebound role (admin, operator, viewer, plugin-publisher)"
            ))
        })?;
        let name = match issuer.role_claim {
            None => format!("user:{sub}"),
            Some(_) => format!("oidc:{sub}@{iss}"),
        };
        let signed_in_at = claims["auth_time"]
            .as_i64()
            .or_else(|| claims["iat"].as_i64());
        Ok((Principal { name, role }, signed_in_at))
    }
}

/// The token of an `Authorization: Bearer TOKEN` header value.
fn bearer(authorization: Option<&str>) -> Result<&str, Problem> {
    let Some(value) = authorization else {
        return Err(Problem::unauthorized(
            "send `Authorization: Bearer TOKEN` (a token from POST /api/v1/auth/login, an OIDC token, or an API token)",
        ));
    };
    value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
        .map(str::trim)
        .ok_or_else(|| Problem::unauthorized("the Authorization header must be `Bearer TOKEN`"))
}

impl Auth {
    /// Fetch an OIDC issuer's JWKS again (a token names a key id it does
    /// not know, or its keys are older than `jwks_max_age_seconds`), unless
    /// it was fetched within `jwks_refresh_seconds`; whether its keys were
    /// replaced. A failed fetch keeps the keys it had (and is logged): an
    /// issuer that cannot be reached does not lock everyone out.
    async fn refresh_keys(&self, issuer: &Issuer) -> bool {
        let Some(jwks) = &issuer.jwks else {
            return false;
        };
        {
            let mut last = jwks.tried.lock().unwrap_or_else(PoisonError::into_inner);
            if last.elapsed() < self.jwks_refresh {
                return false;
            }
            *last = Instant::now();
        }
        match fetch_keys(&self.http, &jwks.url, issuer.algorithm).await {
            Ok(keys) => {
                tracing::info!(issuer = %issuer.issuer, keys = keys.len(), "JWKS fetched again");
                *issuer.keys.write().unwrap_or_else(PoisonError::into_inner) = keys;
                *jwks.fetched.lock().unwrap_or_else(PoisonError::into_inner) = Instant::now();
                true
            }
            Err(reason) => {
                tracing::warn!(issuer = %issuer.issuer, "JWKS refresh failed, keeping its keys: {reason}");
                false
            }
        }
    }
}

impl Issuer {
    /// Whether an OIDC issuer's keys were fetched longer than `age` ago
    /// (never for the local issuer, whose key is the host's own).
    fn keys_older_than(&self, age: Duration) -> bool {
        self.jwks.as_ref().is_some_and(|jwks| {
            jwks.fetched
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .elapsed()
                >= age
        })
    }

    fn key(&self, kid: &str) -> Option<DecodingKey> {
        self.keys
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(kid)
            .cloned()
    }
}

/// Create the bootstrap admin when the store has no user: with
/// `password` when given, otherwise a random one. Returns the generated
/// password (to be shown once) when one was generated and stored.
pub async fn bootstrap_admin(
    store: &Store,
    password: Option<&str>,
) -> Result<Option<String>, AuthSetupError> {
    let generated = password.is_none().then(|| random_hex(12));
    let password = password.or(generated.as_deref()).unwrap_or_default();
    let created = store
        .bootstrap_user(&UserRecord {
            name: "admin".into(),
            password_hash: hash_password(password)?,
            role: Role::Admin.as_str().into(),
        })
        .await?;
    Ok(generated.filter(|_| created))
}

fn highest_role(value: &serde_json::Value) -> Option<Role> {
    let names: Vec<&str> = match value {
        serde_json::Value::String(s) => vec![s.as_str()],
        serde_json::Value::Array(items) => items.iter().filter_map(|v| v.as_str()).collect(),
        _ => Vec::new(),
    };
    names.iter().filter_map(|n| n.parse::<Role>().ok()).max()
}

/// The `iss` of a token, read before verification only to choose the
/// issuer whose key and algorithm then verify it.
fn unverified_issuer(token: &str) -> Option<String> {
    unverified_claims(token)?["iss"].as_str().map(str::to_owned)
}

/// A JWT's claims, unverified.
fn unverified_claims(token: &str) -> Option<serde_json::Value> {
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .ok()?;
    serde_json::from_slice(&bytes).ok()
}

async fn fetch_issuer(
    client: &reqwest::Client,
    config: &OidcIssuer,
) -> Result<Issuer, AuthSetupError> {
    let fail = |reason: String| AuthSetupError::Oidc {
        issuer: config.issuer.clone(),
        reason,
    };
    let algorithm = match config.algorithm.as_str() {
        "RS256" => Algorithm::RS256,
        "ES256" => Algorithm::ES256,
        other => {
            return Err(fail(format!(
                "algorithm '{other}' is not supported; use RS256 or ES256"
            )));
        }
    };
    let keys = fetch_keys(client, &config.jwks_url, algorithm)
        .await
        .map_err(fail)?;
    Ok(Issuer {
        issuer: config.issuer.clone(),
        audience: config.audience.clone(),
        algorithm,
        keys: RwLock::new(keys),
        role_claim: Some(config.role_claim.clone()),
        jwks: Some(Jwks {
            url: config.jwks_url.clone(),
            tried: Mutex::new(Instant::now()),
            fetched: Mutex::new(Instant::now()),
        }),
    })
}

/// The keys of `algorithm` with a `kid` in the JWKS at `url`.
async fn fetch_keys(
    client: &reqwest::Client,
    url: &str,
    algorithm: Algorithm,
) -> Result<HashMap<String, DecodingKey>, String> {
    let set: JwkSet = client
        .get(url)
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .map_err(|e| format!("fetching {url}: {e}"))?
        .json()
        .await
        .map_err(|e| format!("{url} is not a JWKS: {e}"))?;
    let name = format!("{algorithm:?}");
    let mut keys = HashMap::new();
    for jwk in &set.keys {
        let Some(kid) = jwk.common.key_id.clone() else {
            continue;
        };
        if let Some(alg) = jwk.common.key_algorithm
            && alg.to_string() != name
        {
            continue;
        }
        let key = DecodingKey::from_jwk(jwk).map_err(|e| format!("key '{kid}': {e}"))?;
        keys.insert(kid, key);
    }
    if keys.is_empty() {
        return Err(format!("{url} has no {name} key with a `kid`"));
    }
    Ok(keys)
}
