//! The VSS enumerations and bit masks the documents carry.
//!
//! Each enumeration has its `vss.h` numeric value, its `VSS_…` symbol and the
//! word used in the XML form: the lower-cased symbol suffix
//! (`VSS_BT_FULL` → `full`). Serde uses the same word.

use std::fmt;
use std::ops::{BitOr, BitOrAssign};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::xml::{XmlEnum, XmlMask};

macro_rules! vss_enum {
    (
        $(#[$meta:meta])*
        pub enum $name:ident {
            $( $(#[$vmeta:meta])* $variant:ident = $value:literal, $word:literal, $sym:literal; )*
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum $name {
            $( $(#[$vmeta])* $variant, )*
        }

        impl $name {
            /// Every value, in numeric order.
            pub const ALL: &'static [$name] = &[ $( $name::$variant, )* ];

            /// The numeric value of `vss.h`.
            pub const fn value(self) -> u32 {
                match self { $( $name::$variant => $value, )* }
            }

            pub fn from_value(v: u32) -> Option<Self> {
                match v { $( $value => Some($name::$variant), )* _ => None }
            }

            /// The `VSS_…` symbol.
            pub const fn symbol(self) -> &'static str {
                match self { $( $name::$variant => $sym, )* }
            }

            /// The word of the XML form and of serde.
            pub const fn word(self) -> &'static str {
                match self { $( $name::$variant => $word, )* }
            }

            /// Parses the word (any case) or the decimal value.
            pub fn from_word(w: &str) -> Option<Self> {
                $( if w.eq_ignore_ascii_case($word) { return Some($name::$variant); } )*
                if !w.is_empty() && w.len() <= 10 && w.bytes().all(|b| b.is_ascii_digit()) {
                    return w.parse().ok().and_then(Self::from_value);
                }
                None
            }

            /// The accepted words, for error messages.
            pub(crate) fn words() -> String {
                [$( $word ),*].join("|")
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.word())
            }
        }

        impl XmlEnum for $name {
            fn parse_word(w: &str) -> Option<Self> {
                $name::from_word(w)
            }
            fn word_list() -> String {
                $name::words()
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.word())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                $name::from_word(&s).ok_or_else(|| {
                    serde::de::Error::custom(format!(
                        "'{s}' is not a {} ({})", stringify!($name), $name::words()
                    ))
                })
            }
        }
    };
}

vss_enum! {
    /// `VSS_USAGE_TYPE`: what a writer's data is used for.
    #[derive(Default)]
    pub enum UsageType {
        #[default]
        Undefined = 0, "undefined", "VSS_UT_UNDEFINED";
        BootableSystemState = 1, "bootablesystemstate", "VSS_UT_BOOTABLESYSTEMSTATE";
        SystemService = 2, "systemservice", "VSS_UT_SYSTEMSERVICE";
        UserData = 3, "userdata", "VSS_UT_USERDATA";
        Other = 4, "other", "VSS_UT_OTHER";
    }
}

vss_enum! {
    /// `VSS_SOURCE_TYPE`: the kind of data a writer keeps.
    #[derive(Default)]
    pub enum SourceType {
        #[default]
        Undefined = 0, "undefined", "VSS_ST_UNDEFINED";
        TransactedDb = 1, "transacteddb", "VSS_ST_TRANSACTEDDB";
        NonTransactedDb = 2, "nontransacteddb", "VSS_ST_NONTRANSACTEDDB";
        Other = 3, "other", "VSS_ST_OTHER";
    }
}

vss_enum! {
    /// `VSS_COMPONENT_TYPE`. `VSS_CT_UNDEFINED` is not a valid component type
    /// and is left out.
    pub enum ComponentType {
        Database = 1, "database", "VSS_CT_DATABASE";
        FileGroup = 2, "filegroup", "VSS_CT_FILEGROUP";
    }
}

vss_enum! {
    /// `VSS_RESTOREMETHOD_ENUM`: how a writer's data is to be restored.
    #[derive(Default)]
    pub enum RestoreMethod {
        /// A writer error: every writer must choose a method.
        #[default]
        Undefined = 0, "undefined", "VSS_RME_UNDEFINED";
        RestoreIfNotThere = 1, "restore_if_not_there", "VSS_RME_RESTORE_IF_NOT_THERE";
        RestoreIfCanReplace = 2, "restore_if_can_replace", "VSS_RME_RESTORE_IF_CAN_REPLACE";
        StopRestoreStart = 3, "stop_restore_start", "VSS_RME_STOP_RESTORE_START";
        RestoreToAlternateLocation = 4, "restore_to_alternate_location", "VSS_RME_RESTORE_TO_ALTERNATE_LOCATION";
        RestoreAtReboot = 5, "restore_at_reboot", "VSS_RME_RESTORE_AT_REBOOT";
        RestoreAtRebootIfCannotReplace = 6, "restore_at_reboot_if_cannot_replace", "VSS_RME_RESTORE_AT_REBOOT_IF_CANNOT_REPLACE";
        Custom = 7, "custom", "VSS_RME_CUSTOM";
        RestoreStopStart = 8, "restore_stop_start", "VSS_RME_RESTORE_STOP_START";
    }
}

vss_enum! {
    /// `VSS_WRITERRESTORE_ENUM`: whether the writer takes part in restores.
    #[derive(Default)]
    pub enum WriterRestore {
        #[default]
        Undefined = 0, "undefined", "VSS_WRE_UNDEFINED";
        Never = 1, "never", "VSS_WRE_NEVER";
        IfReplaceFails = 2, "if_replace_fails", "VSS_WRE_IF_REPLACE_FAILS";
        Always = 3, "always", "VSS_WRE_ALWAYS";
    }
}

vss_enum! {
    /// `VSS_BACKUP_TYPE`.
    #[derive(Default)]
    pub enum BackupType {
        Undefined = 0, "undefined", "VSS_BT_UNDEFINED";
        /// Everything; backup history updated. Supported by every writer.
        #[default]
        Full = 1, "full", "VSS_BT_FULL";
        /// Changed since the last full or incremental backup.
        Incremental = 2, "incremental", "VSS_BT_INCREMENTAL";
        /// Changed since the last full backup.
        Differential = 3, "differential", "VSS_BT_DIFFERENTIAL";
        Log = 4, "log", "VSS_BT_LOG";
        /// Like full, but backup history is not updated.
        Copy = 5, "copy", "VSS_BT_COPY";
        Other = 6, "other", "VSS_BT_OTHER";
    }
}

vss_enum! {
    /// `VSS_RESTORE_TARGET`.
    #[derive(Default)]
    pub enum RestoreTarget {
        #[default]
        Undefined = 0, "undefined", "VSS_RT_UNDEFINED";
        Original = 1, "original", "VSS_RT_ORIGINAL";
        Alternate = 2, "alternate", "VSS_RT_ALTERNATE";
        Directed = 3, "directed", "VSS_RT_DIRECTED";
        OriginalLocation = 4, "original_location", "VSS_RT_ORIGINAL_LOCATION";
    }
}

vss_enum! {
    /// `VSS_FILE_RESTORE_STATUS`.
    #[derive(Default)]
    pub enum FileRestoreStatus {
        #[default]
        Undefined = 0, "undefined", "VSS_RS_UNDEFINED";
        None = 1, "none", "VSS_RS_NONE";
        All = 2, "all", "VSS_RS_ALL";
        Failed = 3, "failed", "VSS_RS_FAILED";
    }
}

macro_rules! vss_mask {
    (
        $(#[$meta:meta])*
        pub struct $name:ident {
            $( $(#[$cmeta:meta])* $konst:ident = $value:literal, $sym:literal; )*
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, Default, Serialize)]
        #[serde(transparent)]
        pub struct $name(u32);

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let v = u32::deserialize(d)?;
                $name::from_bits(v).ok_or_else(|| {
                    serde::de::Error::custom(format!(
                        "0x{v:X} has bits unknown to {}", stringify!($name)
                    ))
                })
            }
        }

        impl $name {
            $( $(#[$cmeta])* pub const $konst: $name = $name($value); )*

            /// Every bit this version knows, with its symbol.
            pub const BITS: &'static [(u32, &'static str)] = &[ $( ($value, $sym), )* ];

            /// The union of the known bits.
            pub const KNOWN: u32 = 0 $( | $value )*;

            pub const fn empty() -> Self {
                $name(0)
            }

            pub const fn bits(self) -> u32 {
                self.0
            }

            /// `None` when `bits` has a bit this version does not know.
            pub const fn from_bits(bits: u32) -> Option<Self> {
                if bits & !Self::KNOWN == 0 { Some($name(bits)) } else { None }
            }

            /// Drops unknown bits.
            pub const fn from_bits_truncate(bits: u32) -> Self {
                $name(bits & Self::KNOWN)
            }

            pub const fn contains(self, other: $name) -> bool {
                self.0 & other.0 == other.0
            }

            pub const fn is_empty(self) -> bool {
                self.0 == 0
            }

            pub const fn union(self, other: $name) -> Self {
                $name(self.0 | other.0)
            }
        }

        impl XmlMask for $name {
            fn parse_bits(bits: u32) -> Option<Self> {
                $name::from_bits(bits)
            }
        }

        impl BitOr for $name {
            type Output = $name;
            fn bitor(self, rhs: $name) -> $name {
                self.union(rhs)
            }
        }

        impl BitOrAssign for $name {
            fn bitor_assign(&mut self, rhs: $name) {
                self.0 |= rhs.0;
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}(0x{:X}", stringify!($name), self.0)?;
                let names: Vec<&str> = Self::BITS
                    .iter()
                    .filter(|(b, _)| self.0 & b == *b)
                    .map(|(_, s)| *s)
                    .collect();
                if !names.is_empty() {
                    write!(f, ": {}", names.join(" | "))?;
                }
                f.write_str(")")
            }
        }
    };
}

vss_mask! {
    /// `VSS_BACKUP_SCHEMA`: which backup and restore features a writer
    /// supports beyond full backups.
    pub struct BackupSchema {
        DIFFERENTIAL = 0x1, "VSS_BS_DIFFERENTIAL";
        INCREMENTAL = 0x2, "VSS_BS_INCREMENTAL";
        EXCLUSIVE_INCREMENTAL_DIFFERENTIAL = 0x4, "VSS_BS_EXCLUSIVE_INCREMENTAL_DIFFERENTIAL";
        LOG = 0x8, "VSS_BS_LOG";
        COPY = 0x10, "VSS_BS_COPY";
        TIMESTAMPED = 0x20, "VSS_BS_TIMESTAMPED";
        LAST_MODIFY = 0x40, "VSS_BS_LAST_MODIFY";
        LSN = 0x80, "VSS_BS_LSN";
        WRITER_SUPPORTS_NEW_TARGET = 0x100, "VSS_BS_WRITER_SUPPORTS_NEW_TARGET";
        WRITER_SUPPORTS_RESTORE_WITH_MOVE = 0x200, "VSS_BS_WRITER_SUPPORTS_RESTORE_WITH_MOVE";
        INDEPENDENT_SYSTEM_STATE = 0x400, "VSS_BS_INDEPENDENT_SYSTEM_STATE";
        ROLLFORWARD_RESTORE = 0x1000, "VSS_BS_ROLLFORWARD_RESTORE";
        RESTORE_RENAME = 0x2000, "VSS_BS_RESTORE_RENAME";
        AUTHORITATIVE_RESTORE = 0x4000, "VSS_BS_AUTHORITATIVE_RESTORE";
        WRITER_SUPPORTS_PARALLEL_RESTORES = 0x8000, "VSS_BS_WRITER_SUPPORTS_PARALLEL_RESTORES";
    }
}

vss_mask! {
    /// `VSS_FILE_SPEC_BACKUP_TYPE`: for which backup types a file set must be
    /// backed up and must come from a shadow copy.
    pub struct FileSpecBackupType {
        FULL_BACKUP_REQUIRED = 0x1, "VSS_FSBT_FULL_BACKUP_REQUIRED";
        DIFFERENTIAL_BACKUP_REQUIRED = 0x2, "VSS_FSBT_DIFFERENTIAL_BACKUP_REQUIRED";
        INCREMENTAL_BACKUP_REQUIRED = 0x4, "VSS_FSBT_INCREMENTAL_BACKUP_REQUIRED";
        LOG_BACKUP_REQUIRED = 0x8, "VSS_FSBT_LOG_BACKUP_REQUIRED";
        FULL_SNAPSHOT_REQUIRED = 0x100, "VSS_FSBT_FULL_SNAPSHOT_REQUIRED";
        DIFFERENTIAL_SNAPSHOT_REQUIRED = 0x200, "VSS_FSBT_DIFFERENTIAL_SNAPSHOT_REQUIRED";
        INCREMENTAL_SNAPSHOT_REQUIRED = 0x400, "VSS_FSBT_INCREMENTAL_SNAPSHOT_REQUIRED";
        LOG_SNAPSHOT_REQUIRED = 0x800, "VSS_FSBT_LOG_SNAPSHOT_REQUIRED";
        CREATED_DURING_BACKUP = 0x1_0000, "VSS_FSBT_CREATED_DURING_BACKUP";
    }
}

impl FileSpecBackupType {
    /// `VSS_FSBT_ALL_BACKUP_REQUIRED` (0xF).
    pub const ALL_BACKUP_REQUIRED: FileSpecBackupType = FileSpecBackupType(0xF);
    /// `VSS_FSBT_ALL_SNAPSHOT_REQUIRED` (0xF00).
    pub const ALL_SNAPSHOT_REQUIRED: FileSpecBackupType = FileSpecBackupType(0xF00);
    /// The mask VSS uses when a writer gives none: all backup and snapshot
    /// bits, 0x0F0F = 3855.
    pub const DEFAULT: FileSpecBackupType = FileSpecBackupType(0x0F0F);
}

vss_mask! {
    /// `VSS_COMPONENT_FLAGS`.
    pub struct ComponentFlags {
        BACKUP_RECOVERY = 0x1, "VSS_CF_BACKUP_RECOVERY";
        APP_ROLLBACK_RECOVERY = 0x2, "VSS_CF_APP_ROLLBACK_RECOVERY";
        NOT_SYSTEM_STATE = 0x4, "VSS_CF_NOT_SYSTEM_STATE";
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_and_values_round_trip() {
        for t in BackupType::ALL {
            assert_eq!(BackupType::from_word(t.word()), Some(*t));
            assert_eq!(BackupType::from_value(t.value()), Some(*t));
            assert_eq!(
                BackupType::from_word(&t.value().to_string()),
                Some(*t),
                "numeric form"
            );
        }
        for t in RestoreMethod::ALL {
            assert_eq!(RestoreMethod::from_word(t.word()), Some(*t));
        }
        assert_eq!(BackupType::from_word("FULL"), Some(BackupType::Full));
        assert_eq!(BackupType::from_word("7"), None);
        assert_eq!(BackupType::from_word("+1"), None);
        assert_eq!(BackupType::from_word(""), None);
        assert_eq!(ComponentType::from_value(0), None);
        assert_eq!(UsageType::UserData.value(), 3);
        assert_eq!(SourceType::NonTransactedDb.value(), 2);
        assert_eq!(RestoreMethod::RestoreStopStart.value(), 8);
        assert_eq!(WriterRestore::Always.value(), 3);
        assert_eq!(BackupType::Copy.symbol(), "VSS_BT_COPY");
    }

    #[test]
    fn masks() {
        assert_eq!(FileSpecBackupType::DEFAULT.bits(), 3855);
        assert_eq!(
            FileSpecBackupType::ALL_BACKUP_REQUIRED | FileSpecBackupType::ALL_SNAPSHOT_REQUIRED,
            FileSpecBackupType::DEFAULT
        );
        assert!(FileSpecBackupType::from_bits(0x1_0F0F).is_some());
        assert!(FileSpecBackupType::from_bits(0x1000).is_none());
        assert_eq!(ComponentFlags::KNOWN, 7);
        assert!(ComponentFlags::from_bits(8).is_none());
        assert_eq!(BackupSchema::KNOWN, 0xF7FF);
        let s = BackupSchema::DIFFERENTIAL | BackupSchema::LOG;
        assert!(s.contains(BackupSchema::LOG) && !s.contains(BackupSchema::COPY));
        assert_eq!(
            format!("{:?}", ComponentFlags::BACKUP_RECOVERY),
            "ComponentFlags(0x1: VSS_CF_BACKUP_RECOVERY)"
        );
    }

    #[test]
    fn serde_uses_words() {
        assert_eq!(
            serde_json::to_string(&BackupType::Differential).unwrap(),
            "\"differential\""
        );
        let t: BackupType = serde_json::from_str("\"copy\"").unwrap();
        assert_eq!(t, BackupType::Copy);
        assert!(serde_json::from_str::<BackupType>("\"weekly\"").is_err());
        assert_eq!(serde_json::to_string(&BackupSchema::LSN).unwrap(), "128");
    }
}
