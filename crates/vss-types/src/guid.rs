//! GUID identifiers, printed the Windows way: `{xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx}`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use uuid::Uuid;

use crate::error::{VssCode, VssError};

/// A VSS identifier (`VSS_ID`): shadow copy, snapshot set, writer class, writer
/// instance or provider. Displayed braced and lower-case as vssadmin prints it.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Guid(Uuid);

impl Guid {
    /// `GUID_NULL`: "no id", e.g. "let the service choose the provider".
    pub const NULL: Guid = Guid(Uuid::nil());

    /// A fresh random id.
    pub fn new_random() -> Self {
        Guid(Uuid::new_v4())
    }

    /// A stable id derived from a namespace and a name (UUIDv5), used for
    /// volume GUIDs derived from a filesystem UUID.
    pub fn derived(namespace: Guid, name: &[u8]) -> Self {
        Guid(Uuid::new_v5(&namespace.0, name))
    }

    pub const fn from_u128(v: u128) -> Self {
        Guid(Uuid::from_u128(v))
    }

    pub fn is_null(&self) -> bool {
        self.0.is_nil()
    }

    pub fn as_uuid(&self) -> &Uuid {
        &self.0
    }

    /// Parses `{…}` or a bare UUID; any other text is an error naming the
    /// argument so the caller can print a useful message.
    pub fn parse(text: &str) -> Result<Self, VssError> {
        let t = text.trim();
        let inner = t
            .strip_prefix('{')
            .and_then(|s| s.strip_suffix('}'))
            .unwrap_or(t);
        Uuid::parse_str(inner).map(Guid).map_err(|_| {
            VssError::new(
                VssCode::ObjectNotFound,
                format!("'{text}' is not a valid id"),
            )
            .with_hint("ids look like {c5b5a1d4-4b3c-4a7e-9d2f-0123456789ab}; copy one from `vssadmin list shadows`")
        })
    }
}

impl fmt::Display for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0.braced())
    }
}

impl fmt::Debug for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0.braced())
    }
}

impl FromStr for Guid {
    type Err = VssError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Guid::parse(s)
    }
}

impl Serialize for Guid {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Guid {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Guid::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn braced_round_trip() {
        let g = Guid::new_random();
        let s = g.to_string();
        assert!(s.starts_with('{') && s.ends_with('}'));
        assert_eq!(Guid::parse(&s).unwrap(), g);
        assert_eq!(Guid::parse(&s[1..s.len() - 1]).unwrap(), g);
    }

    #[test]
    fn bad_id_is_an_error() {
        let e = Guid::parse("nope").unwrap_err();
        assert_eq!(e.code, VssCode::ObjectNotFound);
    }
}
