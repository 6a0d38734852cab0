//! What both platforms say the same way about a PCI device.

/// The BAR a GPU shows without Resizable BAR: 256 MiB, through which the CPU reaches the rest
/// of the card's memory a window at a time (Microsoft, "Resizable BAR support",
/// learn.microsoft.com/windows-hardware/drivers/display/resizable-bar-support; PCI-SIG
/// Resizable BAR ECN).
const DEFAULT_GPU_BAR: u64 = 256 << 20;

/// Whether a display device's BAR is resized: its largest memory BAR covers the card's memory
/// where the driver tells it, or is larger than the default window. None for other devices or
/// without BARs.
pub fn bar_resized(display: bool, bar_sizes: &[u64], memory: Option<u64>) -> Option<bool> {
    if !display {
        return None;
    }
    let largest = *bar_sizes.iter().max()?;
    Some(match memory {
        Some(memory) => largest >= memory,
        None => largest > DEFAULT_GPU_BAR,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bar_is_resized_when_it_covers_the_cards_memory() {
        let gib = 1u64 << 30;
        assert_eq!(bar_resized(true, &[16 << 20, 256 << 20], Some(8 * gib)), Some(false));
        assert_eq!(bar_resized(true, &[16 << 20, 8 * gib], Some(8 * gib)), Some(true));
        assert_eq!(bar_resized(true, &[16 << 20, 256 << 20], None), Some(false));
        assert_eq!(bar_resized(true, &[16 << 20, 16 * gib], None), Some(true));
        assert_eq!(bar_resized(false, &[16 * gib], None), None);
        assert_eq!(bar_resized(true, &[], None), None);
    }
}
