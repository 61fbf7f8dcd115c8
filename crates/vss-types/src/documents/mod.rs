//! Writer Metadata Document and Backup Components Document (placeholder,
//! filled in by the documents work).
