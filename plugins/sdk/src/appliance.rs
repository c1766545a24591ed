//! Mover appliances: where a platform has no ranged read or write of a
//! volume, a plugin boots a server beside the data with the volume attached,
//! and that appliance serves it with the data mover's protocol behind a
//! bearer token. The token is derived from the transfer's key under a secret
//! of the site ([`token`]), handed to the appliance in its user data
//! ([`user_data`]), and derived again whenever the plugin reports the
//! appliance's endpoint — so it is stored nowhere: not in a tag or metadata
//! that whoever may list servers reads, not in the host's store.

use hmac::{Hmac, Mac};

/// The user data line that carries the appliance's token; the appliance
/// image reads it at boot.
pub const TOKEN_VARIABLE: &str = "REBOUND_MOVER_TOKEN";

/// The bearer token of the appliance of transfer `key` in `region`:
/// HMAC-SHA256 under `secret` (a site secret's value), hex — only a holder
/// of the secret can compute it.
pub fn token(secret: &str, region: &str, key: &str) -> String {
    let mut mac =
        <Hmac<sha2::Sha256> as Mac>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key");
    mac.update(format!("rebound mover appliance\n{region}\n{key}").as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// An appliance's user data, base64 as EC2 and Nova take it: the token its
/// agent requires.
pub fn user_data(token: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(format!("{TOKEN_VARIABLE}={token}\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_differ_by_secret_region_and_key() {
        let t = token("secret", "RegionOne", "run/1/export/0");
        assert_eq!(t.len(), 64);
        assert_eq!(t, token("secret", "RegionOne", "run/1/export/0"));
        assert_ne!(t, token("other", "RegionOne", "run/1/export/0"));
        assert_ne!(t, token("secret", "RegionTwo", "run/1/export/0"));
        assert_ne!(t, token("secret", "RegionOne", "run/1/export/1"));
    }

    #[test]
    fn user_data_carries_the_token_line() {
        use base64::Engine;
        let data = base64::engine::general_purpose::STANDARD
            .decode(user_data("abc"))
            .expect("base64");
        assert_eq!(data, b"REBOUND_MOVER_TOKEN=abc\n");
    }
}
