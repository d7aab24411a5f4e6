//! Authenticated nudges. A nudge only makes a node read the store sooner and carries nothing
//! to obey, but with a cluster secret a node still answers only nudges signed with it, so that
//! whoever can reach the port cannot make every node hammer the store. The token is a wall
//! clock time and its MAC; a replay within the allowed skew costs one gated store read.

use std::time::Duration;
use tenure_election::secret::{Keyring, VerifyError};

/// Request header carrying the token: `<unix ms>.<MAC>`.
pub const NUDGE_AUTH_HEADER: &str = "x-tenure-nudge";
/// Largest difference between the sender's and the receiver's wall clocks accepted.
pub const NUDGE_MAX_SKEW: Duration = Duration::from_secs(300);

pub fn nudge_token(keys: &Keyring, now_ms: i64) -> String {
    let ms = now_ms.to_string();
    format!("{ms}.{}", keys.sign("nudge", &[ms.as_bytes()]))
}

/// Why [`check_nudge_token`] refused a nudge.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NudgeError {
    #[error("the nudge carries no token, but this node has a cluster secret")]
    NoToken,
    #[error("the nudge token is not of the form <ms>.<mac>")]
    Malformed,
    #[error("the nudge token's time is not a number")]
    BadTime,
    /// The MAC did not verify under this node's secret.
    #[error(transparent)]
    Unauthentic(#[from] VerifyError),
    /// Signed too far (more than [`NUDGE_MAX_SKEW`]) from this node's wall clock.
    #[error("the nudge was signed {seconds} s away from this node's clock")]
    Skew { seconds: u64 },
}

/// Check a nudge's token against the secret and this node's wall clock.
pub fn check_nudge_token(
    keys: &Keyring,
    token: Option<&str>,
    now_ms: i64,
) -> Result<(), NudgeError> {
    let token = token.ok_or(NudgeError::NoToken)?;
    let (ms, tag) = token.split_once('.').ok_or(NudgeError::Malformed)?;
    let sent: i64 = ms.parse().map_err(|_| NudgeError::BadTime)?;
    keys.verify("nudge", &[ms.as_bytes()], tag)?;
    if sent.abs_diff(now_ms) > NUDGE_MAX_SKEW.as_millis() as u64 {
        return Err(NudgeError::Skew {
            seconds: sent.abs_diff(now_ms) / 1000,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_verify_only_with_the_secret_and_in_time() {
        let k = Keyring::new(b"0123456789abcdef0123", None).unwrap();
        let other = Keyring::new(b"another-secret-0123456", None).unwrap();
        let now = 1_700_000_000_000;
        let t = nudge_token(&k, now);
        assert_eq!(check_nudge_token(&k, Some(&t), now + 1_000), Ok(()));
        assert!(check_nudge_token(&k, None, now).is_err());
        assert!(check_nudge_token(&other, Some(&t), now).is_err());
        assert!(check_nudge_token(&k, Some(&t), now + 301_000).is_err());
        // The time is covered by the MAC.
        let moved = t.replacen(&now.to_string(), &(now + 1).to_string(), 1);
        assert!(check_nudge_token(&k, Some(&moved), now).is_err());
        assert!(check_nudge_token(&k, Some("garbage"), now).is_err());
    }
}
