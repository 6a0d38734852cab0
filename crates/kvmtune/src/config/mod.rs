//! The VM configuration model and its readers (libvirt domain XML, QEMU argv, Proxmox conf).
//!
//! Empty until the `check` work lands: a raw layer that keeps byte ranges for lossless edits and
//! diagnostics, and a typed model that the rules read.
