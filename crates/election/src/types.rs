//! States and modes, spelled on the wire exactly as Apache Brooklyn spells them.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// What a node is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum NodeState {
    Initializing,
    Standby,
    HotStandby,
    HotBackup,
    Master,
    Failed,
    Terminated,
}

impl NodeState {
    pub fn as_str(self) -> &'static str {
        match self {
            NodeState::Initializing => "INITIALIZING",
            NodeState::Standby => "STANDBY",
            NodeState::HotStandby => "HOT_STANDBY",
            NodeState::HotBackup => "HOT_BACKUP",
            NodeState::Master => "MASTER",
            NodeState::Failed => "FAILED",
            NodeState::Terminated => "TERMINATED",
        }
    }
    pub const ALL: [NodeState; 7] = [
        NodeState::Initializing,
        NodeState::Standby,
        NodeState::HotStandby,
        NodeState::HotBackup,
        NodeState::Master,
        NodeState::Failed,
        NodeState::Terminated,
    ];
}

impl fmt::Display for NodeState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the operator asks a node to be.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    Auto,
    Master,
    Standby,
    HotStandby,
    HotBackup,
    Disabled,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Auto => "auto",
            Mode::Master => "master",
            Mode::Standby => "standby",
            Mode::HotStandby => "hot-standby",
            Mode::HotBackup => "hot-backup",
            Mode::Disabled => "disabled",
        }
    }
    /// May this mode be promoted by an election?
    pub fn eligible(self) -> bool {
        matches!(
            self,
            Mode::Auto | Mode::Master | Mode::Standby | Mode::HotStandby
        )
    }
    /// The state a non-master node in this mode reports.
    pub fn idle_state(self) -> NodeState {
        match self {
            Mode::HotStandby => NodeState::HotStandby,
            Mode::HotBackup => NodeState::HotBackup,
            Mode::Disabled => NodeState::Failed,
            _ => NodeState::Standby,
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown mode {0:?}: use auto, master, standby, hot-standby, hot-backup or disabled (Brooklyn spellings such as HOT_STANDBY are accepted)"
)]
pub struct ParseModeError(pub String);

impl FromStr for Mode {
    type Err = ParseModeError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let norm: String = s
            .trim()
            .chars()
            .map(|c| match c {
                '_' => '-',
                c => c.to_ascii_lowercase(),
            })
            .collect();
        Ok(match norm.as_str() {
            "auto" => Mode::Auto,
            "master" => Mode::Master,
            "standby" => Mode::Standby,
            "hot-standby" | "hotstandby" => Mode::HotStandby,
            "hot-backup" | "hotbackup" => Mode::HotBackup,
            "disabled" => Mode::Disabled,
            _ => return Err(ParseModeError(s.to_string())),
        })
    }
}

/// Why [`validate_node_name`] refused a name; the message names the rule.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NodeNameError {
    #[error("the node name is empty: give --node-name, e.g. --node-name node-a")]
    Empty,
    #[error(
        "the node name {0:?} contains whitespace: node names may use only letters, digits, '.', '_' and '-'"
    )]
    Whitespace(String),
    /// Too long, starting with '.', or a character outside `[A-Za-z0-9._-]`.
    #[error(
        "the node name {0:?} is not allowed: use 1 to 64 letters, digits, '.', '_' or '-', not starting with '.'"
    )]
    NotAllowed(String),
}

/// Node names: 1..=64 of `[A-Za-z0-9._-]`, not starting with '.', so a name is always a safe
/// record key and file name. The error names the rule.
pub fn validate_node_name(name: &str) -> Result<(), NodeNameError> {
    if name.is_empty() {
        return Err(NodeNameError::Empty);
    }
    if name.chars().any(char::is_whitespace) {
        return Err(NodeNameError::Whitespace(name.to_string()));
    }
    if name.len() > 64
        || name.starts_with('.')
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
    {
        return Err(NodeNameError::NotAllowed(name.to_string()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_accept_brooklyn_spellings() {
        assert_eq!("HOT_STANDBY".parse::<Mode>().unwrap(), Mode::HotStandby);
        assert_eq!("hot-backup".parse::<Mode>().unwrap(), Mode::HotBackup);
        assert_eq!("MASTER".parse::<Mode>().unwrap(), Mode::Master);
        assert_eq!("Auto".parse::<Mode>().unwrap(), Mode::Auto);
        assert!("leader".parse::<Mode>().is_err());
    }

    #[test]
    fn states_serialize_as_brooklyn() {
        for s in NodeState::ALL {
            assert_eq!(
                serde_json::to_string(&s).unwrap(),
                format!("\"{}\"", s.as_str())
            );
        }
    }

    #[test]
    fn node_names() {
        assert!(validate_node_name("node-a.1_x").is_ok());
        assert!(
            validate_node_name("a b")
                .unwrap_err()
                .to_string()
                .contains("whitespace")
        );
        assert!(validate_node_name("").is_err());
        assert!(validate_node_name(".hidden").is_err());
        assert!(validate_node_name("a/b").is_err());
    }
}
