//! Changes to a host (cpusets, IRQ affinity, governor, vfio binding), journaled before they are
//! made and undone exactly.
//!
//! Empty on purpose: nothing in kvmtune writes to a host yet, and nothing will unless `--apply`
//! is given.
