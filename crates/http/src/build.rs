//! The commit and branch this binary was built from (`GET /v1/server/version`), as the build
//! script found them; `None` when it was built outside a git checkout.

pub(crate) const SHA1: Option<&str> = option_env!("TENURE_BUILD_SHA1");
pub(crate) const BRANCH: Option<&str> = option_env!("TENURE_BUILD_BRANCH");
